"""The paper's training settings per data set and architecture, and the method presets.

Usage::

    from cce_tf import config
    d = config.defaults("cifar100", "cnn")      # epochs, batch size, LR milestones, PGD
    milestones = config.scaled_milestones("cifar100", 90)          # [40, 60, 80]
    lr = config.learning_rate(45, d["learning_rate"], milestones)  # 1e-4
    method, lambda_pm, lambda_dm = config.resolve_method("cce-rm", None, None)

Pure Python (no TensorFlow import), so CLIs check their flags in milliseconds.
Sources: the paper's 'Experimental Setting' and supplement ('Model architecture and training
setting'), and the official code where the paper is silent. The paper gives no MNIST-like
adversary; the choices below are documented in docs/settings.md.
"""
from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("cnn", "resnet20")
METHODS = ("nat", "adv", "adv-en", "adp", "cce")
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
