"""Training-time PGD, every method's train_step, and the ensemble contract, on real Fashion-MNIST."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from cce_tf.adversary import pgd, pgd_per_member
from cce_tf.config import PGDConfig
from cce_tf.ensemble import build_ensemble
from cce_tf.methods import make_trainer
from cce_tf.models import build_member

CFG = PGDConfig(eps=0.1, eps_iter=0.025, nb_iter=5)


@pytest.fixture(scope="module")
def fmnist_train():
    from cce_tf import data
    x, y = data.load("fashion_mnist", "train")
    return x[:256], y[:256]


def test_ensemble_logits_are_log_mean_softmax(fmnist_test):
    ens = build_ensemble("cnn", (28, 28, 1), 10, n_members=3)
    x = fmnist_test[0][:8]
    z = ens.member_logits(x).numpy()
    assert z.shape == (3, 8, 10)
    want = tf.nn.softmax(z).numpy().mean(0)
    np.testing.assert_allclose(tf.nn.softmax(ens(x)).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(np.exp(ens(x).numpy()), want, rtol=1e-5)


@pytest.mark.parametrize("arch,shape,classes,params", [("cnn", (28, 28, 1), 10, None),
                                                      ("cnn", (32, 32, 3), 100, None),
                                                      ("resnet20", (32, 32, 3), 10, 274_442)])
def test_members_return_logits(arch, shape, classes, params):
    m = build_member(arch, shape, classes)
    out = m(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, classes)
    if params:  # the Keras cifar10 ResNet-20 v1 example, which ADP builds on, has 274,442
        assert m.count_params() == params


def test_pgd_matches_cleverhans_given_the_same_random_start(fmnist_test, monkeypatch):
    import cleverhans.tf2.attacks.projected_gradient_descent as cleverhans_pgd
    model = build_member("cnn", (28, 28, 1), 10)
    x, y = tf.constant(fmnist_test[0][:16]), tf.constant(fmnist_test[1][:16])
    ours = pgd(model, x, y, CFG, tf.random.Generator.from_seed(3)).numpy()
    # cleverhans draws its start U(-eps, eps) from the global random state: draw it from ours.
    start = tf.random.Generator.from_seed(3)
    monkeypatch.setattr(cleverhans_pgd, "random_lp_vector",
                        lambda shape, norm, eps, dtype: start.uniform(shape, -eps, eps, dtype=dtype))
    theirs = projected_gradient_descent(model, x, CFG.eps, CFG.eps_iter, CFG.nb_iter, np.inf, clip_min=0.0,
                                        clip_max=1.0, y=y, rand_init=True, sanity_checks=False).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    again = pgd(model, x, y, CFG, tf.random.Generator.from_seed(3)).numpy()
    np.testing.assert_array_equal(ours, again)    # the generator alone decides the start


def test_random_eps_pgd_stays_in_its_ball(fmnist_test):
    model = build_member("cnn", (28, 28, 1), 10)
    x, y = tf.constant(fmnist_test[0][:16]), tf.constant(fmnist_test[1][:16])
    cfg = PGDConfig(eps=0.01, eps_iter=0.0, nb_iter=3, eps_max=0.05)
    rng = tf.random.Generator.from_seed(0)
    x_adv = tf.function(lambda a, b: pgd(model, a, b, cfg, rng))(x, y).numpy()
    assert np.abs(x_adv - x.numpy()).max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_per_member_attacks_each_member_alone(fmnist_test):
    # Member 1 is constant in x, so its attack has no gradient: x_a^1 stays at the random start,
    # while x_a^0 climbs member 0's loss.
    member0 = build_member("cnn", (28, 28, 1), 10)
    inputs = keras.Input((28, 28, 1))
    member1 = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs * 0.0)))
    x, y = tf.constant(fmnist_test[0][:32]), tf.constant(fmnist_test[1][:32])
    x_a = pgd_per_member([member0, member1], x, y, CFG, tf.random.Generator.from_seed(0)).numpy()
    assert x_a.shape == (2, 32, 28, 28, 1)
    assert np.abs(x_a - x.numpy()[None]).max() <= CFG.eps + 1e-6
    ce = lambda xa: float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, member0(xa))))
    assert ce(x_a[0]) > ce(x_a[1]) + 0.01


@pytest.mark.parametrize("method,members", [("nat", 2), ("adv", 1), ("adv-en", 2), ("adp", 2), ("cce", 2),
                                            ("cce", 3)])
def test_each_method_lowers_its_loss(fmnist_train, method, members):
    keras.utils.set_random_seed(0)
    x, y = fmnist_train
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    trainer = make_trainer(method, build_ensemble("cnn", (28, 28, 1), 10, members),
                           PGDConfig(eps=0.1, eps_iter=0.05, nb_iter=2))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = trainer.fit(ds, epochs=4, verbose=0).history
    assert all(math.isfinite(v) for v in hist["loss"])
    assert hist["loss"][-1] < hist["loss"][0] - 0.05, hist["loss"]
    assert ("adv_acc" in hist) == (method != "nat")


def test_cce_updates_each_member_by_its_own_loss(fmnist_train):
    # For CCE, d(sum_n L^n)/d theta_m == d L^m / d theta_m: members are coupled only through x_adv.
    from cce_tf import losses
    ens = build_ensemble("cnn", (28, 28, 1), 10, 2)
    x, y = tf.constant(fmnist_train[0][:16]), tf.constant(fmnist_train[1][:16])
    x_a = pgd_per_member(ens.members, x, y, CFG, tf.random.Generator.from_seed(0))
    def per_member():
        z = tf.stack([tf.stack([m(xx, training=False) for xx in [x, x_a[0], x_a[1]]]) for m in ens.members])
        return losses.cce_losses(y, z[:, 0], z[:, 1:], 1.0, 1.0)
    with tf.GradientTape(persistent=True) as tape:
        per = per_member()
        total, loss0, loss1 = tf.reduce_sum(per), per[0], per[1]
    w1 = ens.members[1].trainable_variables
    for g_total, g_own in zip(tape.gradient(total, w1), tape.gradient(loss1, w1)):
        np.testing.assert_allclose(g_total.numpy(), g_own.numpy(), atol=1e-6)
    assert all(g is None or not np.any(g.numpy()) for g in tape.gradient(loss0, w1))


def test_cce_adv_acc_is_the_ensemble_on_each_members_adversarial_examples():
    # objective's third output, row block i, is log f^en(x_a^i): the mean of the members' softmax.
    keras.utils.set_random_seed(0)
    members = []
    for _ in range(2):
        inputs = keras.Input((4, 4, 1))
        members.append(keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs))))
    from cce_tf.ensemble import Ensemble
    ens = Ensemble(members)
    rng = np.random.default_rng(0)
    x, x_a = (tf.constant(rng.uniform(size=s).astype("float32")) for s in ((5, 4, 4, 1), (2, 5, 4, 4, 1)))
    _, _, en_adv = make_trainer("cce", ens, CFG).objective(x, x_a, tf.constant([0, 1, 2, 0, 1]))
    want = np.concatenate([tf.nn.softmax(ens.member_logits(x_a[i])).numpy().mean(0) for i in range(2)])
    np.testing.assert_allclose(tf.nn.softmax(en_adv).numpy(), want, atol=1e-6)
