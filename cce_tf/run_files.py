"""A run folder's layout (DESIGN.md, contract 5): the names of the files python -m cce_tf.train
writes there, and the one reader of its config.json.

Usage::

    from cce_tf import run_files
    cfg = run_files.read_config("runs/demo")     # OSError or ValueError if missing or unreadable
    os.path.join("runs/demo", run_files.WEIGHTS_FILE)

No TensorFlow import: cce_tf.resume checks a run folder with these names before TensorFlow starts.
"""
from __future__ import annotations

import json
import os
from typing import Any

CONFIG_FILE = "config.json"            # every setting of the run, library versions, data source
WEIGHTS_FILE = "ensemble.weights.h5"   # the weights; their SHA-256 identifies every result (cce_tf.fingerprint)
KERAS_FILE = "ensemble.keras"          # the same weights as a standard Keras file (cce_tf.ensemble.load_run)
HISTORY_FILE = "history.json"          # one entry per epoch: metrics and learning rate
CHECKPOINT_DIR = "checkpoints"         # the training state a resumed run starts from
LOG_DIR = "logs"                       # TensorBoard
EVAL_DIR = "eval"                      # what the evaluation tools write about the run
LOCK_FILE = ".lock"                    # held by the one process writing the folder (cce_tf.run_lock);
                                       # there only while held (or left by a killed holder): never run content


def read_json(path: str) -> Any:
    """The JSON in a run's file ``path`` (OSError if unreadable, ValueError if not JSON)."""
    with open(path) as f:
        return json.load(f)


def read_config(run_dir: str) -> Any:
    """A run's config.json (a dict for a run; OSError or ValueError where it is missing or corrupt,
    which each caller reports in its own words)."""
    return read_json(os.path.join(run_dir, CONFIG_FILE))
