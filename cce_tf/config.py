"""The paper's training settings per data set and architecture, and the method presets.

Usage::

    from cce_tf import config
    d = config.defaults("cifar100", "cnn")      # epochs, batch size, LR milestones, PGD
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
        if self.eps <= 0:
            raise ValueError(f"--eps must be > 0, got {self.eps}")
        if self.eps_max is None and not 0 < self.eps_iter <= self.eps:
            raise ValueError(f"--eps_iter must be in (0, eps={self.eps}], got {self.eps_iter}")
        if self.nb_iter < 1:
            raise ValueError(f"--nb_iter must be >= 1, got {self.nb_iter}")
        if self.eps_max is not None and self.eps_max < self.eps:
            raise ValueError(f"--eps_max must be >= eps={self.eps}, got {self.eps_max}")


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


def learning_rate(epoch: int, base_lr: float, milestones: tuple[int, ...], default_epochs: int,
                  epochs: int) -> float:
    """Adam's lr for a 0-based epoch: x0.1 at each milestone, the milestones kept at the same
    fractions of training when --epochs differs from the paper's count."""
    passed = sum(epoch >= m * epochs / default_epochs for m in milestones)
    return base_lr * 0.1 ** passed


def resolve_method(method: str, lambda_pm: float | None, lambda_dm: float | None) -> tuple[str, float, float]:
    """(method, lambda_pm, lambda_dm): a preset fixes the lambdas unless a flag overrides them."""
    if method not in METHOD_CHOICES:
        raise ValueError(f"--method must be one of {', '.join(METHOD_CHOICES)}, got {method!r}")
    pm, dm = PRESETS.get(method, (1.0, 1.0) if method == "cce" else (0.0, 0.0))
    pm = pm if lambda_pm is None else lambda_pm
    dm = dm if lambda_dm is None else lambda_dm
    return ("cce" if method in PRESETS else method), float(pm), float(dm)
