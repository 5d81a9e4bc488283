"""Shared glue of the analyses (transferability, black-box matrix, detection): run loading, the
per-data-set attack settings, batched prediction and attack crafting, tables, JSON, CLI errors.

Usage::

    from eval import common
    ens, cfg = common.load_run_checked("runs/demo")          # UsageError if not a trained run
    x, y = common.test_samples(cfg["dataset"], n_samples=1000)
    s = common.settings(cfg["dataset"])                      # eps, eps_iter, detection eps_iter, ...
    x_adv = common.craft("pgd", ens, x, y, eps=s.eps, eps_iter=s.eps_iter, nb_iter=20)
    pred = common.predict(ens, x_adv).argmax(-1)             # [B]
    member_pred = common.predict_members(ens, x_adv).argmax(-1)   # [N, B]
    print(common.markdown_table(["Model", "acc"], [["CCE-RM", common.pct(0.455)]]))

Parts, top to bottom:

1. ``UsageError`` (bad input: one line on stderr, exit code 2, through cce_tf.cli_flags.run) and
   the ε / η checks.
2. ``AttackSettings`` / ``settings(dataset)``: the evaluation attacks of the paper per data set,
   read from attacks.settings.
3. Runs: ``load_run_checked``, ``run_label``, ``test_samples``; model files in place of runs:
   ``is_model_file``, ``load_model_file``, ``load_target``, ``results_dir``.
4. Batched ``predict``, ``predict_members``, ``entropy_of_logits`` and ``craft`` (through
   ``attacks.registry.run``, the one entry point to the attack adapters); ``progress``, the
   progress bar of every long evaluation.
5. Output: ``write_json``, ``read_json``, ``markdown_table``, ``pct``, ``save_figure``.

TensorFlow is imported lazily, inside the functions that need it, so a CLI rejects bad input in a
fraction of a second.
"""
from __future__ import annotations

import json
import os
import sys
import time
import weakref
from typing import Any, Callable, Optional, Sequence

import numpy as np

from attacks import settings as attack_settings
from cce_tf import atomic, cli_flags, run_files
from cce_tf.run_files import CONFIG_FILE, KERAS_FILE, WEIGHTS_FILE

# --------------------------------------------------------------------------------------------------
# 1. Errors
# --------------------------------------------------------------------------------------------------

# Bad input: one line, exit code 2 (cce_tf.cli_flags.run, the one exit wrapper of every CLI).
UsageError = cli_flags.UsageError


def check_pgd(eps_values: Sequence[float], eps_iter: float, nb_iter: int) -> None:
    """UsageError unless every ε is in (0, 1] (pixel units), 0 < η <= ε (cleverhans' PGD asserts
    it) and k >= 1."""
    check_radius(eps_iter, "--eps_iter")
    for e in eps_values:
        check_radius(e, "--eps")
        if eps_iter > e:
            raise UsageError(f"--eps_iter {eps_iter:g} must not exceed --eps {e:g} "
                             "(cleverhans' PGD requires eta <= eps)")
    if int(nb_iter) < 1:
        raise UsageError(f"--nb_iter must be >= 1, got {nb_iter}")


def check_radius(value: Optional[float], name: str) -> None:
    """UsageError unless ``value`` (a radius or step in [0, 1] pixel units) is in (0, 1]."""
    if value is not None and not 0 < value <= 1:
        raise UsageError(f"{name} must be in (0, 1] (pixel units), got {value}")


MODEL_FILE_NOTE = "Also a .keras file or SavedModel folder of any classifier (logits out, [0, 1] NHWC in)."


def define_dataset_flag(fv) -> None:
    """--dataset: the data set of a model file given as --run_dir (load_target)."""
    from absl import flags

    from cce_tf.data import DATASETS

    flags.DEFINE_enum("dataset", None, DATASETS, "The data set of a model file given as --run_dir (default: "
                      "the one its input shape and class count fit); a run folder's must match.", flag_values=fv)


def analysis_flags(out_help: Optional[str] = None, model_files: bool = False):
    """The FlagValues of an analysis CLI (transferability, black box, detection), with the shared
    flags they all take (cce_tf.cli_flags), --label and, given ``out_help``, --out_dir; with
    ``model_files``, --dataset for a model file in place of a run. Each tool adds --eps / --eps_iter
    with its own note on their defaults."""
    from absl import flags

    fv = cli_flags.new_flags()
    note = {"n_samples": "Default: the whole test set.", **({"run_dir": MODEL_FILE_NOTE} if model_files else {})}
    cli_flags.define_shared(fv, "run_dir", "n_samples", "batch_size", "seed", "nb_iter", "force", "verbose",
                            nb_iter=20, note=note)
    flags.DEFINE_multi_string("label", [], "Label per --run_dir (default: the run's method).", flag_values=fv)
    if model_files:
        define_dataset_flag(fv)
    if out_help:
        flags.DEFINE_string("out_dir", "results", out_help, flag_values=fv)
    return fv


# --------------------------------------------------------------------------------------------------
# 2. The paper's evaluation attacks per data set: attacks.settings, their one home
# --------------------------------------------------------------------------------------------------

AttackSettings = attack_settings.AttackSettings


def settings(dataset: str) -> AttackSettings:
    """attacks.settings.for_dataset, UsageError for a data set without settings."""
    try:
        return attack_settings.for_dataset(dataset)
    except ValueError as e:
        raise UsageError(str(e)) from None


def format_eps(eps: float, dataset: str) -> str:
    """ε as the paper writes it: k/255 on CIFAR-10 when it is one, else a short decimal."""
    if dataset == "cifar10":
        k = eps * 255
        if abs(k - round(k)) < 1e-6:
            return f"{int(round(k))}/255"
    return f"{eps:.4g}"


# --------------------------------------------------------------------------------------------------
# 3. Runs and test data
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
    from cce_tf.ensemble import InconsistentRun, load_run

    try:
        return load_run(run_dir), cfg
    except InconsistentRun as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - h5py and Keras raise many types for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        name = KERAS_FILE if os.path.exists(os.path.join(run_dir, KERAS_FILE)) else WEIGHTS_FILE
        raise UsageError(f"{os.path.join(run_dir, name)} cannot be loaded "
                         f"({type(e).__name__}: {first[:200]})") from e


# A model file in place of a run: any classifier mapping [0, 1] NHWC float32 images to logits,
# saved as a .keras file or a TensorFlow SavedModel folder (e.g. by python -m cce_tf.export).
# Its results go to the sibling folder PATH.eval/ (a run's go to RUN/eval/), its fingerprint is
# the SHA-256 of the file(s) (cce_tf.fingerprint.model_file_fingerprint).
MODEL_FILE_ARCH = "cnn"  # the attacks' per-architecture defaults (k) for a foreign model: the CNNs'


def is_model_file(path: str) -> bool:
    """True for a .keras file or a SavedModel folder (one holding saved_model.pb)."""
    return (path.endswith(".keras") and os.path.isfile(path)) or \
        os.path.isfile(os.path.join(path, "saved_model.pb"))


def results_dir(target: str) -> str:
    """Where a target's results go: RUN/eval/ for a run folder, PATH.eval/ beside a model file."""
    if is_model_file(target):
        return os.path.normpath(target) + ".eval"
    return os.path.join(target, "eval")


class SavedModelClassifier:
    """A loaded SavedModel's ``serve`` signature as a model: ``clf(x, training=False) -> logits``
    (differentiable, so every gradient attack runs on it)."""

    def __init__(self, path: str):
        import tensorflow as tf

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


def load_model_file(path: str, dataset: Optional[str] = None):
    """(classifier, synthetic config) of a .keras file or SavedModel folder. The .keras file is
    loaded with safe_mode=True: evaluating a model never runs code that came with it. The config
    has the keys of a run's config.json the tools read (members = 1: the file is one classifier)."""
    import numpy as np

    try:
        if path.endswith(".keras"):
            import keras

            import cce_tf.ensemble  # noqa: F401 - registers cce_tf>Ensemble, so a run's ensemble.keras loads too
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
            input_shape = tuple(model.inputs[0].shape[1:]) if hasattr(model, "inputs") and model.inputs \
                else None
        else:
            model = SavedModelClassifier(path)
            input_shape = model.input_shape
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - Keras, TF and zipfile raise many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"{path} cannot be loaded as a model ({type(e).__name__}: {first[:200]})") from e
    if input_shape is None or len(input_shape) != 3 or None in input_shape:
        raise UsageError(f"{path}: the model must take NHWC images of a fixed size, it takes {input_shape}")
    logits = np.asarray(model(np.zeros((1, *input_shape), np.float32), training=False))
    if logits.ndim != 2:
        raise UsageError(f"{path}: the model must return logits [batch, classes], it returns shape {logits.shape}")
    name = os.path.basename(os.path.normpath(path))
    cfg = {"dataset": _dataset_for(path, input_shape, logits.shape[1], dataset), "arch": MODEL_FILE_ARCH,
           "method": "model", "preset": None, "members": 1, "input_shape": list(input_shape),
           "num_classes": int(logits.shape[1]), "model_file": os.path.abspath(path), "label": name}
    return model, cfg


def target_config(path: str, dataset: Optional[str] = None) -> dict:
    """The config of an evaluation target: a run's config.json (read without TensorFlow; ``dataset``,
    when given, must be the run's), or a model file's (loading it: ``load_model_file``)."""
    if path and is_model_file(path):
        return load_model_file(path, dataset)[1]
    cfg = read_run_config(path)
    if dataset and dataset != cfg["dataset"]:
        raise UsageError(f"--dataset {dataset}: {path} was trained on {cfg['dataset']}")
    return cfg


def open_target(path: str, dataset: Optional[str] = None) -> tuple[dict, Callable[[], Any]]:
    """(config, load) of an evaluation target: a run's config.json is read now and its ensemble
    loaded by ``load()``, so a tool that reuses its result never loads the weights; a model file is
    loaded now (its config comes from the model) and ``load()`` returns it."""
    if path and is_model_file(path):
        model, cfg = load_model_file(path, dataset)
        return cfg, lambda: model
    return target_config(path, dataset), lambda: load_run_checked(path)[0]


def load_target(path: str, dataset: Optional[str] = None):
    """(model, config) of an evaluation target: a run folder (``load_run_checked``; ``dataset``,
    when given, must be the run's) or a model file (``load_model_file``)."""
    cfg, load = open_target(path, dataset)
    return load(), cfg


_METHOD_NAMES = {"nat": "NAT", "adv": "ADV", "adv-en": "ADV-EN", "adp": "ADP", "cce": "CCE"}


def run_label(cfg: dict) -> str:
    """The paper's name of a run: its preset (CCE-RM, CCE-DM, CCE-Base) or method (ADV-EN, ...);
    a model file's name."""
    if cfg.get("label"):
        return cfg["label"]
    preset = cfg.get("preset")
    if preset:
        return {"cce-base": "CCE-Base"}.get(preset, preset.upper())
    return _METHOD_NAMES.get(cfg.get("method", ""), str(cfg.get("method", "run")).upper())


def run_labels(run_dirs: Sequence[str], configs: Sequence[dict],
               labels: Optional[Sequence[str]] = None) -> list[str]:
    """One label per run: the given ones, else the paper's names, with N or the folder name
    appended where two runs would share a name."""
    if labels:
        if len(labels) != len(run_dirs):
            raise UsageError(f"--label given {len(labels)} times for {len(run_dirs)} --run_dir")
        return list(labels)
    names = [run_label(c) for c in configs]
    if len(set(names)) < len(names):
        names = [f"{n}_{c.get('members', '?')}" for n, c in zip(names, configs)]
    if len(set(names)) < len(names):
        names = [f"{n} ({os.path.basename(os.path.normpath(d))})" for n, d in zip(names, run_dirs)]
    return names


def test_samples(dataset: str, n_samples: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n_samples test images and labels (all when None or 0)."""
    from cce_tf import data

    x, y = data.load(dataset, "test")
    if n_samples is not None and n_samples < 0:
        raise UsageError(f"--n_samples must be >= 0, got {n_samples}")
    if n_samples:
        x, y = x[:n_samples], y[:n_samples]
    return np.asarray(x, np.float32), np.asarray(y, np.int64)


# --------------------------------------------------------------------------------------------------
# 4. Prediction and crafting, in batches
# --------------------------------------------------------------------------------------------------


def _batches(n: int, batch_size: int):
    batch_size = max(1, int(batch_size))
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


_FORWARD: "weakref.WeakKeyDictionary[Any, Callable]" = weakref.WeakKeyDictionary()


def _compiled_forward(model) -> Callable:
    """``tf.function`` of model(x, training=False), one per model (weakly cached)."""
    import tensorflow as tf

    if model not in _FORWARD:
        model_ref = weakref.ref(model)
        _FORWARD[model] = tf.function(lambda x: model_ref()(x, training=False),
                                      reduce_retracing=True)
    return _FORWARD[model]


def predict(model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits of ``model`` (an Ensemble: log f^en) on x, numpy [B, C]."""
    import tensorflow as tf

    fn = _compiled_forward(model)
    out = [fn(tf.constant(x[s])).numpy() for s in _batches(len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_members(ensemble, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Every member's logits on x, numpy [N, B, C]."""
    return np.stack([predict(m, x, batch_size) for m in ensemble.members])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy_of_logits(logits: np.ndarray) -> np.ndarray:
    """H(softmax(logits)) per sample, natural log (cce_tf.losses.entropy on the probabilities)."""
    import tensorflow as tf

    from cce_tf.losses import entropy

    return entropy(tf.nn.softmax(tf.constant(logits, tf.float32), axis=-1)).numpy()


def craft(attack: str, model, x: np.ndarray, y: np.ndarray, batch_size: int = 500,
          bar: Optional["Progress"] = None, **params: Any) -> np.ndarray:
    """x_adv of ``attack`` (a name of ``attacks.registry``) against ``model`` on (x, y), TRUE labels,
    crafted batch by batch through ``attacks.registry.run``; ``bar`` advances by each batch."""
    from attacks import registry

    out = []
    for s in _batches(len(x), batch_size):
        out.append(np.asarray(registry.run(attack, model, x[s], y[s], **params), np.float32))
        if bar is not None:
            bar.add(s.stop - s.start)
    return np.concatenate(out) if out else np.asarray(x, np.float32).copy()


class Progress:
    """The progress of one long evaluation, in samples attacked, with an ETA.

    verbose 0: silent; 1: Keras' ``Progbar`` redrawn in place on a terminal and, when stdout is a
    file (a study's job log), a plain line at most every ``LOG_INTERVAL`` seconds (no colour codes or
    carriage returns in the log); 2: one line when done."""

    LOG_INTERVAL = 60.0

    def __init__(self, total: int, verbose: int = 1, unit: str = "sample"):
        self.total, self.verbose, self.unit, self.done = total, int(verbose), unit, 0
        self.t0 = self.last = time.time()
        self.bar = None
        if self.verbose and total > 0 and hasattr(sys.stdout, "isatty") and sys.stdout.isatty():
            import keras

            self.bar = keras.utils.Progbar(total, verbose=self.verbose, unit_name=unit)

    def add(self, n: int) -> None:
        if self.bar is not None:
            self.bar.add(n)
            return
        if not self.verbose or self.total <= 0:
            return
        self.done += n
        now, finished = time.time(), self.done >= self.total
        if finished or (self.verbose == 1 and now - self.last >= self.LOG_INTERVAL):
            self.last = now
            eta = "" if finished else \
                f", ETA {format_duration((now - self.t0) / self.done * (self.total - self.done))}"
            print(f"  {self.done}/{self.total} {self.unit}s, {format_duration(now - self.t0)}{eta}", flush=True)


_GRADIENT: "weakref.WeakKeyDictionary[Any, Callable]" = weakref.WeakKeyDictionary()


def estimate_line(model, x: np.ndarray, steps: int, batch_size: int, what: str) -> str:
    """"will run WHAT on n samples: about T" before a long evaluation, from one gradient step timed
    now on this machine (after a warm-up step, so tracing is not counted).

    :param steps: gradient steps per sample in all (e.g. attacks × k).
    """
    import tensorflow as tf

    xb = tf.constant(x[: max(1, min(len(x), batch_size))])
    if model not in _GRADIENT:
        model_ref = weakref.ref(model)

        def gradient(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                loss = tf.reduce_sum(model_ref()(v, training=False))
            return tape.gradient(loss, v)

        _GRADIENT[model] = tf.function(gradient, reduce_retracing=True)
    step = _GRADIENT[model]
    step(xb)
    t0 = time.perf_counter()
    step(xb)
    per_sample = (time.perf_counter() - t0) / int(xb.shape[0])
    seconds = per_sample * steps * len(x)
    return (f"will run {what} on {len(x)} samples: {steps * len(x):,} sample-gradient steps, about "
            f"{format_duration(seconds)} at {1e3 * per_sample:.3f} ms per sample-step measured now")


def format_duration(seconds: float) -> str:
    """"42 s", "12 min", "3.4 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def quiet_tf() -> None:
    """Silences TF's Python-side warnings (retracing notes: one tf.function per model is by
    design). TF's logger is the standard "tensorflow" logger, so this needs no TF import."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and TF (PGD's random start draws from TF's global generator)."""
    import keras

    keras.utils.set_random_seed(int(seed))


# --------------------------------------------------------------------------------------------------
# 5. Output
# --------------------------------------------------------------------------------------------------


def jsonable(obj):
    """obj with numpy values as Python ones, floats rounded to 12 decimals, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return round(v, 12) if np.isfinite(v) else None  # 0.079, not 0.07900000000000001
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str, obj: dict) -> str:
    """Writes obj (numpy values converted, floats rounded, NaN as null: ``jsonable``) atomically
    (cce_tf.atomic); returns the path."""
    return atomic.write_json(path, jsonable(obj), newline=True)


def read_json(path: str) -> Optional[dict]:
    """The JSON in path, or None where it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def eval_path(run_dir: str, name: str) -> str:
    """Where an evaluation of a run (RUN/eval/NAME) or of a model file (PATH.eval/NAME) goes."""
    return os.path.join(results_dir(run_dir), name)


def pct(value: Optional[float], digits: int = 1) -> str:
    """A fraction as a percentage for printed tables; "–" for a missing value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "| " + " | ".join(str(h) for h in headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def save_figure(fig, path_stem: str) -> list[str]:
    """Saves a matplotlib figure as PATH_STEM.png (150 dpi) and PATH_STEM.pdf; closes it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    paths = [f"{path_stem}.png", f"{path_stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
