"""How big a study runs: the paper's settings, or a documented CPU budget on Fashion-MNIST.

Usage::

    from studies.scale import SCALES
    s = SCALES["small"]
    s.train_options("cifar10")       # {"dataset": "fashion_mnist", "train_subset": 3000, "epochs": 3, ...}

Every setting of a scale lives here and nowhere else. ``small`` is what
``python -m studies.reproduce --study paper --scale small --seeds 0,1,2`` runs on a 2-core CPU in
under two hours (docs/results.md gives the measured time): Fashion-MNIST in place of CIFAR-10/100
(both CIFAR tables then share runs), the Table 8 CNN only (ResNet-20 runs are left out: Tables 3 and
9 and the ResNet rows of Table 7 are not reproduced at this scale), a seeded 2000-image training
subset, 2 epochs, training PGD with k = 3, and the attacks cut to what fits: FGSM, and PGD, BIM and
MIM with k = 10, on the first 500 test images (the multi-targeted attacks, SPSA, B&B and AutoAttack
are left out; ``--scale paper`` runs them); transferability, black box and detection with k = 10 on
the same 500 images; no sanity sweep. These are short-trained models: the scale shows which of the
paper's claims survive seeds and paired tests at this budget, not the paper's CIFAR numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from studies.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    dataset: Optional[str]              # None: the study's own data set
    archs: tuple[str, ...]              # member architectures this scale trains
    train_subset: int = 0               # 0: the whole training set
    epochs: Optional[int] = None        # None: the paper's (cce_tf.config)
    train_nb_iter: Optional[int] = None  # training PGD steps; None: the paper's
    attacks: Optional[tuple[str, ...]] = None  # None: the study's attacks
    attack_nb_iter: Optional[int] = None       # k of PGD / BIM / MIM; None: the paper's
    mul_nb_iter: Optional[int] = None          # k of the multi-targeted attacks; None: the paper's
    n_samples: Optional[int] = None     # test samples per evaluation; None: the paper's counts
    analysis_nb_iter: int = 20          # k of transferability, black box, detection (the paper's)
    sanity: bool = True

    def dataset_for(self, study_dataset: str) -> str:
        return self.dataset or study_dataset

    def keeps(self, run: RunSpec) -> bool:
        return run.arch in self.archs

    def train_options(self, dataset: str) -> dict:
        """cce_tf.train options this scale sets (the rest are the paper's defaults)."""
        opts = {"dataset": self.dataset_for(dataset), "train_subset": self.train_subset}
        if self.epochs is not None:
            opts["epochs"] = self.epochs
        if self.train_nb_iter is not None:
            opts["nb_iter"] = self.train_nb_iter
        return opts

    def attacks_for(self, study_attacks: tuple[str, ...], full: bool = False) -> tuple[str, ...]:
        """The study's attacks that this scale runs, in the study's order (all of them for a study
        with ``full_evaluation``)."""
        if self.attacks is None or full:
            return study_attacks
        return tuple(a for a in study_attacks if a in self.attacks) or self.attacks[:1]


SCALES = {
    # A smoke test of the whole pipeline in about a minute per run (the tests use it): not a result.
    "tiny": Scale(name="tiny", dataset="fashion_mnist", archs=("cnn",), train_subset=256, epochs=1,
                  train_nb_iter=2, attacks=("fgsm", "pgd"), attack_nb_iter=2, mul_nb_iter=2, n_samples=64,
                  analysis_nb_iter=2, sanity=False),
    "paper": Scale(name="paper", dataset=None, archs=("cnn", "resnet20")),
    "small": Scale(name="small", dataset="fashion_mnist", archs=("cnn",), train_subset=2000, epochs=2,
                   train_nb_iter=3, attacks=("fgsm", "pgd", "bim", "mim"), attack_nb_iter=10,
                   n_samples=500, analysis_nb_iter=10, sanity=False),
}
