"""The one writer of every results file, JSON or Markdown (DESIGN.md, contracts 8, 9 and 12): read,
reuse decision, stale copy, locked merge, atomic write.

Usage::

    from eval import results_file
    old, decision = results_file.decide(path, fp, settings, force)   # eval.reuse's rule on the file
    if decision.reuse:
        return old
    ...                                                               # compute ``result``
    results_file.write(path, result, fp)                              # locked, stale copy, atomic
    results_file.write(path, lambda latest: merged(latest, mine), fp,  # merge with what is on disk
                       arrays=lambda: {npz_path: (arrays, True)})     # its npz beside it, first
    results_file.write_markdown(out_dir + "/transferability.md", text)
    results_file.discard(rungs_path)                                  # work in progress, now in its result

A write holds the lock of the file's folder (cce_tf.run_lock: RUN/eval/.lock, OUT_DIR/.lock) while it
reads the file again, copies a file of other weights to stale/ (eval.reuse.keep_stale, with the npz
files named beside it), merges (``result`` as a function of what the file holds now: what another process
wrote since is kept) and replaces the files atomically (cce_tf.atomic), the npz first: a JSON names
the weights its arrays belong to. JSON is written as eval.output.write_json writes it (rounded, a
final newline) unless ``exact`` (cce_tf.atomic.write_json: the attack suite's files, byte for byte
as before).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Union

import numpy as np

from cce_tf import atomic, run_lock
from eval import reuse
from eval.output import read_json, write_json

Arrays = Mapping[str, tuple[Mapping[str, np.ndarray], bool]]   # npz path -> (arrays, compressed)


def read(path: str) -> Optional[dict]:
    """The JSON at ``path``, or None where it is missing or unreadable."""
    return read_json(path)


def decide(path: str, fp: reuse.Fingerprint, settings: Mapping, force: bool = False
           ) -> tuple[Optional[dict], reuse.Decision]:
    """(what ``path`` holds, eval.reuse's decision on it for weights ``fp`` and ``settings``)."""
    old = read(path)
    return old, reuse.decide(old, fp, settings, force)


def keep_stale(path: str, latest: Optional[Mapping], fp: Optional[reuse.Fingerprint],
               companions: tuple[str, ...] = ()) -> None:
    """Copy ``path`` (and ``companions``) to stale/ when what it holds (``latest``) was computed on
    other weights than ``fp``."""
    if latest and fp is not None and latest.get(reuse.KEY) != reuse.canonical(fp):
        for p in (path, *companions):
            reuse.keep_stale(p, latest.get(reuse.KEY))


def write(path: str, result: Union[Mapping, Callable[[dict], Mapping]],
          fp: Optional[reuse.Fingerprint] = None, arrays: Union[None, Arrays, Callable[[], Arrays]] = None,
          exact: bool = False, companions: tuple[str, ...] = ()) -> str:
    """Write the results file ``path`` under its folder's lock; returns ``path``.

    :param result: the dict to write, or a function of what the file holds now ({} if nothing) that
        returns it (the merge).
    :param fp: the weights ``result`` was computed on; a file of other weights is copied to stale/
        first, with the files ``companions`` (e.g. its npz). None: no stale copy (results
        across runs that name their runs in their settings).
    :param arrays: {npz path: (arrays, compressed)}, or a function returning it after the merge:
        written before the JSON.
    :param exact: write the JSON as cce_tf.atomic.write_json does (no rounding, no final newline).
    """
    folder = os.path.dirname(path) or "."
    with run_lock.hold(run_lock.lock_path(folder), wait=True):
        latest = read(path) or {}
        keep_stale(path, latest, fp, companions)
        out = result(latest) if callable(result) else result
        npz = arrays() if callable(arrays) else arrays
        for npz_path, (data, compressed) in (npz or {}).items():
            save = np.savez_compressed if compressed else np.savez
            atomic.write_file(npz_path, lambda f, d=data, s=save: s(f, **d), "wb")
        if exact:
            atomic.write_json(path, out)
        else:
            write_json(path, dict(out))
    return path


def write_arrays(path: str, arrays: Mapping[str, np.ndarray], compressed: bool = True) -> str:
    """An npz of results that stands alone (e.g. the suite's adversarial examples, which name their
    weights and settings inside), atomically under its folder's lock."""
    save = np.savez_compressed if compressed else np.savez
    with run_lock.hold(run_lock.lock_path(os.path.dirname(path) or "."), wait=True):
        atomic.write_file(path, lambda f: save(f, **arrays), "wb")
    return path


def discard(path: str) -> None:
    """Remove the file ``path`` (a record of work in progress that its result now holds) under its
    folder's lock; nothing where it is missing."""
    with run_lock.hold(run_lock.lock_path(os.path.dirname(path) or "."), wait=True):
        if os.path.exists(path):
            os.remove(path)


def write_markdown(path: str, text: str) -> str:
    """A Markdown page of results (``text`` as is), atomically under its folder's lock."""
    folder = os.path.dirname(path) or "."
    with run_lock.hold(run_lock.lock_path(folder), wait=True):
        atomic.write_file(path, lambda f: f.write(text))
    return path
