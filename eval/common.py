"""Shared glue of the analyses (transferability, black-box matrix, detection): the CLI errors and
flags, the per-data-set attack settings, run labels and test data, batched prediction and attack
crafting with progress and timing, tables, JSON. Run folders and model files are eval.target's.

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
3. ``run_label``, ``run_labels``, ``test_samples``. eval.target's names (``load_run_checked``,
   ``read_run_config``, ``load_target``, ``open_target``, ``results_dir``, ``eval_path``, ...) are
   importable from here too, for the tools written before it.
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
from cce_tf import atomic, cli_flags
# Run folders and model files are eval.target's; their names stay importable from here.
from eval.target import (MODEL_FILE_ARCH, SavedModelClassifier, check_run_dir, eval_path,  # noqa: F401
                         is_model_file, load_model_file, load_run_checked, load_target,
                         open_target, read_run_config, results_dir, target_config)

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
    ``model_files``, --dataset and --trust_model for a model file in place of a run. Each tool adds
    --eps / --eps_iter with its own note on their defaults."""
    from absl import flags

    fv = cli_flags.new_flags()
    note = {"n_samples": "Default: the whole test set.", **({"run_dir": MODEL_FILE_NOTE} if model_files else {})}
    cli_flags.define_shared(fv, "run_dir", "n_samples", "batch_size", "seed", "nb_iter", "force", "verbose",
                            nb_iter=20, note=note)
    flags.DEFINE_multi_string("label", [], "Label per --run_dir (default: the run's method).", flag_values=fv)
    if model_files:
        define_dataset_flag(fv)
        cli_flags.define_shared(fv, "trust_model")
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
# 3. Run labels and test data
# --------------------------------------------------------------------------------------------------


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
