"""The paper's training settings per data set and architecture, and the method presets.

Usage::

    from cce_tf import config
    d = config.defaults("cifar100", "cnn")      # epochs, batch size, LR milestones, PGD
    milestones = config.scaled_milestones("cifar100", 90)          # [40, 60, 80]
    lr = config.learning_rate(45, d["learning_rate"], milestones)  # 1e-4
    method, lambda_pm, lambda_dm = config.resolve_method("cce-rm", None, None)
    dverge = config.dverge_defaults("cifar10")   # DVERGE's distillation: eps 0.07, step 0.007, 10 steps

Pure Python (no TensorFlow import), so CLIs check their flags in milliseconds.
Sources: the paper's 'Experimental Setting' and supplement ('Model architecture and training
setting'), and the official code where the paper is silent. The paper gives no MNIST-like
adversary; the choices below are documented in docs/settings.md. The ensemble-diversity baselines
(GAL, DVERGE, TRS) take their settings from their public PyTorch code, cited where each is defined.
"""
from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("cnn", "resnet20")
METHODS = ("nat", "adv", "adv-en", "adp", "cce", "gal", "dverge", "trs")
# Methods whose objective couples pairs of members: they need N >= 2.
PAIRWISE_METHODS = ("gal", "dverge", "trs")
DVERGE_VARIANTS = ("plain", "plus")
# Presets of the paper: CCE-Base (0, 0), CCE-RM (1, 1), CCE-DM (0, 5).
PRESETS = {"cce-base": (0.0, 0.0), "cce-rm": (1.0, 1.0), "cce-dm": (0.0, 5.0)}
METHOD_CHOICES = METHODS + tuple(PRESETS)
MAX_NB_ITER = 10_000   # more PGD steps per batch would make one epoch take days


@dataclass(frozen=True)
class PGDConfig:
    """The training PGD {k, eps, eta, L-inf} of the paper's 'Crafting Adversarial Examples for Defenders'.

    eps: L-inf radius in [0,1] pixel units (the lower end of the range when eps_max is set).
    eps_iter: step size eta (ignored when eps_max is set: then eta = eps / 10).
    nb_iter: number of steps k.
    eps_max: if set, eps is drawn from U(eps, eps_max) once per batch (ADP's ResNet setting).
    """
    eps: float
    eps_iter: float
    nb_iter: int
    eps_max: float | None = None

    def validate(self) -> None:
        # `not a <= x <= b` also refuses NaN; eps is in [0, 1] pixel units, so more than 1 is a typo.
        if not 0 < self.eps <= 1:
            raise ValueError(f"--eps must be in (0, 1], got {self.eps}")
        top = self.eps if self.eps_max is None else 1.0   # with eps_max, eta = eps / 10 instead
        if not 0 < self.eps_iter <= top:
            raise ValueError(f"--eps_iter must be in (0, {top}], got {self.eps_iter}")
        if not 1 <= self.nb_iter <= MAX_NB_ITER:
            raise ValueError(f"--nb_iter must be in 1..{MAX_NB_ITER}, got {self.nb_iter}")
        if self.eps_max is not None and not self.eps <= self.eps_max <= 1:
            raise ValueError(f"--eps_max must be in [eps={self.eps}, 1], got {self.eps_max}")



def scaled_step(eps: float, base_eps: float, base_eps_iter: float) -> float:
    """The step η for a radius ε given without one: the default setting's ratio η/ε kept. The one
    rule of every tool (training PGD, DVERGE's distillation, the evaluation attacks). At the default
    ε it is the default η exactly (0.025 × 0.1 / 0.1 is 0.025000000000000005 in floating point, and a
    run's stored settings must compare equal when it is resumed)."""
    return base_eps_iter if eps == base_eps else base_eps_iter * eps / base_eps


# Madry et al. (2018): k steps of η should cover at least 2.5 ε, so that a coordinate that starts on
# the wrong side of the ball can still reach the boundary. The paper's settings keep their own η at
# their own k (CIFAR-100's 10 steps of ε/10 among them); a budget that shortens k raises η to this.
MADRY_FACTOR = 2.5


def madry_step(eps: float, eps_iter: float, nb_iter: int) -> float:
    """``eps_iter`` raised to 2.5 ε / k where it is smaller (Madry et al.'s rule), and never above ε
    (cleverhans requires η <= ε)."""
    return min(eps, max(eps_iter, MADRY_FACTOR * eps / nb_iter))


def converging_step(eps: float, eps_iter: float, nb_iter: int, default_nb_iter: int) -> float:
    """The step η of a PGD of ``nb_iter`` steps whose setting has ``eps_iter`` at ``default_nb_iter``
    steps: unchanged at k >= the default; at a shorter k, ``madry_step``."""
    return eps_iter if nb_iter >= default_nb_iter else madry_step(eps, eps_iter, nb_iter)


LEARNING_RATE = 1e-3   # Adam, every data set
BATCH_SIZE = 64

# Adam's lr is multiplied by 0.1 at each milestone. The paper states 80/120/160 of 180 epochs for
# ResNet; the official code uses it for every CIFAR model. The paper gives no schedule for its
# 100 MNIST epochs: we decay at half and at three quarters of training.
_CIFAR = dict(epochs=180, milestones=(80, 120, 160))
_MNIST_LIKE = dict(epochs=100, milestones=(50, 75))

_PGD = {
    "cifar10": PGDConfig(eps=8 / 255, eps_iter=2 / 255, nb_iter=10),
    "cifar100": PGDConfig(eps=0.01, eps_iter=0.001, nb_iter=10),
    # Madry et al. (2018)'s MNIST adversary.
    "mnist": PGDConfig(eps=0.3, eps_iter=0.01, nb_iter=40),
    # eps 0.1 is the usual Fashion-MNIST budget; eta = 2.5 eps / k (Madry et al.'s rule).
    "fashion_mnist": PGDConfig(eps=0.1, eps_iter=0.025, nb_iter=10),
}
# ADP's ResNet setting, which the paper adopts for CIFAR-10 ResNet: eps ~ U(0.01, 0.05), eta = eps/10.
_PGD_RESNET_CIFAR10 = PGDConfig(eps=0.01, eps_iter=0.001, nb_iter=10, eps_max=0.05)


def defaults(dataset: str, arch: str) -> dict:
    """Epochs, batch size, LR milestones and training PGD for (dataset, arch)."""
    schedule = _CIFAR if dataset.startswith("cifar") else _MNIST_LIKE
    pgd = _PGD_RESNET_CIFAR10 if (dataset, arch) == ("cifar10", "resnet20") else _PGD[dataset]
    return dict(schedule, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, pgd=pgd)


def scaled_milestones(dataset: str, epochs: int) -> list[int]:
    """The paper's LR milestones of `dataset` at the same fractions of a run of `epochs` epochs
    (rounded up), without those the run never reaches: extended later, it goes on at its last rate."""
    schedule = _CIFAR if dataset.startswith("cifar") else _MNIST_LIKE
    scaled = [-(-m * epochs // schedule["epochs"]) for m in schedule["milestones"]]  # integer ceil
    return [m for m in scaled if m < epochs]


def learning_rate(epoch: int, base_lr: float, milestones: list[int]) -> float:
    """Adam's lr for a 0-based epoch: base_lr x 0.1 for every milestone m <= epoch (PyTorch's
    MultiStepLR, as the official code): milestone m lowers the rate from the (m+1)-th epoch on."""
    return base_lr * 0.1 ** sum(epoch >= m for m in milestones)


def resumed_milestones(stored: list[int], given: list[int] | None, started: int) -> list[int]:
    """The milestones of a resumed run that has started `started` epochs, as stored at its creation
    or, when --lr_milestones is `given` again, with the given ones for the epochs to come. Either
    way the epochs already started keep their rates. Raises ValueError for a given milestone that
    would change such an epoch."""
    if given is None:
        return list(stored)
    past, given_past = [m for m in stored if m < started], [m for m in given if m < started]
    if given_past and given_past != past:
        raise ValueError(f"--lr_milestones {','.join(map(str, given))} would change the learning rate of "
                         f"epochs already trained ({started} started, milestones {past or 'none'}): "
                         f"give milestones >= {started} only")
    return past + [m for m in given if m >= started]


def resolve_method(method: str, lambda_pm: float | None, lambda_dm: float | None) -> tuple[str, float, float]:
    """(method, lambda_pm, lambda_dm): a preset fixes the lambdas unless a flag overrides them."""
    if method not in METHOD_CHOICES:
        raise ValueError(f"--method must be one of {', '.join(METHOD_CHOICES)}, got {method!r}")
    pm, dm = PRESETS.get(method, (1.0, 1.0) if method == "cce" else (0.0, 0.0))
    pm = pm if lambda_pm is None else lambda_pm
    dm = dm if lambda_dm is None else lambda_dm
    return ("cce" if method in PRESETS else method), float(pm), float(dm)


# --- Ensemble-diversity baselines. Sources: AI-secure/Transferability-Reduced-Smooth-Ensemble (TRS
# repo) and zjysteven/DVERGE, read at the paths named in docs/settings.md.

@dataclass(frozen=True)
class GALConfig:
    """GAL (Kariyappa & Qureshi 2019). lam: weight of the gradient-alignment term, 0.5 in both
    reference repos (TRS repo utils/Empirical/script_train.py gal_coeff; DVERGE arguments.py --lambda).
    adv: also train on PGD examples against the ensemble (DVERGE repo's --plus-adv; off by default)."""
    lam: float = 0.5
    adv: bool = False


@dataclass(frozen=True)
class DVERGEConfig:
    """DVERGE (Yang et al. 2020). distill: the L-inf feature-distillation PGD (eps, step, steps);
    variant: 'plain' (distilled examples only) or 'plus' (adds each member's clean cross-entropy)."""
    distill: PGDConfig
    variant: str = "plain"


@dataclass(frozen=True)
class TRSConfig:
    """TRS (Yang et al. 2021). lambda_a weighs the mean |cos| of the members' input gradients,
    lambda_b the mean squared norm of per-sample input gradients at the smoothing points; eps
    and eps_end: the smoothing PGD's radius at the first epoch and the one it ramps to linearly
    (reached after the last epoch); nb_iter its steps, each of eps / 3.

    The TRS repo (train/Empirical/trainer.py, TRS_Trainer) adds scale * (coeff * cos + lamda *
    smooth) with scale 5, coeff 2, lamda 2, so lambda_a = 10. Its smooth term is 2 * mean_b |g_b|^2
    (utils_ensemble.py, Magnitude) of the gradient of the *batch-mean* loss over its batch of 128,
    i.e. 2 / 128^2 times the per-sample squared norm used here: lambda_b = 10 * 2 / 128^2.
    """
    lambda_a: float = 10.0
    lambda_b: float = 10.0 * 2.0 / 128**2
    eps: float = 0.1
    eps_end: float = 0.2
    nb_iter: int = 6


# DVERGE's own CIFAR-10 setting (DVERGE arguments.py, scripts/training.sh: --distill-eps 0.07
# --distill-alpha 0.007, 10 steps); CIFAR-100 has no reference and uses it too. The TRS repo's
# DVERGE script for MNIST (utils/Empirical/script_train.py) uses 0.35 / 0.035 / 10; Fashion-MNIST,
# also 28x28 grey, uses the same.
_DVERGE = {
    "cifar10": PGDConfig(eps=0.07, eps_iter=0.007, nb_iter=10),
    "cifar100": PGDConfig(eps=0.07, eps_iter=0.007, nb_iter=10),
    "mnist": PGDConfig(eps=0.35, eps_iter=0.035, nb_iter=10),
    "fashion_mnist": PGDConfig(eps=0.35, eps_iter=0.035, nb_iter=10),
}


def dverge_defaults(dataset: str) -> PGDConfig:
    """DVERGE's feature-distillation PGD (eps, step, steps) for `dataset`."""
    return _DVERGE[dataset]
