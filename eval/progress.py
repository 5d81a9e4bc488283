"""What a long evaluation prints while it runs: the progress bar with an ETA (``--verbose``), the
estimate of its duration before it starts, durations, and TensorFlow's Python warnings silenced.

Usage::

    from eval.progress import Progress, estimate_line, quiet_tf
    quiet_tf()                                           # a CLI, once, before TensorFlow runs
    print(estimate_line(ens, x, steps=2 * 20, batch_size=500, what="PGD (k = 20)"))
    bar = Progress(len(x), verbose=1)                    # a bar on a terminal, a line a minute in a log
    bar.add(500)                                         # after each batch
"""
from __future__ import annotations

import sys
import time
import weakref
from typing import Any, Callable

import numpy as np


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
