"""Loss functions of the paper, as pure functions of tensors.

Usage::

    from cce_tf import losses
    L = losses.cce_losses(y, logits_clean, logits_cross, lambda_pm=1.0, lambda_dm=1.0)  # [N]
    total = tf.reduce_sum(L)   # member n's loss depends on member n's weights only

Parts:
    cross_entropy   C(f(x), y) per sample, from logits
    entropy         H(p) per sample, natural log
    cce_losses      L^n of Eq. 5 for every member n (batch-averaged)
    adp_loss        ADP_{alpha,beta} objective of Pang et al. (2019), as the paper's supplement uses it

Shapes: N members, B samples, C classes. Labels are int64 class ids.
"""
from __future__ import annotations

import tensorflow as tf

# ADP's official constants (Pang et al. 2019, Adaptive-Diversity-Promoting code).
ADP_LOG_OFFSET = 1e-20
ADP_DET_OFFSET = 1e-6


def cross_entropy(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """C(softmax(logits), y) per sample; `logits` [..., B, C] broadcast against `y` [B]."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    depth = tf.shape(logits)[-1]
    return -tf.reduce_sum(tf.one_hot(y, depth, dtype=log_p.dtype) * log_p, axis=-1)


def entropy(probs: tf.Tensor) -> tf.Tensor:
    """Shannon entropy H(p) = -sum_c p_c log p_c per sample (natural log); 0·log 0 counts as 0."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probs), probs), axis=-1)


def _entropy_from_logits(logits: tf.Tensor) -> tf.Tensor:
    # Same as entropy(softmax(logits)) but exact where a probability underflows to 0.
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def cce_losses(y: tf.Tensor, logits_clean: tf.Tensor, logits_cross: tf.Tensor,
               lambda_pm: float, lambda_dm: float) -> tf.Tensor:
    """The CCE objective L^n of Eq. 5 for each member n, batch-averaged; returns [N].

    L^n = C(f^n(x), y) + C(f^n(x_a^n), y)
          + 1/(N-1) sum_{i != n} [ lambda_pm * s * C(f^n(x_a^i), y) - lambda_dm * (1 - s) * H(f^n(x_a^i)) ]
    with the soft indicator s = stop_gradient(f^n_y(x_a^i)) (the paper's implementation note).

    Args:
      y: [B] true labels.
      logits_clean: [N, B, C]; entry n is member n on the clean x.
      logits_cross: [N, N, B, C]; entry [n, i] is member n on x_a^i, the PGD example crafted
        against member i alone. The diagonal gives the direct-promoting (dPO) term.
      lambda_pm: weight of crossing promotion (cPO).
      lambda_dm: weight of demotion (DO).
    """
    n_members = tf.shape(logits_cross)[0]
    ce_clean = cross_entropy(y, logits_clean)                      # [N, B]
    ce_cross = cross_entropy(y, logits_cross)                      # [N, N, B]
    prob_y = tf.exp(-ce_cross)                                     # f^n_y(x_a^i)
    s = tf.stop_gradient(prob_y)
    h_cross = _entropy_from_logits(logits_cross)                   # [N, N, B]

    eye = tf.eye(n_members, dtype=ce_cross.dtype)[:, :, None]      # [N, N, 1]
    direct = tf.reduce_sum(eye * ce_cross, axis=1)                 # C(f^n(x_a^n), y)
    po_do = lambda_pm * s * ce_cross - lambda_dm * (1.0 - s) * h_cross
    # For N = 1 the crossing sum is empty; max() only avoids 0/0 there.
    n_others = tf.maximum(tf.cast(n_members - 1, ce_cross.dtype), 1.0)
    crossing = tf.reduce_sum((1.0 - eye) * po_do, axis=1) / n_others
    return tf.reduce_mean(ce_clean + direct + crossing, axis=-1)


def adp_loss(y: tf.Tensor, logits: tf.Tensor, alpha: float = 2.0, beta: float = 0.5) -> tf.Tensor:
    """ADP_{alpha,beta} training objective (Pang et al. 2019) for `logits` [N, B, C]; a scalar.

    sum_n C(f^n(x), y) - alpha * H(mean_n f^n(x)) - beta * log det(M~^T M~ + 1e-6 I),
    where column n of M~ is f^n(x) with the true-label entry removed, L2-normalised.
    The paper's ADP baseline trains on adp_loss(clean) + adp_loss(adversarial) (its supplement).
    """
    n_members = tf.shape(logits)[0]
    num_classes = tf.shape(logits)[-1]
    probs = tf.nn.softmax(logits, axis=-1)                         # [N, B, C]
    ce_sum = tf.reduce_sum(cross_entropy(y, logits), axis=0)       # [B]

    mean_p = tf.reduce_mean(probs, axis=0)
    ensemble_entropy = -tf.reduce_sum(mean_p * tf.math.log(mean_p + ADP_LOG_OFFSET), axis=-1)

    # Drop the true-label entry of every member's prediction: [B, N, C-1].
    keep = tf.logical_not(tf.cast(tf.one_hot(y, num_classes), tf.bool))          # [B, C]
    p_bnc = tf.transpose(probs, [1, 0, 2])
    keep_bnc = tf.broadcast_to(keep[:, None, :], tf.shape(p_bnc))
    non_max = tf.reshape(tf.boolean_mask(p_bnc, keep_bnc), [-1, n_members, num_classes - 1])
    non_max = non_max / tf.norm(non_max, axis=-1, keepdims=True)
    gram = tf.matmul(non_max, non_max, transpose_b=True)                          # [B, N, N]
    log_det = tf.linalg.logdet(gram + ADP_DET_OFFSET * tf.eye(n_members, dtype=gram.dtype))
    return tf.reduce_mean(ce_sum - alpha * ensemble_entropy - beta * log_det)
