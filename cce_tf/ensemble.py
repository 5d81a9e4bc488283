"""The ensemble f^en = (1/N) sum_n f^n, as a Keras model that outputs ensemble logits.

Usage::

    from cce_tf.ensemble import Ensemble, build_ensemble, load_run
    ens = build_ensemble("cnn", (28, 28, 1), 10, n_members=2)
    logits = ens(x)                  # log f^en(x): softmax(logits) == mean of members' softmax
    z = ens.member_logits(x)         # [N, B, C]
    ens = load_run("runs/demo")      # a trained run written by python -m cce_tf.train

Parts:
    Ensemble        keras.Model over N members (DESIGN.md, contract 3)
    ensemble_logits log f^en from stacked member logits (also used by the training objectives)
    build_ensemble  N freshly initialised members of one architecture
    load_run        rebuild a run's ensemble from its config.json and weights file

Because `ens(x)` returns log f^en(x), any attack that wants logits attacks the whole ensemble:
the paper's adaptive attack.
"""
from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from cce_tf.models import build_member

WEIGHTS_FILE = "ensemble.weights.h5"
CONFIG_FILE = "config.json"


class Ensemble(keras.Model):
    """N members; calling it returns log((1/N) sum_n softmax(z_n)), computed stably."""

    def __init__(self, members: list[keras.Model], **kwargs):
        super().__init__(**kwargs)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)

    def member_logits(self, x, training: bool = False) -> tf.Tensor:
        """Each member's logits, stacked: [N, B, C]."""
        return tf.stack([m(x, training=training) for m in self.members])

    def call(self, x, training: bool = False) -> tf.Tensor:
        return ensemble_logits(self.member_logits(x, training=training))


def ensemble_logits(member_logits: tf.Tensor) -> tf.Tensor:
    """log f^en = log((1/N) sum_n softmax(z_n)) from member logits [..., N, B, C] (members on axis -3),
    as logsumexp of the log-softmaxes minus log N, which stays finite where a softmax underflows."""
    n = tf.cast(tf.shape(member_logits)[-3], member_logits.dtype)
    return tf.reduce_logsumexp(tf.nn.log_softmax(member_logits, axis=-1), axis=-3) - tf.math.log(n)


def build_ensemble(arch: str, input_shape: tuple[int, int, int], num_classes: int,
                   n_members: int) -> Ensemble:
    """An Ensemble of `n_members` independently initialised members of `arch`."""
    members = [build_member(arch, input_shape, num_classes, name=f"member_{n}")
               for n in range(n_members)]
    ensemble = Ensemble(members, name="ensemble")
    ensemble(tf.zeros((1, *input_shape)))  # build, so weights can be loaded and counted
    return ensemble


def read_config(run_dir: str) -> dict:
    """A run's config.json as a dict."""
    with open(os.path.join(run_dir, CONFIG_FILE)) as f:
        return json.load(f)


def load_run(run_dir: str) -> Ensemble:
    """The ensemble of a run folder written by `python -m cce_tf.train` (DESIGN.md, contract 5)."""
    weights = os.path.join(run_dir, WEIGHTS_FILE)
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)) or not os.path.exists(weights):
        raise FileNotFoundError(f"{run_dir} is not a trained run: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    cfg = read_config(run_dir)
    ensemble = build_ensemble(cfg["arch"], tuple(cfg["input_shape"]), cfg["num_classes"],
                              cfg["members"])
    ensemble.load_weights(weights)
    return ensemble
