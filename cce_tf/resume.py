"""The checks before a run folder is trained into: a run folder may only be resumed with the same
settings (``RESUME_FREE`` are those that may change), its files must be readable, and an --init_from
run must hold a readable ensemble of the same shape. Then the LR milestones of a new or resumed run.

Usage::

    from cce_tf import resume
    old, history = resume.check_resume(run_dir, s)   # old: the stored config.json, None for a new run
    init_sha = resume.check_init_from(s)             # the SHA-256 of --init_from's weights, or None
    s = dataclasses.replace(s, lr_milestones=resume.milestones(s, old, started))

Every check raises UsageError (exit code 2) naming the file, and reads without TensorFlow (h5py for
the weights), so a refused resume costs no TensorFlow start and writes nothing.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from cce_tf import run_files
from cce_tf.cli_flags import UsageError, one_line
from cce_tf.run_files import CONFIG_FILE, HISTORY_FILE, LOCK_FILE, WEIGHTS_FILE
from cce_tf.train_settings import Settings

# Settings that may differ between the first run and a resume: where, how long and how safely it
# trains, not what it trains. lr_milestones may change for the epochs to come (`milestones`).
RESUME_FREE = ("strategy", "cpu_devices", "epochs", "lr_milestones", "test_subset", "backup_every_steps",
               "backup_every_seconds", "deterministic")


def check_resume(run_dir: str, s: Settings) -> tuple[dict | None, list[dict]]:
    """A run folder made with other settings is never trained into, nor one whose config.json,
    history.json or ensemble.weights.h5 is unreadable. Returns its stored config (None for a new
    run) and history. Raises UsageError."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_FILE}:
            raise UsageError(f"--out_dir {run_dir} exists and is not a run folder (no config.json): choose another")
        return None, []
    old = _read_json(path, dict, lambda _: run_files.read_config(run_dir))
    for key, value in s.as_json().items():
        if key not in RESUME_FREE and old.get(key) != value:
            raise UsageError(f"--out_dir {run_dir} was made with {key}={old.get(key)!r}, not {value!r}: "
                             f"use the same settings to resume, or another --out_dir")
    stored = old.get("lr_milestones")
    if not (isinstance(stored, list) and all(isinstance(m, int) for m in stored)):
        raise UsageError(f"{path}: lr_milestones is not a list of epochs: use another --out_dir")
    history_path = os.path.join(run_dir, HISTORY_FILE)
    history = _read_json(history_path, list) if os.path.exists(history_path) else []
    if not all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in history):
        raise UsageError(f"{history_path}: not a list of epochs: use another --out_dir")
    if os.path.exists(os.path.join(run_dir, WEIGHTS_FILE)):
        _check_weights(os.path.join(run_dir, WEIGHTS_FILE))
    return old, history


def check_init_from(s: Settings) -> str | None:
    """The SHA-256 of --init_from's weights (None without it), after checking that run holds a
    readable ensemble of the same dataset, arch and members. Raises UsageError."""
    src = s.init_from
    if src is None:
        return None
    from cce_tf.fingerprint import weights_fingerprint

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(src, name)):
            raise UsageError(f"--init_from {src} is not a trained run: it has no {name}")
    try:
        cfg = run_files.read_config(src)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--init_from {src}: unreadable {CONFIG_FILE} ({one_line(e)})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"--init_from {src}: {CONFIG_FILE} is not a JSON object")
    for key in ("dataset", "arch", "members"):
        if cfg.get(key) != getattr(s, key):
            raise UsageError(f"--init_from {src} has {key}={cfg.get(key)!r}, not {getattr(s, key)!r}: "
                             f"warm-start from a run of the same dataset, arch and members")
    _check_weights(os.path.join(src, WEIGHTS_FILE), hint="give another --init_from")
    return weights_fingerprint(src)


def milestones(s: Settings, old: Optional[dict], started: int) -> tuple[int, ...]:
    """The run's LR milestones: a new run's as given or the paper's scaled to its epochs; a resumed
    run's as stored, with --lr_milestones given again for the epochs to come."""
    from cce_tf import config

    given = None if s.lr_milestones is None else list(s.lr_milestones)
    if old:
        try:
            return tuple(config.resumed_milestones(old["lr_milestones"], given, started))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if given is None:
        return tuple(config.scaled_milestones(s.dataset, s.epochs))
    return tuple(given)


def _read_json(path: str, kind: type, read=run_files.read_json):
    """The JSON object or list in `path`, read by ``read(path)``; UsageError naming the file if it
    is unreadable."""
    try:
        obj = read(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({one_line(e)}): use another --out_dir") from None
    if not isinstance(obj, kind):
        raise UsageError(f"{path}: not a JSON {kind.__name__}: use another --out_dir")
    return obj


def _check_weights(path: str, hint: str = "use another --out_dir") -> None:
    """Reads every array of a weights file (h5py, no TensorFlow); UsageError naming it if one fails."""
    import h5py

    def read(_, node):
        if isinstance(node, h5py.Dataset):
            node[()]   # returns None, or visititems would stop here

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"{path}: unreadable weights file ({one_line(e)}): {hint}") from None
