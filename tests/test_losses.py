"""cce_losses (Eq. 5) and adp_loss against hand-computed values and direct numpy computations."""
import math

import numpy as np
import pytest
import tensorflow as tf

from cce_tf import losses


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def eq5_numpy(y, logits_clean, logits_cross, lambda_pm, lambda_dm):
    """Eq. 5 written term by term with loops, as the paper prints it."""
    n_members, batch = logits_clean.shape[:2]
    out = np.zeros(n_members)
    for n in range(n_members):
        for b in range(batch):
            ce = lambda z: -math.log(_softmax(z)[y[b]])
            total = ce(logits_clean[n, b]) + ce(logits_cross[n, n, b])
            for i in range(n_members):
                if i == n:
                    continue
                p = _softmax(logits_cross[n, i, b])
                s = p[y[b]]
                h = -np.sum(p * np.log(p))
                total += (lambda_pm * s * ce(logits_cross[n, i, b]) - lambda_dm * (1 - s) * h) / (n_members - 1)
            out[n] += total / batch
    return out


def test_uniform_logits_by_hand():
    # Zero logits, 2 classes: every p = 1/2, so C = H = ln 2 and s = 1/2.
    y = tf.constant([1], tf.int64)
    zc, zx = tf.zeros([2, 1, 2]), tf.zeros([2, 2, 1, 2])
    ln2 = math.log(2.0)
    # L^n = ln2 + ln2 + (lambda_pm * 0.5 * ln2 - lambda_dm * 0.5 * ln2)
    got = losses.cce_losses(y, zc, zx, lambda_pm=3.0, lambda_dm=1.0).numpy()
    np.testing.assert_allclose(got, [2 * ln2 + ln2, 2 * ln2 + ln2], rtol=1e-6)


@pytest.mark.parametrize("n_members", [1, 2, 3])
@pytest.mark.parametrize("lambdas", [(0.0, 0.0), (1.0, 1.0), (0.0, 5.0), (2.0, 0.5)])
def test_cce_losses_match_eq5(n_members, lambdas):
    rng = np.random.default_rng(n_members)
    batch, classes = 4, 5
    y = rng.integers(0, classes, batch)
    zc = rng.normal(size=(n_members, batch, classes)) * 3
    zx = rng.normal(size=(n_members, n_members, batch, classes)) * 3
    got = losses.cce_losses(tf.constant(y), tf.constant(zc, tf.float32), tf.constant(zx, tf.float32), *lambdas)
    np.testing.assert_allclose(got.numpy(), eq5_numpy(y, zc, zx, *lambdas), rtol=1e-4, atol=1e-5)


def test_single_member_has_no_crossing_terms():
    y = tf.constant([0, 2], tf.int64)
    zc = tf.random.normal([1, 2, 3])
    zx = tf.random.normal([1, 1, 2, 3])
    want = tf.reduce_mean(losses.cross_entropy(y, zc[0]) + losses.cross_entropy(y, zx[0, 0]))
    for lambdas in ((0.0, 0.0), (7.0, 7.0)):
        np.testing.assert_allclose(losses.cce_losses(y, zc, zx, *lambdas).numpy(), [want.numpy()], rtol=1e-6)


def test_soft_indicator_carries_no_gradient():
    # With only the promoting term, dL/dz = s * (p - onehot(y)) / batch: s is a constant.
    y = tf.constant([2], tf.int64)
    zx = tf.Variable(tf.random.normal([2, 2, 1, 4], seed=1))
    with tf.GradientTape() as tape:
        loss = losses.cce_losses(y, tf.zeros([2, 1, 4]), zx, lambda_pm=1.0, lambda_dm=0.0)[0]
    grad = tape.gradient(loss, zx).numpy()[0, 1, 0]          # member 0 on x_a^1
    p = tf.nn.softmax(zx[0, 1, 0]).numpy()
    want = p[2] * (p - np.eye(4)[2])
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
    # Without the stop-gradient the gradient would also carry C * d s/dz, which is not zero here.
    assert np.abs(p[2] * (np.eye(4)[2] - p) * -math.log(p[2])).max() > 1e-3


def test_demoting_pushes_toward_uniform():
    # Member 0 on x_a^1, wrong and confident: minimising L^0 with only DO raises the entropy.
    y = tf.constant([0], tf.int64)
    z = tf.Variable([[[[0.0, 0.0, 0.0, 0.0]], [[-2.0, 4.0, 0.0, 1.0]]]] * 2)   # [2, 2, 1, 4]
    h0 = losses.entropy(tf.nn.softmax(z[0, 1])).numpy()[0]
    opt = tf.keras.optimizers.SGD(0.5)
    for _ in range(200):
        with tf.GradientTape() as tape:
            loss = losses.cce_losses(y, tf.zeros([2, 1, 4]), z, lambda_pm=0.0, lambda_dm=1.0)[0]
        opt.apply_gradients([(tape.gradient(loss, z), z)])
    p = tf.nn.softmax(z[0, 1, 0]).numpy()
    h1 = -np.sum(p * np.log(p))
    assert h1 > h0 + 0.3
    assert h1 > 0.97 * math.log(4)                # close to the uniform prediction's entropy


def test_entropy():
    p = tf.constant([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(losses.entropy(p).numpy(), [math.log(4), 0.0], atol=1e-7)


def adp_numpy(y, logits, alpha, beta):
    n_members, batch, classes = logits.shape
    probs = _softmax(logits)
    total = 0.0
    for b in range(batch):
        ce = sum(-math.log(probs[n, b, y[b]]) for n in range(n_members))
        mean_p = probs[:, b].mean(0)
        ee = -np.sum(mean_p * np.log(mean_p + 1e-20))
        cols = [np.delete(probs[n, b], y[b]) for n in range(n_members)]
        m = np.stack([c / np.linalg.norm(c) for c in cols], axis=1)     # [C-1, N]
        _, log_det = np.linalg.slogdet(m.T @ m + 1e-6 * np.eye(n_members))
        total += ce - alpha * ee - beta * log_det
    return total / batch


@pytest.mark.parametrize("n_members", [2, 3])
def test_adp_loss_matches_numpy(n_members):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 10, 6)
    z = rng.normal(size=(n_members, 6, 10)) * 2
    got = losses.adp_loss(tf.constant(y), tf.constant(z, tf.float32), alpha=2.0, beta=0.5).numpy()
    np.testing.assert_allclose(got, adp_numpy(y, z, 2.0, 0.5), rtol=1e-4)
