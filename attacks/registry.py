"""Attack names -> adapters, and the one entry point that runs them.

Usage::

    from attacks import registry
    params = registry.default_params("pgd", "cifar10", arch="resnet20")  # nb_iter=250
    x_adv = registry.run("pgd", model, x, y, **params)
    n = registry.default_n_samples("spsa")                                 # 1000

``ATTACKS`` maps each name of ``attacks.settings.ATTACK_NAMES`` to its adapter (DESIGN.md contracts 6
and 7); ``get(name)``, ``run(name, model, x, y, **params)`` and ``run_detailed``, which also returns
the per-sample details an attack has (AutoAttack: the sub-attack that broke each sample). The
settings (names, ε and η per data set, parameters, sample counts) live in ``attacks.settings`` and
are re-exported here.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from attacks import autoattack, brendel_bethge, cascade, gradient, spsa
from attacks.settings import (  # noqa: F401 - re-exported: the registry's users read them here
    ATTACK_NAMES, DEFAULT_ATTACKS, EPSILONS, MUL_NB_ITER, NB_ITER, PAPER_ATTACKS, RESTARTS, STEP_ATTACKS,
    default_n_samples, default_params)

# --------------------------------------------------------------------------------------------------
# 1. Names
# --------------------------------------------------------------------------------------------------

ATTACKS: dict[str, Callable[..., np.ndarray]] = {
    "fgsm": gradient.fgsm,
    "pgd": gradient.pgd,
    "pgd_margin": gradient.pgd_margin,
    "pgd_margin_restarts": gradient.pgd_margin_restarts,
    "bim": gradient.bim,
    "mim": gradient.mim,
    "mul_pgd": gradient.mul_pgd,
    "mul_bim": gradient.mul_bim,
    "mul_mim": gradient.mul_mim,
    "spsa": spsa.spsa,
    "bb_pgd1": functools.partial(brendel_bethge.brendel_bethge, start="pgd1"),
    "bb_pgd2": functools.partial(brendel_bethge.brendel_bethge, start="pgd2"),
    "autoattack": autoattack.autoattack,
    "cascade": cascade.cascade,
}
assert tuple(ATTACKS) == ATTACK_NAMES, "attacks.settings.ATTACK_NAMES and the adapters must agree"

# --------------------------------------------------------------------------------------------------
# 2. Look-up and dispatch
# --------------------------------------------------------------------------------------------------


def get(name: str) -> Callable[..., np.ndarray]:
    """The adapter ``attack(model, x, y, **params) -> x_adv`` called ``name``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name]


def run(name: str, model: Callable, x: np.ndarray, y: np.ndarray, **params: Any) -> np.ndarray:
    """Run attack ``name`` on one batch: ``get(name)(model, x, y, **params)``."""
    return get(name)(model, x, y, **params)


def run_detailed(name: str, model: Callable, x: np.ndarray, y: np.ndarray,
                 **params: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``run``, and per-sample details where the attack reports them: standard AutoAttack and the
    cascade give ``broken_by`` (the stage that broke each sample: ``autoattack.autoattack_stages``,
    ``cascade.cascade_stages``), the other attacks none ({})."""
    if name == "autoattack" and params.get("version") == "standard" and not params.get("attacks"):
        x_adv, broken_by = autoattack.autoattack_stages(
            model, x, y, **{k: v for k, v in params.items() if k not in ("version", "attacks")})
        return x_adv, {"broken_by": broken_by}
    if name == "cascade":
        x_adv, broken_by = cascade.cascade_stages(model, x, y, **params)
        return x_adv, {"broken_by": broken_by}
    return run(name, model, x, y, **params), {}
