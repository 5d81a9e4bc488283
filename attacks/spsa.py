"""SPSA (Uesato et al. 2018): cleverhans 4.0.0's own ``cleverhans.tf2.attacks.spsa.spsa``, made to
run under Keras 3 by a small compatibility shim.

Usage::

    from attacks.spsa import spsa
    x_adv = spsa(model, x, y, eps=8 / 255, nb_iter=50)

Parts, top to bottom:

1. ``keras3_spsa_compat()``: a context manager that makes cleverhans' ``SPSAAdam`` work under
   Keras 3 (what breaks and why is below), undone on exit.
2. ``spsa``: the adapter. cleverhans' SPSA takes one image at a time, so it loops over the batch;
   the per-sample attack is one ``tf.function`` per (model, static parameters), traced once.

Why a shim. ``SPSAAdam`` subclasses ``tf.optimizers.Adam``, which is Keras 3's ``Adam`` here, but
only to hold four hyper-parameters: it computes its own SPSA gradient estimate and applies its own
functional Adam update (``_apply_gradients`` reads ``self.lr``, ``self.beta_1``, ``self.beta_2``,
``self.epsilon``; the state ``t, m, u`` lives in ``init_state``). Against Keras 3 it fails twice:

* ``SPSAAdam.__init__`` calls ``super().__init__(lr=lr)``; Keras 3 raises
  ``ValueError: Argument(s) not recognized: {'lr': ...}`` (the argument is ``learning_rate`` and
  there is no ``.lr`` attribute any more).
* Keras 3 optimizers create ``tf.Variable`` s (``iterations``, ``learning_rate``) in ``__init__``.
  ``spsa`` builds a new ``SPSAAdam`` on every call, so the attack cannot run inside a
  ``tf.function`` ("tf.function only supports singleton tf.Variables created on the first call");
  eagerly, each of the ``nb_iter`` steps pays Python dispatch (about 6x slower on a small CNN).

The shim swaps ``SPSAAdam``'s base class for ``_AdamHyperparameters``, a plain holder of exactly
the four values it reads (Keras' ``Adam`` defaults, which ``SPSAAdam`` inherited), for the
duration of the ``with`` block. Everything SPSA does (the ±δ Rademacher samples, the margin loss,
the projection, the early stop) remains cleverhans' code.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Callable, Iterator, Optional

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import spsa as _cleverhans_spsa

_SPSAAdam = _cleverhans_spsa.SPSAAdam

# --------------------------------------------------------------------------------------------------
# 1. The Keras 3 shim
# --------------------------------------------------------------------------------------------------


class _AdamHyperparameters:
    """What ``SPSAAdam`` needs from its optimizer base: ``lr``, ``beta_1``, ``beta_2``, ``epsilon``.

    No ``tf.Variable`` is created, so ``SPSAAdam`` can be built inside a ``tf.function``.
    """

    def __init__(self, lr: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        self.lr = lr
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon


_ORIGINAL_BASES = _SPSAAdam.__bases__  # (keras.optimizers.Adam,)
_shim_lock = threading.RLock()
_shim_depth = 0


@contextlib.contextmanager
def keras3_spsa_compat() -> Iterator[None]:
    """Within the block, cleverhans' ``SPSAAdam`` derives from ``_AdamHyperparameters`` instead of
    Keras 3's ``Adam`` (see the module docstring); on exit its original base is restored.
    Re-entrant; nested or concurrent blocks share one patch."""
    global _shim_depth
    with _shim_lock:
        if _shim_depth == 0:
            _SPSAAdam.__bases__ = (_AdamHyperparameters,)
        _shim_depth += 1
    try:
        yield
    finally:
        with _shim_lock:
            _shim_depth -= 1
            if _shim_depth == 0:
                _SPSAAdam.__bases__ = _ORIGINAL_BASES


# --------------------------------------------------------------------------------------------------
# 2. The adapter
# --------------------------------------------------------------------------------------------------

# model -> {static params: tf.function(x[1,H,W,C], y[1]) -> x_adv}; see attacks.gradient.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _compiled_spsa(model: Callable, image_shape: tuple[int, ...], **static: Any) -> Callable:
    per_model = _COMPILED.setdefault(model, {})
    key = (tuple(int(d) for d in image_shape), tuple(sorted(static.items())))
    if key not in per_model:
        model_ref = weakref.ref(model)

        def model_fn(z):
            # cleverhans' margin loss multiplies the logits by a float32 one-hot mask.
            return tf.cast(model_ref()(z), tf.float32)

        def run(x, y):
            return _cleverhans_spsa.spsa(model_fn, x, y, clip_min=0.0, clip_max=1.0, **static)

        per_model[key] = tf.function(run, input_signature=[
            tf.TensorSpec([1, *key[0]], tf.float32), tf.TensorSpec([1], tf.int64)])
    return per_model[key]


def spsa(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, nb_iter: int = 50,
         learning_rate: float = 0.01, delta: float = 0.01, spsa_samples: int = 128,
         spsa_iters: int = 1, early_stop_loss_threshold: Optional[float] = None) -> np.ndarray:
    """SPSA attack: Adam on a gradient estimated from ``spsa_samples`` ±δ perturbations of the
    margin loss (highest other logit minus true logit), projected onto the ε-ball and [0, 1].
    Gradient-free, so it does not rely on the model's gradients.

    :param model: callable, float32 NHWC images in [0, 1] -> logits.
    :param x: numpy float32 batch of clean images (attacked one at a time).
    :param y: int64 true labels.
    :param eps: L∞ radius ε.
    :param nb_iter: optimisation steps (the paper: 50).
    :param learning_rate: Adam's step size.
    :param delta: size δ of the SPSA finite-difference perturbation.
    :param spsa_samples: model evaluations per gradient estimate (even; mirrored ±δ pairs).
    :param spsa_iters: gradient estimates averaged per step.
    :param early_stop_loss_threshold: stop a sample once its margin loss falls below this
        (None: always run ``nb_iter`` steps, cleverhans' default).
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1].
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    fn = _compiled_spsa(model, x.shape[1:], eps=float(eps), nb_iter=int(nb_iter),
                        learning_rate=float(learning_rate), delta=float(delta),
                        spsa_samples=int(spsa_samples), spsa_iters=int(spsa_iters),
                        early_stop_loss_threshold=early_stop_loss_threshold)
    x_adv = np.empty_like(x)
    with keras3_spsa_compat():  # needed while tracing (first call); harmless afterwards
        for i in range(len(x)):
            x_adv[i] = fn(tf.constant(x[i:i + 1]), tf.constant(y[i:i + 1]))[0].numpy()
    return x_adv
