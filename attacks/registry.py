"""Attack names -> adapters, and the paper's parameters per data set.

Usage::

    from attacks import registry
    params = registry.default_params("pgd", "cifar10", arch="resnet20")  # nb_iter=250
    x_adv = registry.run("pgd", model, x, y, **params)
    n = registry.default_n_samples("spsa")                                 # 1000

Parts:

1. ``ATTACKS`` (name -> adapter, DESIGN.md contracts 6 and 7), ``PAPER_ATTACKS`` (the paper's
   evaluation list, in its table order) and ``DEFAULT_ATTACKS`` (those and ``pgd_margin``).
2. ``EPSILONS``: ε and η per data set.
3. ``default_params(name, dataset, arch)`` and ``default_n_samples(name)``.
4. ``get(name)``, ``run(name, model, x, y, **params)`` and ``run_detailed``, which also returns the
   per-sample details an attack has (AutoAttack: the sub-attack that broke each sample).

The paper's settings ("Attack Setting" and Tables 3-5, 10): CIFAR-10 ε=8/255, η=2/255; CIFAR-100
ε=0.01, η=0.001; PGD/BIM/MIM k=100 on the CNN, 250 on ResNet-20; mul-PGD/BIM/MIM k=20; SPSA 50
steps; B&B 100 steps × 3 repeats from PGD1 / PGD2; AutoAttack standard. The full test set for the
gradient attacks, the first 1000 test samples for SPSA, B&B and AutoAttack. The paper has no
(Fashion-)MNIST attack settings; these follow common practice: MNIST ε=0.3, η=0.01 (Madry et al.
2018), Fashion-MNIST ε=0.1, η=0.01 (the usual Fashion-MNIST radius: its images are less binary than
MNIST's, and 0.3 erases most of their texture).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import numpy as np

from attacks import autoattack, brendel_bethge, gradient, spsa

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
}

PAPER_ATTACKS = ("pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim", "spsa", "bb_pgd1", "bb_pgd2",
                 "autoattack")
# The suite's default: the paper's, and PGD on the margin loss, which the paper's cross-entropy-only
# protocol lacks (a loss that does not saturate; Carlini et al. 2019).
DEFAULT_ATTACKS = PAPER_ATTACKS[:3] + ("pgd_margin",) + PAPER_ATTACKS[3:]

_GRADIENT = ("fgsm", "pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")

# --------------------------------------------------------------------------------------------------
# 2. ε and η per data set
# --------------------------------------------------------------------------------------------------

EPSILONS: dict[str, dict[str, float]] = {
    "cifar10": {"eps": 8 / 255, "eps_iter": 2 / 255},
    "cifar100": {"eps": 0.01, "eps_iter": 0.001},
    "fashion_mnist": {"eps": 0.1, "eps_iter": 0.01},
    "mnist": {"eps": 0.3, "eps_iter": 0.01},
}

# k for PGD / BIM / MIM per member architecture (cce_tf.models.ARCHS).
NB_ITER = {"cnn": 100, "resnet20": 250}
MUL_NB_ITER = 20
RESTARTS = 5   # random starts of pgd_margin_restarts

# --------------------------------------------------------------------------------------------------
# 3. Default parameters and sample counts
# --------------------------------------------------------------------------------------------------


# The attacks whose k is the paper's k = 100 / 250, and so what an override of k names.
STEP_ATTACKS = ("pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim")


def default_params(name: str, dataset: str, arch: str = "cnn", eps: Optional[float] = None,
                   eps_iter: Optional[float] = None, nb_iter: Optional[int] = None,
                   mul_nb_iter: Optional[int] = None) -> dict[str, Any]:
    """The paper's parameters of attack ``name`` on ``dataset`` for members of ``arch``.

    B&B's start attacks are scaled to the data set: PGD1 runs at (ε, η) and PGD2 at (2ε, η), k=20,
    which on CIFAR-10 are exactly the paper's PGD1 (8/255, 2/255) and PGD2 (16/255, 2/255).

    Overrides: ``eps`` moves every radius defined relative to ε (B&B's start radii too) and, unless
    ``eps_iter`` is given, every step size keeps its ratio to ε; ``eps_iter`` sets η of the attacks
    that have one (B&B's start PGD included); ``nb_iter`` sets k of ``STEP_ATTACKS`` only and
    ``mul_nb_iter`` k of the multi-targeted attacks (SPSA's 50 steps are a setting of their own).

    :param name: one of ``ATTACKS``.
    :param dataset: one of ``EPSILONS`` (cifar10, cifar100, fashion_mnist, mnist).
    :param arch: member architecture, "cnn" or "resnet20" (sets PGD / BIM / MIM's k).
    :return: keyword arguments for ``run(name, model, x, y, **params)``.
    """
    get(name)
    if dataset not in EPSILONS:
        raise ValueError(f"unknown data set {dataset!r}: choose one of {', '.join(EPSILONS)}")
    if arch not in NB_ITER:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(NB_ITER)}")
    base = EPSILONS[dataset]
    eps = base["eps"] if eps is None else float(eps)
    if eps_iter is None:
        eps_iter = base["eps_iter"] * eps / base["eps"]
    k = NB_ITER[arch] if nb_iter is None else int(nb_iter)
    if name == "fgsm":
        return {"eps": eps}
    if name in STEP_ATTACKS:
        extra = {"restarts": RESTARTS} if name == "pgd_margin_restarts" else {}
        return {"eps": eps, "eps_iter": eps_iter, "nb_iter": k, **extra}
    if name.startswith("mul_"):
        return {"eps": eps, "eps_iter": eps_iter, "nb_iter": MUL_NB_ITER if mul_nb_iter is None else int(mul_nb_iter)}
    if name == "spsa":
        return {"eps": eps, "nb_iter": 50, "learning_rate": 0.01, "delta": 0.01,
                "spsa_samples": 128, "spsa_iters": 1, "early_stop_loss_threshold": None}
    if name in ("bb_pgd1", "bb_pgd2"):
        scale = 1 if name == "bb_pgd1" else 2
        return {"eps": eps, "start": name[3:], "start_eps": scale * eps, "start_eps_iter": eps_iter,
                "start_nb_iter": 20, "steps": 100, "repeats": 3}
    return {"eps": eps, "version": "standard", "seed": 0}  # autoattack


def default_n_samples(name: str) -> Optional[int]:
    """How many test samples the paper attacks with ``name``: None (the full test set) for the
    gradient attacks, 1000 for SPSA, B&B and AutoAttack."""
    get(name)
    return None if name in _GRADIENT else 1000


# --------------------------------------------------------------------------------------------------
# 4. Look-up and dispatch
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
    """``run``, and per-sample details where the attack reports them: standard AutoAttack gives
    ``broken_by`` (``autoattack.autoattack_stages``), the other attacks none ({})."""
    if name == "autoattack" and params.get("version") == "standard" and not params.get("attacks"):
        x_adv, broken_by = autoattack.autoattack_stages(
            model, x, y, **{k: v for k, v in params.items() if k not in ("version", "attacks")})
        return x_adv, {"broken_by": broken_by}
    return run(name, model, x, y, **params), {}
