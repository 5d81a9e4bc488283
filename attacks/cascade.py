"""The white-box worst case as a cascade: each attack runs only on the samples every earlier one left
robust, the strongest last (issue "The robustness claim, decided"; DESIGN.md, contract 11).

Usage::

    from attacks.cascade import cascade, cascade_stages
    x_adv = cascade(model, x, y, eps=0.1, eps_iter=0.00625, nb_iter=40, mul_eps_iter=0.0125, mul_nb_iter=20)
    x_adv, broken_by = cascade_stages(model, x, y, eps=0.1, ...)   # and which stage broke each sample

The stages (``STAGES``): cleverhans PGD on the cross-entropy, PGD on the CW margin (a loss that does
not saturate), multi-targeted PGD (a targeted PGD towards every wrong class), then the official
APGD-CE and APGD-T (9 target classes) of AutoAttack's standard version. Running each on the
survivors only gives the per-sample worst case of the five at a fraction of their separate cost
(AutoAttack's own run_standard_evaluation does the same), and the per-stage counts say which
attack decided. The gradient-free checks (SPSA, Square, FAB-T, B&B) stay separate attacks of the
suite: they test this cascade for gradient masking on their own subsets.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from attacks import autoattack, gradient

STAGES = ("pgd", "pgd_margin", "mul_pgd", "apgd-ce", "apgd-t")
NOT_BROKEN = autoattack.NOT_BROKEN
APGD_ITER = 100   # AutoAttack's standard version: APGD-CE's steps, and APGD-T's for each of its 9 targets


def stage_ks(nb_iter: int, mul_nb_iter: int) -> dict[str, int]:
    """The k of each stage, in their order (mul-PGD's and APGD-T's for each target class): what the
    cascade's row names (studies.results)."""
    return {"pgd": nb_iter, "pgd_margin": nb_iter, "mul_pgd": mul_nb_iter, "apgd-ce": APGD_ITER, "apgd-t": APGD_ITER}


def _labels(model: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(model(tf.constant(x[s:s + batch_size]))).argmax(-1)
                           for s in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, np.int64)


def cascade_stages(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float, nb_iter: int,
                   mul_eps_iter: float, mul_nb_iter: int, seed: Optional[int] = 0, batch_size: int = 500,
                   stages: tuple[str, ...] = STAGES) -> tuple[np.ndarray, np.ndarray]:
    """Each stage of ``stages`` on the samples the earlier ones left robust.

    :param eps_iter, nb_iter: η and k of the PGD stages (pgd, pgd_margin).
    :param mul_eps_iter, mul_nb_iter: η and k of multi-targeted PGD (per target).
    :param seed: AutoAttack's seed (its stages' random starts).
    :return: (x_adv, broken_by): broken_by[i] is the index in ``stages`` of the stage that first
        misclassified sample i (0 when x itself is misclassified: never attacked), ``NOT_BROKEN``
        if none did; x_adv is that stage's example (x where none broke it).
    :raises AttackUnavailable: an AutoAttack stage without torch or pyautoattack installed.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    x_adv, broken_by = x.copy(), np.full(len(x), NOT_BROKEN, np.int8)
    broken_by[_labels(model, x, batch_size) != y] = 0
    pgd_stages = {"pgd": (gradient.pgd, eps_iter, nb_iter), "pgd_margin": (gradient.pgd_margin, eps_iter, nb_iter),
                  "mul_pgd": (gradient.mul_pgd, mul_eps_iter, mul_nb_iter)}
    for stage, name in enumerate(stages):
        left = np.flatnonzero(broken_by == NOT_BROKEN)
        if not left.size:
            break
        if name in pgd_stages:
            fn, step, k = pgd_stages[name]
            cand = fn(model, x[left], y[left], eps=eps, eps_iter=step, nb_iter=k)
            broke = _labels(model, cand, batch_size) != y[left]
        else:
            cand, by = autoattack.autoattack_stages(model, x[left], y[left], eps, seed, batch_size, stages=(name,))
            broke = by != NOT_BROKEN
        x_adv[left[broke]] = cand[broke]
        broken_by[left[broke]] = stage
    return x_adv, broken_by


def cascade(model: Callable, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float, nb_iter: int,
            mul_eps_iter: float, mul_nb_iter: int, seed: Optional[int] = 0, batch_size: int = 500) -> np.ndarray:
    """The adapter (DESIGN.md, contract 6): ``cascade_stages``' x_adv."""
    return cascade_stages(model, x, y, eps, eps_iter, nb_iter, mul_eps_iter, mul_nb_iter, seed, batch_size)[0]
