"""What an evaluation tool evaluates, and the only code in eval/ that knows a run folder's files:
a run folder written by python -m cce_tf.train, or a model file in its place (DESIGN.md, contract 5).

Usage::

    from eval.target import Target
    t = Target("runs/demo")                     # UsageError unless a readable trained run
    t = Target("my_model.keras", "fashion_mnist")   # any classifier: logits out, [0, 1] NHWC in
    t = Target("my_savedmodel", trust_model=True)   # a SavedModel you wrote: loaded without the scan
    t.kind, t.config["dataset"]                 # "run" | "model file"; config.json, read once
    t.results_dir                               # RUN/eval/, or PATH.eval/ beside a model file
    t.fingerprint                               # SHA-256 of the weights (DESIGN.md, contract 9), cached
    model = t.load()                            # the Ensemble (or the model file's classifier)
    t.results_path("detection.json")            # RUN/eval/detection.json: where an analysis writes
    t = Target.of_model(model, "fashion_mnist", folder="out/m")   # a keras.Model in memory: out/m/eval/
    history("runs/demo")                        # RUN/history.json's epochs, None when missing

A model in memory (``Target.of_model``: any ``keras.Model`` or callable, images to logits) is a
target too: its config is made as a model file's, its fingerprint is the SHA-256 of its weights'
bytes and its results go to FOLDER/eval/ (FOLDER a temporary folder unless given).

A model file is any classifier mapping [0, 1] NHWC float32 images to logits, saved as a .keras
file or a TensorFlow SavedModel folder (e.g. by python -m cce_tf.export). Its config is made from
the model (the keys of a run's config.json the tools read), its results go to the sibling folder
PATH.eval/ and its fingerprint is the SHA-256 of the file(s) (cce_tf.fingerprint). Nothing that came
with a model file runs: a .keras file is loaded with safe_mode=True, a SavedModel only after
eval.model_scan found nothing but pure numerical ops in it (``trust_model`` skips that scan, for a
SavedModel the user wrote; the CLIs' --trust_model).

The functions beside ``Target`` are the same steps one at a time, for the tools that hold a path:
``read_run_config``, ``load_run_checked``, ``load_model_file``, ``results_dir``, ``eval_path``,
``fingerprint``, and ``target_config`` / ``open_target`` / ``load_target``, each a ``Target``.

TensorFlow is imported lazily, only to load a model, so a CLI rejects bad input in a fraction of a
second. Bad input raises UsageError (cce_tf.cli_flags: one line, exit code 2).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

from cce_tf import cli_flags, run_files
from cce_tf.fingerprint import model_file_fingerprint, weights_fingerprint
from cce_tf.run_files import CONFIG_FILE, EVAL_DIR, HISTORY_FILE, KERAS_FILE, WEIGHTS_FILE
from eval import model_scan

UsageError = cli_flags.UsageError

RUN, MODEL_FILE, MODEL = "run", "model file", "model"  # Target.kind
MODEL_FILE_ARCH = "cnn"  # the attacks' per-architecture defaults (k) for a foreign model: the CNNs'


class Target:
    """A run folder or a model file, opened for evaluation: ``path``, ``kind``, ``config`` (read
    now, once), ``results_dir``, ``fingerprint`` (computed on first use) and ``load()``.

    A run's config.json is read without loading the weights, so a tool that reuses its results never
    loads them; a model file is loaded now (its config comes from the model). ``dataset``: the data
    set of a model file (default: the one its input shape and class count fit); a run's must match.
    ``trust_model``: load a SavedModel without eval.model_scan's scan. Raises UsageError for a path
    that is neither, or cannot be read, or a SavedModel the scan refuses."""

    def __init__(self, path: str, dataset: Optional[str] = None, trust_model: bool = False):
        self.path = path
        self.kind = MODEL_FILE if path and is_model_file(path) else RUN
        self._model = None
        if self.kind == MODEL_FILE:
            self._model, self.config = load_model_file(path, dataset, trust_model)
        else:
            self.config = read_run_config(path)
            if dataset and dataset != self.config["dataset"]:
                raise UsageError(f"--dataset {dataset}: {path} was trained on {self.config['dataset']}")

    @classmethod
    def results_of(cls, path: str) -> "Target":
        """A run folder opened only to read its results (``results_dir``, ``results_path``,
        ``fingerprint``): its config.json is not read (``config`` is None), nothing is loaded."""
        self = cls.__new__(cls)
        self.path, self.kind, self._model, self.config = path, RUN, None, None
        return self

    @classmethod
    def of_model(cls, model, dataset: Optional[str] = None, folder: Optional[str] = None,
                 label: str = "model") -> "Target":
        """A classifier in memory (a ``keras.Model``, an Ensemble, any callable images -> logits with
        ``get_weights``) as a target: ``path`` is ``folder`` (default: a new temporary folder) and its
        results go to FOLDER/eval/, as a run's."""
        import tempfile

        self = cls.__new__(cls)
        self._model, self.config = model, model_config(model, label, dataset, label)
        self.kind, self.path = MODEL, folder or tempfile.mkdtemp(prefix="cce-eval-")
        return self

    @property
    def results_dir(self) -> str:
        return results_dir(self.path)

    def results_path(self, name: str) -> str:
        """Where the results file ``name`` of this target goes (RUN/eval/NAME, PATH.eval/NAME)."""
        return os.path.join(self.results_dir, name)

    @functools.cached_property
    def fingerprint(self) -> str:
        if self.kind == MODEL:
            return model_fingerprint(self._model)
        return fingerprint(self.path)

    def load(self):
        """The model: a run's Ensemble, loaded from its files at each call (``load_run_checked``
        with the config already read), or the model file's classifier, loaded when opened."""
        return self._model if self.kind in (MODEL_FILE, MODEL) else _load_ensemble(self.path, self.config)


# --------------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------------


def check_run_dir(run_dir: str) -> None:
    """UsageError unless run_dir holds a trained run (config.json and the ensemble weights)."""
    if not run_dir:
        raise UsageError("--run_dir is required")
    if not os.path.isdir(run_dir):
        raise UsageError(f"--run_dir {run_dir}: no such folder")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise UsageError(f"--run_dir {run_dir} is not a trained run: {name} is missing "
                             f"(train one with python -m cce_tf.train --out_dir {run_dir})")


_CONFIG_KEYS = ("dataset", "arch", "method", "members", "input_shape", "num_classes")


def read_run_config(run_dir: str) -> dict:
    """A trained run's config.json; UsageError naming the file if it is missing, unreadable or
    lacks a setting the tools need."""
    check_run_dir(run_dir)
    path = os.path.join(run_dir, CONFIG_FILE)
    try:
        cfg = run_files.read_config(run_dir)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    missing = [k for k in _CONFIG_KEYS if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise UsageError(f"{path} is not a run's config.json: it lacks {', '.join(missing)}")
    return cfg


def load_run_checked(run_dir: str):
    """(Ensemble, config dict) of a trained run; UsageError naming the file for a folder that is
    not one, a corrupt config.json or a truncated or corrupt weights file."""
    cfg = read_run_config(run_dir)
    return _load_ensemble(run_dir, cfg), cfg


def _load_ensemble(run_dir: str, cfg: dict):
    """cce_tf.ensemble.load_run with the config read already; UsageError naming the file that
    cannot be loaded."""
    from cce_tf.ensemble import InconsistentRun, load_run

    try:
        return load_run(run_dir, cfg)
    except InconsistentRun as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - h5py and Keras raise many types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        name = KERAS_FILE if os.path.exists(os.path.join(run_dir, KERAS_FILE)) else WEIGHTS_FILE
        raise UsageError(f"{os.path.join(run_dir, name)} cannot be loaded "
                         f"({type(e).__name__}: {first[:200]})") from e


# --------------------------------------------------------------------------------------------------
# Model files in place of runs
# --------------------------------------------------------------------------------------------------


def is_model_file(path: str) -> bool:
    """True for a .keras file or a SavedModel folder (one holding saved_model.pb)."""
    return (path.endswith(".keras") and os.path.isfile(path)) or \
        os.path.isfile(os.path.join(path, "saved_model.pb"))


class SavedModelClassifier:
    """A loaded SavedModel's ``serve`` signature as a model: ``clf(x, training=False) -> logits``
    (differentiable, so every gradient attack runs on it). The SavedModel is scanned before it is
    loaded (eval.model_scan: UsageError for an op that is not pure numerics) unless ``trust_model``."""

    def __init__(self, path: str, trust_model: bool = False):
        import tensorflow as tf

        if not trust_model:
            model_scan.check_saved_model(path)   # before TensorFlow runs any of it
        self.loaded = tf.saved_model.load(path)
        if not hasattr(self.loaded, "serve"):
            raise UsageError(f"{path} is a SavedModel without a 'serve' function (write it with "
                             "keras.Model.export or python -m cce_tf.export --format savedmodel)")
        spec = self.loaded.serve.input_signature[0]
        self.input_shape = tuple(spec.shape[1:])

    def __call__(self, x, training: bool = False):
        return self.loaded.serve(x)


def _dataset_for(path: str, input_shape: tuple, num_classes: int, dataset: Optional[str]) -> str:
    """The data set a model file is evaluated on: ``dataset`` when given (it must fit the model's
    input shape and class count), else the one data set that fits; UsageError otherwise."""
    from cce_tf import data

    fits = [d for d in data.DATASETS
            if tuple(data.info(d).input_shape) == tuple(input_shape) and data.info(d).num_classes == num_classes]
    if dataset:
        if dataset not in data.DATASETS:
            raise UsageError(f"--dataset must be one of {', '.join(data.DATASETS)}, got {dataset!r}")
        if dataset not in fits:
            raise UsageError(f"{path} takes {tuple(input_shape)} images to {num_classes} classes, which "
                             f"does not fit --dataset {dataset}")
        return dataset
    if len(fits) != 1:
        raise UsageError(f"{path} takes {tuple(input_shape)} images to {num_classes} classes: "
                         + (f"give --dataset ({' or '.join(fits)})" if fits else "no data set of "
                            f"{', '.join(data.DATASETS)} fits"))
    return fits[0]


def load_model_file(path: str, dataset: Optional[str] = None, trust_model: bool = False):
    """(classifier, synthetic config) of a .keras file or SavedModel folder. Evaluating a model never
    runs code that came with it: the .keras file is loaded with safe_mode=True (``trust_model`` or
    not), the SavedModel only once eval.model_scan allows every op in it (``trust_model``: unscanned,
    for a file the user wrote). The config has the keys of a run's config.json the tools read
    (members = 1: the file is one classifier)."""
    try:
        if path.endswith(".keras"):
            import keras

            import cce_tf.ensemble  # noqa: F401 - registers cce_tf>Ensemble, so a run's ensemble.keras loads too
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
            input_shape = tuple(model.inputs[0].shape[1:]) if hasattr(model, "inputs") and model.inputs \
                else None
        else:
            model = SavedModelClassifier(path, trust_model)
            input_shape = model.input_shape
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - Keras, TF and zipfile raise many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"{path} cannot be loaded as a model ({type(e).__name__}: {first[:200]})") from e
    if input_shape is None or len(input_shape) != 3 or None in input_shape:
        raise UsageError(f"{path}: the model must take NHWC images of a fixed size, it takes {input_shape}")
    cfg = model_config(model, path, dataset, os.path.basename(os.path.normpath(path)), input_shape, members=1)
    label = cfg.pop("label")
    return model, dict(cfg, model_file=os.path.abspath(path), label=label)


def model_config(model, path: str, dataset: Optional[str], label: str, input_shape: Optional[tuple] = None,
                 members: Optional[int] = None) -> dict:
    """The config of a classifier evaluated in place of a run: the keys of a run's config.json the
    tools read, from its input shape and its logits on one image (``members``: default the
    Ensemble's, else 1; a model file is one classifier)."""
    import numpy as np

    if input_shape is None:
        inputs = getattr(model, "inputs", None)
        input_shape = tuple(inputs[0].shape[1:]) if inputs else tuple(getattr(model, "input_shape", ())[1:] or ())
    logits = np.asarray(model(np.zeros((1, *input_shape), np.float32), training=False))
    if logits.ndim != 2:
        raise UsageError(f"{path}: the model must return logits [batch, classes], it returns shape {logits.shape}")
    members = members or len(getattr(model, "members", None) or [model])
    return {"dataset": _dataset_for(path, input_shape, logits.shape[1], dataset), "arch": MODEL_FILE_ARCH,
            "method": "model", "preset": None, "members": members, "input_shape": list(input_shape),
            "num_classes": int(logits.shape[1]), "label": label}


def model_fingerprint(model) -> str:
    """SHA-256 of a model's weights in memory (their shapes and bytes, in order)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Either, by path
# --------------------------------------------------------------------------------------------------


def results_dir(path: str) -> str:
    """Where a target's results go: RUN/eval/ for a run folder, PATH.eval/ beside a model file."""
    if is_model_file(path):
        return os.path.normpath(path) + ".eval"
    return os.path.join(path, EVAL_DIR)


def eval_path(path: str, name: str) -> str:
    """Where an evaluation of a run (RUN/eval/NAME) or of a model file (PATH.eval/NAME) goes."""
    return os.path.join(results_dir(path), name)


def history(run_dir: str) -> Optional[list]:
    """RUN/history.json (one entry per epoch), or None when missing or unreadable."""
    import json

    try:
        with open(os.path.join(run_dir, HISTORY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def history_path(run_dir: str) -> str:
    return os.path.join(run_dir, HISTORY_FILE)


def fingerprint(path: str) -> str:
    """SHA-256 of a run's weights (cached by size and mtime; cce_tf.fingerprint), or of a model
    file evaluated in place of a run."""
    if is_model_file(path):
        return model_file_fingerprint(path)
    return weights_fingerprint(path)


def target_config(path: str, dataset: Optional[str] = None, trust_model: bool = False) -> dict:
    """The config of an evaluation target (``Target(path, dataset, trust_model).config``): a run's
    config.json, read without TensorFlow, or a model file's, loading it."""
    return Target(path, dataset, trust_model).config


def open_target(path: str, dataset: Optional[str] = None,
                trust_model: bool = False) -> tuple[dict, Callable[[], Any]]:
    """(config, load) of an evaluation target (``Target``): a run's ensemble is loaded only by
    ``load()``, so a tool that reuses its result never loads the weights."""
    target = Target(path, dataset, trust_model)
    return target.config, target.load


def load_target(path: str, dataset: Optional[str] = None, trust_model: bool = False):
    """(model, config) of an evaluation target: a run folder (``dataset``, when given, must be the
    run's) or a model file (``trust_model``: a SavedModel loaded without the scan, ``Target``)."""
    target = Target(path, dataset, trust_model)
    return target.load(), target.config
