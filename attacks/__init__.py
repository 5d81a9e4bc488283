"""Attack adapters: one module per attack library, one common signature (DESIGN.md, contract 6).

Every adapter is ``attack(model, x, y, **params) -> x_adv``: ``model`` maps float32 NHWC images in
[0, 1] to logits (an ensemble, whose logits are log f^en, or one member); ``x`` is one numpy float32
batch and ``y`` its int64 true labels; ``x_adv`` is a numpy float32 array inside the L∞ ε-ball
around ``x`` and inside [0, 1]. Batching over a test set is the caller's job.

Usage::

    from attacks import registry
    x_adv = registry.run("pgd", model, x, y, **registry.default_params("pgd", "cifar10"))

Parts:

    gradient        cleverhans FGSM, PGD, BIM, MIM (compiled, one trace per model) and their
                    multiple-targeted forms mul_pgd, mul_bim, mul_mim
    spsa            cleverhans SPSA, with a small shim that makes it run under Keras 3
    brendel_bethge  foolbox's L∞ Brendel & Bethge attack, started from PGD1 / PGD2
    autoattack      the official AutoAttack (PyTorch) through a TF -> torch bridge; optional
    registry        names -> adapters, the paper's parameters per data set, sample counts
    errors          AttackUnavailable, raised when an optional library is missing
"""
from attacks.errors import AttackUnavailable

__all__ = ["AttackUnavailable"]
