"""The example image of Figs 1 and 5-8 and the attack that makes its adversarial twin.

Usage::

    from figures import example
    eps, eps_iter = example.attack_defaults("fashion_mnist", None, None)
    idx, x_adv = example.pick_example(ens, x, y, eps, eps_iter, nb_iter=20)
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from cce_tf.cli_flags import UsageError
from eval import batches


def pick_example(ens, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float, nb_iter: int,
                 index: Optional[int] = None, search: int = 256,
                 batch_size: int = 500) -> tuple[int, np.ndarray]:
    """(index, x_adv of that image) for Figs 1 and 5-8: ``index`` if given, else the first of the
    first ``search`` test images that the ensemble gets right and whose PGD example (against the
    whole ensemble, true labels) fools it; else the first one it gets right; else image 0."""
    if index is not None:
        if not 0 <= index < len(x):
            raise UsageError(f"--index must be in [0, {len(x)}), got {index}")
        sl = slice(index, index + 1)
        return index, batches.craft("pgd", ens, x[sl], y[sl], batch_size, eps=eps,
                                        eps_iter=eps_iter, nb_iter=nb_iter)[0]
    xs, ys = x[:search], y[:search]
    x_adv = batches.craft("pgd", ens, xs, ys, batch_size, eps=eps, eps_iter=eps_iter,
                              nb_iter=nb_iter)
    right = batches.predict_labels(ens, xs, batch_size) == ys
    fooled = batches.predict_labels(ens, x_adv, batch_size) != ys
    for candidates in (np.flatnonzero(right & fooled), np.flatnonzero(right), np.array([0])):
        if candidates.size:
            return int(candidates[0]), x_adv[int(candidates[0])]
    raise AssertionError("unreachable")


def attack_defaults(dataset: str, eps: Optional[float], eps_iter: Optional[float]) -> tuple[float, float]:
    """(ε, η) of the data set's PGD (Table 6's setting) unless given; UsageError if η > ε."""
    from eval.analyses.transferability import attack_params

    p = attack_params(dataset, eps, eps_iter)
    return p["eps"], p["eps_iter"]
