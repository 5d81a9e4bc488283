"""The paper's attack settings per data set, in one place, read by every tool: attack names, ε and η,
k per architecture, each attack's parameters and sample count, and the analyses' settings (detection
step, ε sweep, black-box radii). Pure Python (no TensorFlow), so CLIs check their flags against it
before TensorFlow starts; ``attacks.registry`` maps the names to the adapters.

Usage::

    from attacks import settings
    params = settings.default_params("pgd", "cifar10", arch="resnet20")  # nb_iter=250
    n = settings.default_n_samples("spsa")                               # 1000
    s = settings.for_dataset("cifar10")     # eps 8/255, eps_iter 2/255, detection_eps_iter 1/255, ...

The paper's settings ("Attack Setting" and Tables 3-5, 10): CIFAR-10 ε=8/255, η=2/255; CIFAR-100
ε=0.01, η=0.001; PGD/BIM/MIM k=100 on the CNN, 250 on ResNet-20; mul-PGD/BIM/MIM k=20; SPSA 50
steps; B&B 100 steps × 3 repeats from PGD1 / PGD2; AutoAttack standard. The full test set for the
gradient attacks, the first 1000 test samples for SPSA, B&B and AutoAttack. The paper has no
(Fashion-)MNIST attack settings; these follow common practice: MNIST ε=0.3, η=0.01 (Madry et al.
2018), Fashion-MNIST ε=0.1, η=0.01 (the usual Fashion-MNIST radius: its images are less binary than
MNIST's, and 0.3 erases most of their texture).

An ε given without η keeps the data set's η/ε ratio (``cce_tf.config.scaled_step``, the one rule of
every tool, training included).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from cce_tf.config import converging_step, scaled_step

# --------------------------------------------------------------------------------------------------
# 1. Names
# --------------------------------------------------------------------------------------------------

ATTACK_NAMES = ("fgsm", "pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd", "mul_bim",
                "mul_mim", "spsa", "bb_pgd1", "bb_pgd2", "autoattack", "cascade")
PAPER_ATTACKS = ("pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim", "spsa", "bb_pgd1", "bb_pgd2",
                 "autoattack")
# The suite's default: the paper's, and PGD on the margin loss, which the paper's cross-entropy-only
# protocol lacks (a loss that does not saturate; Carlini et al. 2019).
DEFAULT_ATTACKS = PAPER_ATTACKS[:3] + ("pgd_margin",) + PAPER_ATTACKS[3:]

_GRADIENT = ("fgsm", "pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim",
             "cascade")

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
    ``mul_nb_iter`` k of the multi-targeted attacks (SPSA's 50 steps are a setting of their own);
    the cascade takes both for its stages.
    A k shorter than the paper's, given without ``eps_iter``, raises η to 2.5 ε / k
    (``cce_tf.config.converging_step``): 10 steps of the default η could not cross the ball.

    :param name: one of ``ATTACKS``.
    :param dataset: one of ``EPSILONS`` (cifar10, cifar100, fashion_mnist, mnist).
    :param arch: member architecture, "cnn" or "resnet20" (sets PGD / BIM / MIM's k).
    :return: keyword arguments for ``run(name, model, x, y, **params)``.
    """
    check_name(name)
    if dataset not in EPSILONS:
        raise ValueError(f"unknown data set {dataset!r}: choose one of {', '.join(EPSILONS)}")
    if arch not in NB_ITER:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(NB_ITER)}")
    base = EPSILONS[dataset]
    eps = base["eps"] if eps is None else float(eps)
    step = scaled_step(eps, base["eps"], base["eps_iter"]) if eps_iter is None else float(eps_iter)

    def eta(k: int, default_k: int) -> float:  # a shortened k without an explicit η gets Madry's rule
        return converging_step(eps, step, k, default_k) if eps_iter is None else step

    k = NB_ITER[arch] if nb_iter is None else int(nb_iter)
    if name == "fgsm":
        return {"eps": eps}
    if name in STEP_ATTACKS:
        extra = {"restarts": RESTARTS} if name == "pgd_margin_restarts" else {}
        return {"eps": eps, "eps_iter": eta(k, NB_ITER[arch]), "nb_iter": k, **extra}
    if name.startswith("mul_"):
        k = MUL_NB_ITER if mul_nb_iter is None else int(mul_nb_iter)
        return {"eps": eps, "eps_iter": eta(k, MUL_NB_ITER), "nb_iter": k}
    if name == "spsa":
        return {"eps": eps, "nb_iter": 50, "learning_rate": 0.01, "delta": 0.01,
                "spsa_samples": 128, "spsa_iters": 1, "early_stop_loss_threshold": None}
    if name in ("bb_pgd1", "bb_pgd2"):
        scale = 1 if name == "bb_pgd1" else 2
        return {"eps": eps, "start": name[3:], "start_eps": scale * eps, "start_eps_iter": step,
                "start_nb_iter": 20, "steps": 100, "repeats": 3}
    if name == "cascade":  # its PGD stages at the suite's k, multi-targeted PGD at the mul k (attacks/cascade.py)
        mul_k = MUL_NB_ITER if mul_nb_iter is None else int(mul_nb_iter)
        return {"eps": eps, "eps_iter": eta(k, NB_ITER[arch]), "nb_iter": k,
                "mul_eps_iter": eta(mul_k, MUL_NB_ITER), "mul_nb_iter": mul_k, "seed": 0}
    return {"eps": eps, "version": "standard", "seed": 0}  # autoattack


def default_n_samples(name: str) -> Optional[int]:
    """How many test samples the paper attacks with ``name``: None (the full test set) for the
    gradient attacks, 1000 for SPSA, B&B and AutoAttack."""
    check_name(name)
    return None if name in _GRADIENT else 1000


def check_name(name: str) -> None:
    """ValueError unless ``name`` is one of ``ATTACK_NAMES``."""
    if name not in ATTACK_NAMES:
        raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ATTACK_NAMES)}")


# --------------------------------------------------------------------------------------------------
# 4. The analyses' settings
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """L∞ attack settings of the analyses for one data set.

    eps, eps_iter       the white-box / transferability PGD (Table 6: k = 20)
    detection_eps_iter  η of the detection attacks (Figs 3-4: 1/255 for CIFAR-10, i.e. ε/8)
    blackbox_eps        the ε list of the black-box matrix (Tables 12-13)
    sweep_factors       Fig 4's ε sweep as multiples of eps ({1,...,24}/255 for CIFAR-10)
    """

    eps: float
    eps_iter: float
    detection_eps_iter: float
    blackbox_eps: tuple[float, ...]
    sweep_factors: tuple[float, ...] = tuple(k / 8 for k in (1, 2, 4, 8, 12, 16, 20, 24))
    nb_iter: int = 20

    @property
    def sweep_eps(self) -> tuple[float, ...]:
        return tuple(self.eps * f for f in self.sweep_factors)


# Detection uses η = ε/8: the paper's 1/255 at ε = 8/255 (Figs 3-4). Black-box ε: Tables 12-13 use
# (ε, 1.5ε) on CIFAR-10 and (ε, 2ε) on CIFAR-100; the MNIST-like data sets follow CIFAR-10.
_BLACKBOX_EPS_FACTORS = {"cifar100": (1.0, 2.0)}


def for_dataset(dataset: str) -> AttackSettings:
    """The analyses' attack settings on ``dataset``; ValueError for a data set without them."""
    if dataset not in EPSILONS:
        raise ValueError(f"no attack settings for data set {dataset!r}: one of {', '.join(EPSILONS)}")
    eps, eps_iter = EPSILONS[dataset]["eps"], EPSILONS[dataset]["eps_iter"]
    factors = _BLACKBOX_EPS_FACTORS.get(dataset, (1.0, 1.5))
    return AttackSettings(eps, eps_iter, eps / 8, tuple(eps * f for f in factors))
