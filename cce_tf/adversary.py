"""The training-time adversary: L-inf PGD with random start on the true labels (Madry et al. 2018).

Usage::

    from cce_tf.adversary import pgd, pgd_per_member
    from cce_tf.config import PGDConfig
    cfg = PGDConfig(eps=8 / 255, eps_iter=2 / 255, nb_iter=10)
    rng = tf.random.Generator.from_seed(0)                 # random starts (and ADP's eps draws)
    x_adv = pgd(ensemble, x, y, cfg, rng)                  # x_a^en: against the whole ensemble
    x_a = pgd_per_member(ensemble.members, x, y, cfg, rng)  # [N, B, ...]: x_a^n against member n alone

Parts:
    pgd             cleverhans' PGD loop on any logits model
    pgd_per_member  the N attacks of CCE (Eq. 5), run as one PGD over the stacked batch

The loop is cleverhans' own algorithm assembled from its parts (fast_gradient_method, clip_eta):
`projected_gradient_descent` itself asserts `eps_iter <= eps` in Python, which a per-batch random
tensor eps (the paper's ResNet setting) cannot pass inside a compiled train step. The random start
is cleverhans' U(-eps, eps) (its random_lp_vector for L-inf), drawn from a tf.random.Generator
instead of the global random state: the trainer checkpoints the generator, so a resumed run draws
the starts it would have drawn. tests/test_training.py checks the two agree given the same start.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta

from cce_tf.config import PGDConfig


def _eps_and_step(cfg: PGDConfig, rng: tf.random.Generator) -> tuple[tf.Tensor, tf.Tensor]:
    """(eps, eta) for one batch: fixed, or eps ~ U(eps, eps_max) with eta = eps / 10."""
    if cfg.eps_max is None:
        return tf.constant(cfg.eps), tf.constant(cfg.eps_iter)
    eps = rng.uniform([], cfg.eps, cfg.eps_max)
    return eps, eps / 10.0


def pgd(model_fn, x: tf.Tensor, y: tf.Tensor, cfg: PGDConfig, rng: tf.random.Generator) -> tf.Tensor:
    """Untargeted L-inf PGD with random start against `model_fn` (images -> logits), true labels y;
    `rng` draws the start (and eps when cfg.eps_max is set).

    Returns x_adv in the eps-ball around x and in [0, 1], as a constant (no gradient flows back).
    """
    eps, eps_iter = _eps_and_step(cfg, rng)
    x_adv = x + rng.uniform(tf.shape(x), -eps, eps, dtype=x.dtype)
    x_adv = tf.clip_by_value(x_adv, 0.0, 1.0)
    for _ in range(cfg.nb_iter):
        x_adv = fast_gradient_method(model_fn, x_adv, eps_iter, np.inf, clip_min=0.0, clip_max=1.0,
                                     y=y, sanity_checks=False)
        x_adv = tf.clip_by_value(x + clip_eta(x_adv - x, np.inf, eps), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def pgd_per_member(members: list, x: tf.Tensor, y: tf.Tensor, cfg: PGDConfig,
                   rng: tf.random.Generator) -> tf.Tensor:
    """x_a^n for every member n, each PGD against member n alone; returns [N, B, ...].

    The N attacks run as one PGD over the N stacked copies of the batch, copy n routed through
    member n. The per-sample losses are independent, so this is exactly N separate attacks (each
    with its own random start), at the cost of one batched loop.
    """
    n = len(members)

    def stacked_logits(x_stack):
        chunks = tf.split(x_stack, n)
        return tf.concat([m(c, training=False) for m, c in zip(members, chunks)], axis=0)

    x_adv = pgd(stacked_logits, tf.tile(x, [n] + [1] * (x.shape.rank - 1)), tf.tile(y, [n]), cfg, rng)
    return tf.reshape(x_adv, tf.concat([[n], tf.shape(x)], axis=0))
