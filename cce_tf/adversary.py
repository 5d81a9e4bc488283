"""The training-time adversary: L-inf PGD with random start on the true labels (Madry et al. 2018).

Usage::

    from cce_tf.adversary import pgd, pgd_per_member
    from cce_tf.config import PGDConfig
from cce_tf.diversity import input_gradients
    cfg = PGDConfig(eps=8 / 255, eps_iter=2 / 255, nb_iter=10)
    rng = tf.random.Generator.from_seed(0)                 # random starts (and ADP's eps draws)
    x_adv = pgd(ensemble, x, y, cfg, rng)                  # x_a^en: against the whole ensemble
    x_a = pgd_per_member(ensemble.members, x, y, cfg, rng)  # [N, B, ...]: x_a^n against member n alone

Parts:
    pgd                  cleverhans' PGD loop on any logits model
    pgd_per_member       the N attacks of CCE (Eq. 5), run as one PGD over the stacked batch
    smoothing_pgd        TRS's x~: PGD that maximises the members' squared input-gradient norms
    feature_distillation DVERGE's x': near x_s, with member j's features of x at a chosen layer

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
from cce_tf.diversity import input_gradients


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


def smoothing_pgd(members: list, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor, nb_iter: int,
                  rng: tf.random.Generator) -> tf.Tensor:
    """TRS's smoothing points x~ (TRS repo train/Empirical/trainer.py, PGD): L-inf PGD from a random
    start U(-eps, eps), nb_iter sign steps of eps / 3, that *maximises* sum_n |d C(f^n(x~), y) / dx~|^2
    (the members' squared input-gradient norms) rather than a loss. Each step differentiates the
    members' input gradients once more. Returns a constant in the eps-ball around x and in [0, 1].
    """
    x_s = tf.clip_by_value(x + rng.uniform(tf.shape(x), -eps, eps, dtype=x.dtype), 0.0, 1.0)
    for _ in range(nb_iter):
        with tf.GradientTape() as tape:
            tape.watch(x_s)
            _, g = input_gradients(members, x_s, y, training=False)
            magnitude = tf.reduce_sum(tf.square(g))
        x_s = x_s + eps / 3.0 * tf.sign(tape.gradient(magnitude, x_s))
        x_s = tf.clip_by_value(x + clip_eta(x_s - x, np.inf, eps), 0.0, 1.0)
    return tf.stop_gradient(x_s)


def feature_distillation(feature_fns: list, x_s: tf.Tensor, x: tf.Tensor, layer: tf.Tensor,
                         cfg: PGDConfig) -> tf.Tensor:
    """DVERGE's distilled examples x'_j for every member j; returns [N, B, ...].

    x'_j = argmin_{|z - x_s|_inf <= eps, z in [0,1]} |h_j(z) - h_j(x)|^2, with h_j member j's
    candidate feature number `layer` (`feature_fns[j]` maps images to the list of its candidate
    features, cce_tf.models.feature_model). The minimiser is DVERGE's Linf_distillation
    (DVERGE distillation.py): start at x_s (no random start), cfg.nb_iter steps of cfg.eps_iter
    along the sign of a momentum (mu = 1) of the per-sample L1-normalised gradients.

    Like pgd_per_member, the N distillations run as one loop over the stacked batch. `layer` may be
    a tensor (drawn at random in the train step): every candidate's distance is computed and the
    chosen one picked by a one-hot weight, so one graph serves every layer.
    """
    n = len(feature_fns)
    targets = [[tf.stop_gradient(h) for h in fn(x, training=False)] for fn in feature_fns]
    pick = tf.one_hot(layer, len(targets[0]))

    def distance(z_stack):
        total = 0.0
        for fn, z, target in zip(feature_fns, tf.split(z_stack, n), targets):
            per_layer = tf.stack([tf.reduce_sum(tf.square(h - t)) for h, t in zip(fn(z, training=False), target)])
            total += tf.reduce_sum(pick * per_layer)
        return total

    start = tf.tile(x_s, [n] + [1] * (x_s.shape.rank - 1))
    z, momentum = start, tf.zeros_like(start)
    axes = list(range(1, x_s.shape.rank))
    for _ in range(cfg.nb_iter):
        with tf.GradientTape() as tape:
            tape.watch(z)
            d = distance(z)
        grad = tape.gradient(d, z)
        momentum += grad / tf.maximum(tf.reduce_sum(tf.abs(grad), axis=axes, keepdims=True), 1e-12)
        z = z - cfg.eps_iter * tf.sign(momentum)
        z = tf.clip_by_value(start + clip_eta(z - start, np.inf, cfg.eps), 0.0, 1.0)
    return tf.reshape(tf.stop_gradient(z), tf.concat([[n], tf.shape(x_s)], axis=0))
