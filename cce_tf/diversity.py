"""The objectives of the ensemble-diversity defences CCE is compared with: GAL, DVERGE and TRS.

Usage::

    from cce_tf import diversity
    z, g = diversity.input_gradients(ensemble.members, x, y, training=True)  # [N,B,C], [N,B,H,W,C']
    loss = diversity.gal_loss(y, z, g, lam=0.5)                                  # differentiable in g

Parts:
    input_gradients   every member's logits and per-sample input gradient of its cross-entropy,
                      still differentiable with respect to the weights (for double backpropagation)
    pairwise_cosines  cos(g_i, g_j) per sample for every pair i < j
    gal_loss          GAL (Kariyappa & Qureshi 2019): cross-entropies + lam * log sum_{i<j} exp(cos)
    trs_loss          TRS (Yang et al. 2021): cross-entropies + lambda_a * |cos| + lambda_b * |g|^2
    dverge_losses     DVERGE (Yang et al. 2020): member i on the examples distilled from member j

All but input_gradients are pure functions of tensors. Shapes: N members, B samples, C classes;
input gradients [N, B, ...] (any trailing image shape, flattened per sample).
"""
from __future__ import annotations

import tensorflow as tf

from cce_tf.losses import cross_entropy

# cos(a, b) = a.b / max(|a| |b|, COS_EPS) as torch.nn.functional.cosine_similarity (eps 1e-8),
# which both reference repos use; it also keeps a zero gradient (a saturated softmax) finite.
COS_EPS = 1e-8


def input_gradients(members: list, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits [N, B, C], g [N, B, ...]) with g[n, b] = d C(f^n(x_b), y_b) / d x_b.

    Each member sees its own copy of x, so one gradient call separates the members; the loss is
    summed over the batch, so row b is sample b's own gradient (exactly so where no layer mixes
    samples, i.e. without BatchNorm in training mode). The inner tape is not stopped: called under
    an outer GradientTape, g is differentiable with respect to the weights.
    """
    copies = tf.stack([x] * len(members))
    with tf.GradientTape() as tape:
        tape.watch(copies)
        logits = tf.stack([m(copies[n], training=training) for n, m in enumerate(members)])
        total = tf.reduce_sum(cross_entropy(y, logits))
    return logits, tape.gradient(total, copies)


def _flat(g: tf.Tensor) -> tf.Tensor:
    """[N, B, ...] -> [N, B, D]."""
    return tf.reshape(g, tf.concat([tf.shape(g)[:2], [-1]], axis=0))


def pairwise_cosines(grads: tf.Tensor) -> tf.Tensor:
    """cos(g_i, g_j) per sample for every pair i < j, in the order (0,1), (0,2), ..., (1,2), ...:
    [N(N-1)/2, B] for grads [N, B, ...]."""
    g = _flat(grads)
    sq = tf.reduce_sum(tf.square(g), axis=-1)                               # [N, B]
    n = g.shape[0]
    cosines = [tf.reduce_sum(g[i] * g[j], axis=-1) / tf.sqrt(tf.maximum(sq[i] * sq[j], COS_EPS**2))
               for i in range(n) for j in range(i + 1, n)]
    return tf.stack(cosines)


def _member_ce_sum(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """sum_n C(f^n(x), y), each batch-averaged (both reference repos sum the members' mean losses)."""
    return tf.reduce_sum(tf.reduce_mean(cross_entropy(y, logits), axis=-1))


def gal_loss(y: tf.Tensor, logits: tf.Tensor, grads: tf.Tensor, lam: float) -> tf.Tensor:
    """The GAL objective (Kariyappa & Qureshi 2019, the gradient alignment loss), a scalar:

    sum_n C(f^n(x), y) + lam * mean_b log sum_{i<j} exp(cos(g_i(x_b), g_j(x_b)))

    with g_n(x_b) the input gradient of member n's cross-entropy (`grads` [N, B, ...], from
    input_gradients), `logits` [N, B, C]. The log-sum-exp is over the N(N-1)/2 pairs, per sample,
    as the TRS repo's GAL_Trainer (train/Empirical/trainer.py); its +1e-20 inside the log changes
    nothing here, since the sum is at least exp(-1). Needs N >= 2.
    """
    coherence = tf.reduce_mean(tf.reduce_logsumexp(pairwise_cosines(grads), axis=0))
    return _member_ce_sum(y, logits) + lam * coherence


def trs_loss(y: tf.Tensor, logits: tf.Tensor, grads: tf.Tensor, grads_smooth: tf.Tensor,
             lambda_a: float, lambda_b: float) -> tf.Tensor:
    """The TRS objective (Yang et al. 2021: cross-entropy + lambda_a L_sim + lambda_b L_smooth), a scalar:

    sum_n C(f^n(x), y) + lambda_a * mean_{i<j} mean_b |cos(g_i(x_b), g_j(x_b))|
                       + lambda_b * mean_n mean_b' |g_n(x~_b')|^2

    `grads` [N, B, ...] are the members' input gradients on the clean batch, `grads_smooth` [N, B',
    ...] those at the smoothing points x~ (TRS's code: the first half of the batch clean, the second
    half its PGD points, so the last term is the mean of |g(x)|^2 and |g(x~)|^2). Means over the
    pairs and the members, as TRS_Trainer's `/ 3` for its three members (train/Empirical/trainer.py).
    Needs N >= 2.
    """
    similarity = tf.reduce_mean(tf.abs(pairwise_cosines(grads)))
    smoothness = tf.reduce_mean(tf.reduce_sum(tf.square(_flat(grads_smooth)), axis=-1))
    return _member_ce_sum(y, logits) + lambda_a * similarity + lambda_b * smoothness


def dverge_losses(y_s: tf.Tensor, logits_distilled: tf.Tensor, logits_clean: tf.Tensor | None = None,
                  y: tf.Tensor | None = None) -> tf.Tensor:
    """DVERGE's objective for each member i (Yang et al. 2020, the vulnerability-diversification
    loss), batch-averaged; returns [N]:

    L^i = sum_{j != i} C(f^i(x'_j), y_s)   [+ C(f^i(x), y) for the "plus" variant]

    `logits_distilled[i, j]` [N, N, B, C] is member i on x'_j, the example distilled from member j
    (near x_s, with member j's features of x); y_s [B] are the labels of x_s. Member j's own
    distilled example (the diagonal) is left out, as DVERGE_Trainer.train (train/train_dverge.py).
    `logits_clean` [N, B, C] on x with labels `y` adds the clean cross-entropy.
    """
    n = tf.shape(logits_distilled)[0]
    ce = tf.reduce_mean(cross_entropy(y_s, logits_distilled), axis=-1)         # [N, N]
    loss = tf.reduce_sum((1.0 - tf.eye(n, dtype=ce.dtype)) * ce, axis=1)
    if logits_clean is not None:
        loss += tf.reduce_mean(cross_entropy(y, logits_clean), axis=-1)
    return loss
