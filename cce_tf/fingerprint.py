"""The fingerprint of a run's weights: the SHA-256 of RUN/ensemble.weights.h5 (DESIGN.md, contract 9).

Usage::

    from cce_tf.fingerprint import weights_fingerprint
    fp = weights_fingerprint("runs/demo")     # "3f5a...": 64 hex digits
    fp = model_file_fingerprint("model.keras")  # a classifier evaluated in place of a run

Every result computed on a run records this value, so a result can never be taken for the weights
the run holds after more training. Hashing a ResNet ensemble takes a moment, so the digest is cached
per (file, size, mtime): in this process and in RUN/eval/weights_sha256.json for later ones. A
changed size or mtime means the file was rewritten, and it is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os

from cce_tf import atomic
from cce_tf.run_files import EVAL_DIR, WEIGHTS_FILE

CACHE_FILE = os.path.join(EVAL_DIR, "weights_sha256.json")

_memo: dict[tuple, str] = {}


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(run_dir: str) -> str:
    """SHA-256 of ``run_dir``'s weights file (OSError if it is missing or unreadable)."""
    path = os.path.join(run_dir, WEIGHTS_FILE)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    cache = os.path.join(run_dir, CACHE_FILE)
    digest = None
    try:
        with open(cache) as f:
            c = json.load(f)
        if (c.get("size"), c.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            digest = c.get("sha256")
    except (OSError, ValueError, AttributeError):
        pass  # no cache, or a broken one: hash again
    if not (isinstance(digest, str) and len(digest) == 64):
        digest = file_sha256(path)
        try:
            atomic.write_json(cache, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}, indent=None)
        except OSError:
            pass  # a read-only run folder still gets its fingerprint, only uncached on disk
    _memo[key] = digest
    return digest


def model_file_fingerprint(path: str) -> str:
    """The identity of a model given as a file instead of a run: SHA-256 of a .keras file's bytes,
    or for a SavedModel folder of saved_model.pb and every file under variables/, each preceded
    by its relative path (so renaming or moving a shard changes it too)."""
    if os.path.isfile(path):
        return file_sha256(path)
    h = hashlib.sha256()
    names = ["saved_model.pb"] + sorted(
        os.path.relpath(os.path.join(d, f), path)
        for d, _, files in os.walk(os.path.join(path, "variables")) for f in files)
    for name in names:
        h.update(name.encode() + b"\0" + file_sha256(os.path.join(path, name)).encode())
    return h.hexdigest()
