"""AutoAttack (Croce & Hein 2020), the official code (``pyautoattack``, PyTorch), on a TF model.

Usage::

    from attacks.autoattack import autoattack, autoattack_stages
    x_adv = autoattack(model, x, y, eps=8 / 255)          # standard: APGD-CE, APGD-T, FAB-T, Square
    x_adv, broken_by = autoattack_stages(model, x, y, eps=8 / 255)   # and which sub-attack broke each

Parts, top to bottom:

1. ``tf_to_torch(model)``: a ``torch.nn.Module`` whose forward runs the TF model (NCHW torch ->
   NHWC TF -> logits) and whose backward is TF's vector-Jacobian product, through a
   ``torch.autograd.Function``; both TF sides are ``tf.function`` s traced once per model. The
   official ``utils_tf2.ModelAdapter`` is not used: it moves every tensor to CUDA (``.cuda()``),
   so it cannot run on a CPU host, and this version of AutoAttack no longer takes an
   ``is_tf_model`` switch.
2. ``autoattack_stages``: the standard version one sub-attack at a time, each on the points still
   robust (exactly what ``run_standard_evaluation`` does inside), so that the robust accuracy after
   each sub-attack, as AutoAttack's users read it in its log, is returned rather than only logged.
3. ``autoattack``: the adapter. Torch and pyautoattack are imported on first call; where either is
   missing the call raises ``AttackUnavailable`` (a suite marks AutoAttack as skipped) and importing
   this module still works.

AutoAttack decides success on the model's predictions and returns x for the points it did not break
(and for those already misclassified); its x_adv is returned as is.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from attacks.errors import AttackUnavailable

INSTALL_HINT = "pip install -r requirements-autoattack.txt"


def _require() -> tuple[Any, Any]:
    """(torch, pyautoattack.AutoAttack), or AttackUnavailable naming the install command."""
    try:
        import torch
        from pyautoattack import AutoAttack
    except ImportError as err:
        raise AttackUnavailable(
            f"AutoAttack needs torch and pyautoattack ({err}); install them with: {INSTALL_HINT}"
        ) from err
    return torch, AutoAttack


# --------------------------------------------------------------------------------------------------
# 1. The TF -> torch bridge
# --------------------------------------------------------------------------------------------------

# model -> (forward, vjp) tf.functions, traced once per model and image shape.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _tf_functions(model: Callable, image_shape: tuple[int, ...]) -> tuple[Callable, Callable]:
    per_model = _COMPILED.setdefault(model, {})
    if image_shape not in per_model:
        model_ref = weakref.ref(model)
        spec = tf.TensorSpec([None, *image_shape], tf.float32)

        def forward(x):
            return model_ref()(x)

        def vjp(x, grad_logits):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model_ref()(x)
            return tape.gradient(logits, x, output_gradients=grad_logits)

        per_model[image_shape] = (
            tf.function(forward, input_signature=[spec]),
            tf.function(vjp, input_signature=[spec, tf.TensorSpec([None, None], tf.float32)]))
    return per_model[image_shape]


def _to_nhwc(x) -> tf.Tensor:
    """An NCHW torch tensor as an NHWC TF tensor (through host memory)."""
    return tf.constant(x.detach().cpu().numpy().transpose(0, 2, 3, 1))


def _hwc(x) -> tuple[int, ...]:
    return (int(x.shape[2]), int(x.shape[3]), int(x.shape[1]))


@functools.lru_cache(maxsize=None)
def _bridge_class() -> type:
    """``TFModule``, defined on first use because torch is optional."""
    torch, _ = _require()

    class TFFunction(torch.autograd.Function):
        """Logits of a TF model; backward is TF's vector-Jacobian product."""

        @staticmethod
        def forward(ctx, x, model):
            ctx.save_for_backward(x)
            ctx.model = model
            forward_fn, _ = _tf_functions(model, _hwc(x))
            return torch.from_numpy(np.array(forward_fn(_to_nhwc(x)), np.float32)).to(x.device)

        @staticmethod
        def backward(ctx, grad_out):
            # Recomputes the forward in TF: FAB calls backward several times on one forward.
            (x,) = ctx.saved_tensors
            _, vjp_fn = _tf_functions(ctx.model, _hwc(x))
            grad = vjp_fn(_to_nhwc(x), tf.constant(grad_out.detach().cpu().numpy()))
            grad = np.array(grad, np.float32).transpose(0, 3, 1, 2)
            return torch.from_numpy(np.ascontiguousarray(grad)).to(grad_out.device), None

    class TFModule(torch.nn.Module):
        """A TF model (NHWC images -> logits) as a torch module on NCHW images."""

        def __init__(self, model: Callable):
            super().__init__()
            self.tf_model = model

        def forward(self, x):
            return TFFunction.apply(x.float(), self.tf_model)

    return TFModule


def tf_to_torch(model: Callable) -> "Any":
    """The TF ``model`` (float32 NHWC in [0, 1] -> logits) as a ``torch.nn.Module`` on NCHW tensors,
    differentiable through TF (``tape.gradient(logits, x, output_gradients=grad_out)``).

    :raises AttackUnavailable: torch is not installed.
    """
    return _bridge_class()(model)


# --------------------------------------------------------------------------------------------------
# 2. Standard AutoAttack, sub-attack by sub-attack
# --------------------------------------------------------------------------------------------------

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")   # the order of the standard version
NOT_BROKEN = -1


def _adversary(model: Callable, eps: float, version: str, attacks: Optional[list[str]],
               seed: Optional[int]) -> tuple[Any, Any, str]:
    torch, AutoAttack = _require()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch, AutoAttack(tf_to_torch(model), norm="Linf", eps=float(eps), version=version,
                             attacks=attacks, seed=seed, device=device), device


def _run(torch: Any, adversary: Any, device: str, x: np.ndarray, y: np.ndarray,
         batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x_adv, the model's labels on x_adv) from ``run_standard_evaluation``; a point it does not
    break keeps x and its clean label, so a label != y marks every misclassified point."""
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
    y_t = torch.tensor(np.asarray(y, np.int64), device=device)
    # This version returns (x_adv, y_adv) where the original returned x_adv alone.
    x_adv, y_adv = adversary.run_standard_evaluation(x_nchw, y_t, batch_size=batch_size)
    return (np.ascontiguousarray(x_adv.detach().cpu().numpy().transpose(0, 2, 3, 1), np.float32),
            y_adv.detach().cpu().numpy())


def autoattack_stages(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, seed: Optional[int] = 0,
                      batch_size: int = 500, stages: Optional[tuple[str, ...]] = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Standard L∞ AutoAttack, one sub-attack of ``stages`` (default ``STANDARD_ATTACKS``, all four)
    at a time on the points the earlier ones left robust, with the standard version's settings and
    seed: the same procedure and x_adv as ``run_standard_evaluation`` with those sub-attacks.

    :return: (x_adv, broken_by): broken_by[i] is the index in ``stages`` of the sub-attack
        that first misclassified sample i (0 when x itself is misclassified, as AutoAttack counts
        it: it never attacks those), ``NOT_BROKEN`` if none did. The robust accuracy after
        sub-attack s is ``mean((broken_by == NOT_BROKEN) | (broken_by > s))``.
    :raises AttackUnavailable: torch or pyautoattack is not installed.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    x_adv, broken_by = x.copy(), np.full(len(x), NOT_BROKEN, np.int8)
    if len(x) == 0:
        return x_adv, broken_by
    torch, adversary, device = _adversary(model, eps, "standard", None, seed)
    for stage, name in enumerate(stages or STANDARD_ATTACKS):
        left = np.flatnonzero(broken_by == NOT_BROKEN)
        if not left.size:
            break
        adversary.attacks_to_run = [name]
        x_adv[left], labels = _run(torch, adversary, device, x[left], y[left], batch_size)
        broken_by[left[labels != y[left]]] = stage   # at stage 0 this includes the clean errors
    return x_adv, broken_by


def robust_after_each(broken_by: np.ndarray) -> dict[str, float]:
    """The robust accuracy after each sub-attack (cumulative, as AutoAttack logs it) from
    ``autoattack_stages``' broken_by: {"apgd-ce": ..., "apgd-t": ..., "fab-t": ..., "square": ...}."""
    broken_by = np.asarray(broken_by)
    return {name: float(np.mean((broken_by == NOT_BROKEN) | (broken_by > stage)))
            for stage, name in enumerate(STANDARD_ATTACKS)}


# --------------------------------------------------------------------------------------------------
# 3. The adapter
# --------------------------------------------------------------------------------------------------


def autoattack(model: Callable, x: np.ndarray, y: np.ndarray, eps: float,
               version: str = "standard", attacks: Optional[list[str]] = None,
               seed: Optional[int] = 0, batch_size: int = 500) -> np.ndarray:
    """AutoAttack, L∞, from the official code.

    :param model: callable, float32 NHWC images in [0, 1] -> logits.
    :param x: numpy float32 batch of clean images.
    :param y: int64 true labels.
    :param eps: L∞ radius ε.
    :param version: "standard" (APGD-CE, APGD-T, FAB-T, Square; the paper's choice), "plus",
        "rand", or "custom" with ``attacks``.
    :param attacks: with version="custom", the attacks to run, e.g. ["apgd-ce"].
    :param seed: AutoAttack's seed (None: the clock).
    :param batch_size: samples per AutoAttack batch.
    :return: x_adv, numpy float32, inside the ε-ball and [0, 1]; x for the points not broken.
    :raises AttackUnavailable: torch or pyautoattack is not installed.
    """
    if version == "standard" and attacks is None:
        return autoattack_stages(model, x, y, eps, seed, batch_size)[0]
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        return x.copy()
    torch, adversary, device = _adversary(model, eps, version, attacks, seed)
    return _run(torch, adversary, device, x, y, batch_size)[0]
