"""The package's one way to write a file that others read: under a temporary name in the same
folder, then renamed over the old one (os.replace, atomic on POSIX and Windows), so a reader sees
the old file or the new one, never half of one, and a failed write leaves the old file as it was.

Usage::

    from cce_tf import atomic
    atomic.write_json("runs/demo/history.json", history)             # indent 2, no final newline
    atomic.write_json(path, result, newline=True)                     # ... with one
    atomic.write_file("RUN/eval/flags.npz", lambda f: np.savez(f, **arrays), "wb")

The writers create the parent folders. They convert nothing: a caller that rounds floats or turns
numpy values into Python ones does so before (eval.output.jsonable), so each file keeps its bytes.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Callable, Optional


def write_file(path: str, fill: Callable[[IO], Any], mode: str = "w") -> str:
    """Writes ``path`` through ``fill(f)`` on a temporary file PATH.tmp, renamed to ``path`` when
    ``fill`` returns; returns the path. On any error the temporary file is removed, ``path`` is
    untouched and the error propagates."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    f = open(tmp, mode)  # fails before anything exists to clean up (e.g. PATH.tmp is a folder)
    try:
        with f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def write_json(path: str, obj: Any, indent: Optional[int] = 2, newline: bool = False) -> str:
    """Writes ``obj`` as JSON (json.dump's ``indent``; a final newline when ``newline``)
    atomically; returns the path."""
    return write_file(path, lambda f: f.write(json.dumps(obj, indent=indent) + ("\n" if newline else "")))
