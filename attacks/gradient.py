"""Gradient attacks from cleverhans 4.0.0 (``cleverhans.tf2.attacks``), L∞, pixels in [0, 1].

Usage::

    from attacks import gradient
    x_adv = gradient.pgd(model, x, y, eps=8 / 255, eps_iter=2 / 255, nb_iter=100)
    x_adv = gradient.mul_pgd(model, x, y, eps=8 / 255, eps_iter=2 / 255, nb_iter=20)

``model`` maps float32 NHWC images in [0, 1] to logits (an ensemble's logits are log f^en, so the
attack is the paper's adaptive attack); ``x`` is one numpy batch, ``y`` its int64 TRUE labels; the
result is a numpy float32 ``x_adv`` inside the L∞ ε-ball around ``x`` and inside [0, 1].

Parts, top to bottom:

1. ``compiled_attack``: the cleverhans call wrapped in one ``tf.function`` per model and static
   parameters (method, targeted, ε, η, μ), cached on the model object and traced once. The batch
   dimension is ``None`` (a new batch size does not retrace) and k is a tensor, so cleverhans'
   ``while i < nb_iter`` becomes one ``tf.while_loop`` rather than k unrolled steps. ε and η stay
   Python floats because cleverhans' PGD does ``assert eps_iter <= eps`` in Python.
2. ``fgsm``, ``pgd`` (random start), ``bim`` (= PGD without random start), ``mim``, and
   ``pgd_margin`` (PGD on the Carlini-Wagner margin loss, ``margin_loss``).
3. ``multi_targeted(attack, ...)``, the paper's mulA (appendix "Robustness evaluation metrics"),
   and ``mul_pgd``, ``mul_bim``, ``mul_mim`` built from it.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

METHODS = ("fgsm", "pgd", "bim", "mim", "pgd_margin")

# model -> {(method, targeted, eps, eps_iter, decay_factor, image_shape): tf.function}. Weak keys,
# and the traced function only holds a weak reference to the model, so a dropped model frees its
# compiled attacks.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------------
# 1. One compiled cleverhans call per model and static parameters
# --------------------------------------------------------------------------------------------------


def compiled_attack(model: Callable, method: str, targeted: bool, eps: float, eps_iter: float,
                    decay_factor: float, image_shape: tuple[int, ...]) -> Callable:
    """The cached ``tf.function(x, labels, nb_iter) -> x_adv`` for these static parameters.

    :param model: callable mapping images to logits; the cache key (by identity).
    :param method: one of ``METHODS``.
    :param targeted: if True, ``labels`` are target classes and the loss is minimised.
    :param eps, eps_iter, decay_factor: ε, η and MIM's μ (unused ones are ignored by the method).
    :param image_shape: (H, W, C) of one image; the batch dimension is left free.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    per_model = _COMPILED.setdefault(model, {})
    key = (method, bool(targeted), float(eps), float(eps_iter), float(decay_factor),
           tuple(int(d) for d in image_shape))
    if key not in per_model:
        per_model[key] = _build(weakref.ref(model), *key)
    return per_model[key]


def _build(model_ref: "weakref.ref", method: str, targeted: bool, eps: float, eps_iter: float,
           decay_factor: float, image_shape: tuple[int, ...]) -> Callable:
    def model_fn(x):
        return model_ref()(x)

    def run(x, labels, nb_iter):
        # sanity_checks=False: cleverhans' checks call np.all on tensors (numpy >= 1.24 rejects it).
        common = dict(norm=np.inf, clip_min=0.0, clip_max=1.0, y=labels, targeted=targeted,
                      sanity_checks=False)
        if method == "fgsm":
            return fast_gradient_method(model_fn, x, eps, **common)
        if method == "mim":
            return momentum_iterative_method(model_fn, x, eps, eps_iter, nb_iter,
                                             decay_factor=decay_factor, **common)
        if method == "pgd_margin":
            return projected_gradient_descent(model_fn, x, eps, eps_iter, nb_iter, loss_fn=margin_loss,
                                              rand_init=True, **common)
        return projected_gradient_descent(model_fn, x, eps, eps_iter, nb_iter,
                                          rand_init=(method == "pgd"), **common)

    return tf.function(run, input_signature=[
        tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([], tf.int32)])


def margin_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The Carlini-Wagner margin max_{j≠y} z_j − z_y per sample (Carlini & Wagner 2017): positive
    exactly when the input is misclassified, and unlike cross-entropy it does not saturate on a
    confident model, so its gradient still points across the decision boundary."""
    true = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    z_y = tf.reduce_sum(tf.where(true, logits, tf.zeros_like(logits)), axis=-1)
    z_other = tf.reduce_max(tf.where(true, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=-1)
    return z_other - z_y


def _run(method: str, model: Callable, x: np.ndarray, y: np.ndarray, eps: float,
         eps_iter: float = 0.0, nb_iter: int = 0, decay_factor: float = 1.0,
         targeted: bool = False, y_target: Optional[np.ndarray] = None) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if targeted and y_target is None:
        raise ValueError("a targeted attack needs y_target")
    labels = np.asarray(y_target if targeted else y, np.int64)
    if len(x) == 0:
        return x.copy()
    fn = compiled_attack(model, method, targeted, eps, eps_iter, decay_factor, x.shape[1:])
    x_adv = fn(tf.constant(x), tf.constant(labels), tf.constant(nb_iter, tf.int32))
    return x_adv.numpy()


# --------------------------------------------------------------------------------------------------
# 2. FGSM, PGD, BIM, MIM
# --------------------------------------------------------------------------------------------------


def fgsm(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, targeted: bool = False,
         y_target: Optional[np.ndarray] = None) -> np.ndarray:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size ε along sign(∇loss).

    :param model: callable, float32 NHWC images in [0, 1] -> logits.
    :param x: numpy float32 batch of clean images.
    :param y: int64 true labels (used, not the model's predictions, to craft the attack).
    :param eps: L∞ radius ε.
    :param targeted: if True, step towards ``y_target`` instead of away from ``y``.
    :param y_target: int64 target labels, needed when ``targeted``.
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1].
    """
    return _run("fgsm", model, x, y, eps, targeted=targeted, y_target=y_target)


def pgd(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
        nb_iter: int, targeted: bool = False, y_target: Optional[np.ndarray] = None,
        rand_init: bool = True) -> np.ndarray:
    """Projected Gradient Descent (Madry et al. 2018): k signed-gradient steps of size η, each
    projected back onto the ε-ball and [0, 1], from a uniform random start in the ε-ball.

    :param model: callable, float32 NHWC images in [0, 1] -> logits.
    :param x: numpy float32 batch of clean images.
    :param y: int64 true labels.
    :param eps: L∞ radius ε.
    :param eps_iter: step size η (cleverhans asserts η <= ε).
    :param nb_iter: number of steps k.
    :param targeted: if True, descend the loss of ``y_target`` instead of ascending that of ``y``.
    :param y_target: int64 target labels, needed when ``targeted``.
    :param rand_init: start from a random point of the ε-ball (PGD) or from x itself (BIM).
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1].
    """
    return _run("pgd" if rand_init else "bim", model, x, y, eps, eps_iter, nb_iter,
                targeted=targeted, y_target=y_target)


def bim(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
        nb_iter: int, targeted: bool = False, y_target: Optional[np.ndarray] = None) -> np.ndarray:
    """Basic Iterative Method (Kurakin et al. 2017): PGD started at x (no random start), which is
    what cleverhans' own ``basic_iterative_method`` does. Parameters as ``pgd``."""
    return pgd(model, x, y, eps, eps_iter, nb_iter, targeted=targeted, y_target=y_target,
               rand_init=False)


def mim(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
        nb_iter: int, decay_factor: float = 1.0, targeted: bool = False,
        y_target: Optional[np.ndarray] = None) -> np.ndarray:
    """Momentum Iterative Method (Dong et al. 2018): BIM whose step follows the sign of an
    accumulated, L1-normalised gradient (momentum).

    :param decay_factor: momentum decay μ (cleverhans' default 1.0).
    Other parameters as ``pgd``.
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1].
    """
    return _run("mim", model, x, y, eps, eps_iter, nb_iter, decay_factor=decay_factor,
                targeted=targeted, y_target=y_target)


def pgd_margin(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
               nb_iter: int, targeted: bool = False, y_target: Optional[np.ndarray] = None) -> np.ndarray:
    """PGD with random start on the Carlini-Wagner margin ``margin_loss`` of the logits instead of
    cross-entropy: the same optimiser, another loss (not in the paper; a check that cross-entropy
    PGD does not overstate robustness, Carlini et al. 2019). Parameters as ``pgd``."""
    return _run("pgd_margin", model, x, y, eps, eps_iter, nb_iter, targeted=targeted, y_target=y_target)


def restarted(attack: Callable, model: Callable, x: np.ndarray, y: np.ndarray, restarts: int,
              **params: Any) -> np.ndarray:
    """``attack`` from ``restarts`` independent random starts: each sample keeps the first x_adv that
    fools the model, and only the samples still right are attacked again (Madry et al. 2018's
    restarts; each call of a random-start attack draws a new start)."""
    x_adv = np.array(attack(model, x, y, **params), np.float32)
    for _ in range(int(restarts) - 1):
        left = np.flatnonzero(np.argmax(model(tf.constant(x_adv)).numpy(), axis=1) == y)
        if left.size == 0:
            break
        x_adv[left] = attack(model, x[left], y[left], **params)
    return x_adv


def pgd_margin_restarts(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float,
                        nb_iter: int, restarts: int = 5) -> np.ndarray:
    """``pgd_margin`` with ``restarts`` random starts (``restarted``): the independent attack the
    sanity report holds the any-attack row against. Parameters as ``pgd``."""
    return restarted(pgd_margin, model, x, y, restarts, eps=eps, eps_iter=eps_iter, nb_iter=nb_iter)


# --------------------------------------------------------------------------------------------------
# 3. The multiple-targeted form mulA
# --------------------------------------------------------------------------------------------------


def _broken_or_least_true(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """mulA's ranking of candidates: -1 where the model is wrong (done), else p(true class)."""
    probs = tf.nn.softmax(logits).numpy()
    return np.where(probs.argmax(axis=1) != y, -1.0, probs[np.arange(len(y)), y])


def multi_targeted(attack: Callable, model: Callable, x: np.ndarray, y: np.ndarray,
                   rank: Callable[[np.ndarray, np.ndarray], np.ndarray] = _broken_or_least_true,
                   **params: Any) -> np.ndarray:
    """mulA: one targeted ``attack`` towards every label but the true one, y_t = (y + t) mod C for
    t = 1..C-1; a sample is broken if ANY of them makes the model wrong (paper, appendix
    "Robustness evaluation metrics").

    Targets are tried in order of t; each sample keeps the candidate ``rank(logits, y)`` scores
    lowest, and a sample whose best score is negative (by default: broken) is not attacked again.
    So each sample gets its first successful targeted x_adv or, if none succeeds, the candidate with
    the lowest model probability of the true class.

    :param attack: a targeted-capable adapter of this module (``pgd``, ``bim``, ``mim``, ...).
    :param model: callable, float32 NHWC images in [0, 1] -> logits (C classes).
    :param x: numpy float32 batch of clean images.
    :param y: int64 true labels.
    :param rank: (candidate logits, y) -> a score per sample, lower is better, negative is done
        (attacks/detector_aware.py ranks by "wrong and below the detector's threshold").
    :param params: the attack's own parameters (eps, eps_iter, nb_iter, ...).
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1].
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    x_adv = x.copy()
    if len(x) == 0:
        return x_adv
    num_classes = int(model(tf.constant(x[:1])).shape[-1])
    best = np.full(len(x), np.inf)
    for t in range(1, num_classes):
        idx = np.flatnonzero(~(best < 0))
        if idx.size == 0:
            break
        cand = attack(model, x[idx], y[idx], targeted=True,
                      y_target=(y[idx] + t) % num_classes, **params)
        score = rank(model(tf.constant(cand)).numpy(), y[idx])
        take = score < best[idx]
        x_adv[idx[take]] = cand[take]
        best[idx[take]] = score[take]
    return x_adv


def _multi_targeted_form(attack: Callable) -> Callable:
    def mul_attack(model: Callable, x: np.ndarray, y: np.ndarray, **params: Any) -> np.ndarray:
        return multi_targeted(attack, model, x, y, **params)

    mul_attack.__name__ = mul_attack.__qualname__ = f"mul_{attack.__name__}"
    mul_attack.__doc__ = (f"Multiple-targeted {attack.__name__.upper()}: "
                          f"``multi_targeted({attack.__name__}, model, x, y, **params)``.")
    return mul_attack


mul_pgd = _multi_targeted_form(pgd)
mul_bim = _multi_targeted_form(bim)
mul_mim = _multi_targeted_form(mim)
