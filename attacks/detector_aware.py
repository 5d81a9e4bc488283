"""Attacks that know the entropy detector (the paper's "Adversarial Detectability"): they look for an
x_adv that is misclassified AND has a prediction entropy H(f^en(x_adv)) below the defender's
threshold, as Tramèr et al. (2020, "On Adaptive Attacks to Adversarial Example Defenses") attack a
defence as it is deployed. Not in the paper; its detection AUC was measured against an attacker who
does not know the detector.

Usage::

    from attacks import detector_aware
    x_adv = detector_aware.pgd_confident(model, x, y, eps=0.1, eps_iter=0.01, nb_iter=100, beta=1.0)
    x_adv = detector_aware.mul_pgd_confident(model, x, y, eps=0.1, eps_iter=0.01, nb_iter=20)
    x_adv = detector_aware.two_stage(model, x, y, eps=0.1, eps_iter=0.01, nb_iter=100, nb_iter_entropy=50)

Built from cleverhans' PGD with another loss (loss × step rule × projection):

* ``pgd_confident``: PGD on C(f^en(x), y) − β·H(f^en(x)), fooling while staying confident.
* ``mul_pgd_confident``: targeted PGD towards every wrong class t (maximising log f^en_t, so a
  success has low entropy by construction); per sample the wrong one with the lowest entropy over
  all C − 1 targets (the one a detector at any threshold is least likely to flag).
* ``two_stage``: the untargeted PGD example, then PGD steps that lower the entropy (ascending −H),
  keeping for each sample the last step that is still misclassified.

Every function returns x_adv inside the ε-ball and [0, 1] (DESIGN.md, contract 6).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from attacks import gradient


def entropy_of_logits(logits: tf.Tensor) -> tf.Tensor:
    """H(softmax(logits)) per sample, natural log, exact where a probability underflows."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def _pgd(model: Callable, x: np.ndarray, labels: np.ndarray, loss_fn: Callable, eps: float,
         eps_iter: float, nb_iter: int, rand_init: bool = True) -> np.ndarray:
    """cleverhans' PGD (gradient ascent on ``loss_fn(labels, logits)``), one batch, numpy out."""
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        return x.copy()
    x_adv = projected_gradient_descent(lambda v: model(v), tf.constant(x), eps, eps_iter, nb_iter, np.inf,
                                       loss_fn=loss_fn, clip_min=0.0, clip_max=1.0,
                                       y=tf.constant(np.asarray(labels, np.int64)), rand_init=rand_init,
                                       sanity_checks=False)
    return x_adv.numpy()


def pgd_confident(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
                  nb_iter: int, beta: float = 1.0) -> np.ndarray:
    """PGD on C(f^en(x), y) − β·H(f^en(x)) with random start: misclassified and confident."""
    def loss(labels, logits):
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return ce - beta * entropy_of_logits(logits)

    return _pgd(model, x, y, loss, eps, eps_iter, nb_iter)


def _entropy_and_pred(model: Callable, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = model(tf.constant(x))
    return entropy_of_logits(logits).numpy(), logits.numpy().argmax(-1)


def mul_pgd_confident(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
                      nb_iter: int) -> np.ndarray:
    """Targeted PGD towards each wrong class t = (y + k) mod C (``gradient.multi_targeted``); per
    sample the misclassified candidate with the lowest entropy, else the one with the lowest entropy.
    Every target runs on every sample: stopping at the first that passes one threshold would keep
    a higher-entropy success than the attacker can find (and the AUC counts every threshold)."""
    def rank(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        h = entropy_of_logits(tf.constant(logits)).numpy()
        return np.where(logits.argmax(-1) != labels, h, 1e6 + h)   # never negative: no early stop

    return gradient.multi_targeted(gradient.pgd, model, x, y, rank=rank, eps=eps, eps_iter=eps_iter,
                                   nb_iter=nb_iter)


def two_stage(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float, nb_iter: int,
              nb_iter_entropy: Optional[int] = None) -> np.ndarray:
    """Untargeted PGD, then ``nb_iter_entropy`` (default ``nb_iter``) single PGD steps on −H inside the
    same ε-ball around x; each sample keeps its last misclassified iterate."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    x_adv = gradient.pgd(model, x, y, eps, eps_iter, nb_iter)
    _, pred = _entropy_and_pred(model, x_adv)
    kept = x_adv.copy()
    current = x_adv
    for _ in range(nb_iter_entropy or nb_iter):
        g = _entropy_gradient(model, current)
        step = np.clip(current - eps_iter * np.sign(g), x - eps, x + eps)   # descend H
        current = np.clip(step, 0.0, 1.0).astype(np.float32)
        _, pred = _entropy_and_pred(model, current)
        wrong = pred != y
        kept[wrong] = current[wrong]
    return kept


def _entropy_gradient(model: Callable, x: np.ndarray) -> np.ndarray:
    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        h = tf.reduce_sum(entropy_of_logits(model(v)))
    return tape.gradient(h, v).numpy()
