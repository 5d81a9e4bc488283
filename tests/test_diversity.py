"""GAL, DVERGE and TRS: their objectives against direct computations, their second-order terms, the
DVERGE distillation and feature candidates, and each method training through the real CLI."""
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cce_tf import diversity
from cce_tf.adversary import feature_distillation, smoothing_pgd
from cce_tf.config import DVERGEConfig, GALConfig, PGDConfig, TRSConfig
from cce_tf.ensemble import Ensemble, build_ensemble, load_run
from cce_tf.methods import make_trainer
from cce_tf.models import build_member, feature_layers, feature_model
from conftest import train_cli
from test_data import make_cifar10, make_cifar100


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ce(z, label):
    z = z - z.max()
    return float(np.log(np.exp(z).sum()) - z[label])


def tiny_ensemble(n=3, seed=0):
    """Members with smooth (tanh) units and no dropout: deterministic, twice differentiable."""
    keras.utils.set_random_seed(seed)
    members = []
    for k in range(n):
        inputs = keras.Input((4, 4, 1))
        h = keras.layers.Dense(6, activation="tanh")(keras.layers.Flatten()(inputs))
        members.append(keras.Model(inputs, keras.layers.Dense(3)(h), name=f"m{k}"))
    return Ensemble(members)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return (tf.constant(rng.uniform(size=(5, 4, 4, 1)).astype("float32")),
            tf.constant(rng.integers(0, 3, 5)))


@pytest.fixture(scope="module")
def fmnist_train():
    from cce_tf import data
    x, y = data.load("fashion_mnist", "train")
    return x[:256], y[:256]


def explicit_gradients(ens, x, y):
    """g[n, b] = d C(f^n(x_b), y_b) / d x_b, one tape per member and sample."""
    out = np.zeros((len(ens.members), *x.shape), np.float32)
    for n, m in enumerate(ens.members):
        for b in range(x.shape[0]):
            xb = x[b:b + 1]
            with tf.GradientTape() as tape:
                tape.watch(xb)
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y[b:b + 1], m(xb))
            out[n, b] = tape.gradient(loss, xb)[0].numpy()
    return out


def test_input_gradients_are_each_members_per_sample_gradients(batch):
    ens = tiny_ensemble()
    x, y = batch
    z, g = diversity.input_gradients(ens.members, x, y, training=False)
    assert z.shape == (3, 5, 3) and g.shape == (3, 5, 4, 4, 1)
    np.testing.assert_allclose(g.numpy(), explicit_gradients(ens, x, y), rtol=1e-5, atol=1e-7)


def test_gal_loss_by_hand(batch):
    ens = tiny_ensemble()
    x, y = batch
    g = explicit_gradients(ens, x, y).reshape(3, 5, -1)
    z = ens.member_logits(x).numpy()
    ce = sum(np.mean([_ce(z[n, b], int(y[b])) for b in range(5)]) for n in range(3))
    coherence = np.mean([math.log(sum(math.exp(_cos(g[i, b], g[j, b])) for i, j in ((0, 1), (0, 2), (1, 2))))
                         for b in range(5)])
    # The trainer's objective: the same number from its own nested tapes.
    trainer = make_trainer("gal", ens, None, gal=GALConfig(lam=0.5))
    loss, _, logits_adv = trainer.objective(x, None, y)
    assert logits_adv is None
    assert float(loss) == pytest.approx(ce + 0.5 * coherence, rel=1e-5)


def test_trs_loss_by_hand(batch):
    ens = tiny_ensemble()
    x, y = batch
    x_tilde = tf.clip_by_value(x[2:] + 0.05, 0.0, 1.0)   # the smoothing points of the second half
    g = explicit_gradients(ens, x, y).reshape(3, 5, -1)
    g_tilde = explicit_gradients(ens, x_tilde, y[2:]).reshape(3, 3, -1)
    z = ens.member_logits(x).numpy()
    ce = sum(np.mean([_ce(z[n, b], int(y[b])) for b in range(5)]) for n in range(3))
    sim = np.mean([abs(_cos(g[i, b], g[j, b])) for i, j in ((0, 1), (0, 2), (1, 2)) for b in range(5)])
    smooth_points = np.concatenate([g[:, :2], g_tilde], axis=1)          # x's first half, then x~
    smooth = np.mean(np.sum(smooth_points**2, axis=-1))
    trainer = make_trainer("trs", ens, None, trs=TRSConfig(lambda_a=10.0, lambda_b=3.0))
    loss, _, logits_adv = trainer.objective(x, x_tilde, y)
    assert logits_adv.shape == (3, 3)
    assert float(loss) == pytest.approx(ce + 10.0 * sim + 3.0 * smooth, rel=1e-5)
    # The pure function on explicit gradients gives the same.
    pure = diversity.trs_loss(y, tf.constant(z), tf.constant(g), tf.constant(smooth_points), 10.0, 3.0)
    assert float(pure) == pytest.approx(ce + 10.0 * sim + 3.0 * smooth, rel=1e-5)


def test_pairwise_cosines_of_known_vectors():
    g = tf.constant([[[1.0, 0.0]], [[1.0, 1.0]], [[-1.0, 0.0]], [[0.0, 0.0]]])   # [N=4, B=1, 2]
    cos = diversity.pairwise_cosines(g).numpy()[:, 0]
    s = 1 / math.sqrt(2)
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); a zero gradient has cosine 0, not NaN
    np.testing.assert_allclose(cos, [s, -1, 0, -s, 0, 0], atol=1e-6)


@pytest.mark.parametrize("method", ["gal", "trs"])
def test_input_gradient_terms_carry_weight_gradients(batch, method):
    # The regulariser R(theta) = (objective(lambda) - objective(0)) / lambda depends on the weights
    # only through the input gradients. Its weight gradient must be non-zero and match central
    # finite differences: a stop_gradient on the input gradients (or a stopped inner tape) would
    # leave the first at 0 and fail here.
    ens = tiny_ensemble(seed=1)
    x, y = batch
    x_tilde = tf.clip_by_value(x[2:] + 0.05, 0.0, 1.0)
    if method == "gal":
        with_reg = make_trainer("gal", ens, None, gal=GALConfig(lam=1.0))
        without = make_trainer("gal", ens, None, gal=GALConfig(lam=0.0))
        args = (x, None, y)
    else:
        with_reg = make_trainer("trs", ens, None, trs=TRSConfig(lambda_a=1.0, lambda_b=1.0))
        without = make_trainer("trs", ens, None, trs=TRSConfig(lambda_a=0.0, lambda_b=0.0))
        args = (x, x_tilde, y)
    reg = lambda: with_reg.objective(*args)[0] - without.objective(*args)[0]
    weights = ens.trainable_variables
    with tf.GradientTape() as tape:
        r = reg()
    grads = tape.gradient(r, weights)
    assert all(g is not None for g in grads)
    direction = [tf.random.stateless_normal(w.shape, seed=[k, 7]) for k, w in enumerate(weights)]
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    h = 1e-3   # small: |cos| has a kink at 0, and some pairs sit near it

    def shifted(step):
        for w, d in zip(weights, direction):
            w.assign_add(step * d)
        value = float(reg())
        for w, d in zip(weights, direction):
            w.assign_sub(step * d)
        return value

    numeric = (shifted(h) - shifted(-h)) / (2 * h)
    assert abs(analytic) > 1e-3, analytic
    assert analytic == pytest.approx(numeric, rel=1e-2, abs=1e-3)


def test_dverge_losses_by_hand():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 3, 4, 5)).astype("float32")         # member i on x'_j
    zc = rng.normal(size=(3, 4, 5)).astype("float32")
    y_s, y = np.array([0, 1, 2, 3]), np.array([4, 3, 2, 1])
    got = diversity.dverge_losses(tf.constant(y_s), tf.constant(z), tf.constant(zc), tf.constant(y)).numpy()
    for i in range(3):
        want = sum(np.mean([_ce(z[i, j, b], y_s[b]) for b in range(4)]) for j in range(3) if j != i)
        want_plus = want + np.mean([_ce(zc[i, b], y[b]) for b in range(4)])
        assert got[i] == pytest.approx(want_plus, rel=1e-5)
        plain = diversity.dverge_losses(tf.constant(y_s), tf.constant(z)).numpy()
        assert plain[i] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("arch,shape,classes,count", [("cnn", (28, 28, 1), 10, 7), ("cnn", (32, 32, 3), 100, 10),
                                                      ("resnet20", (32, 32, 3), 10, 20)])
def test_feature_candidates(arch, shape, classes, count):
    member = build_member(arch, shape, classes)
    assert len(feature_layers(member)) == count
    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype("float32")
    np.testing.assert_allclose(feature_model(member, -1)(x).numpy(), member(x).numpy(), rtol=1e-5, atol=1e-5)
    feats = feature_model(member)(x)
    assert len(feats) == count
    if arch == "resnet20":   # DVERGE's before_relu: the features have negative entries
        assert all(float(tf.reduce_min(f)) < 0 for f in feats[:-1])
    else:                    # fused ReLU: post-activation
        assert all(float(tf.reduce_min(f)) >= 0 for f in feats[:-1])


@pytest.mark.parametrize("layer", [1, 4, 6])
def test_distillation_matches_features_inside_its_ball(fmnist_test, layer):
    keras.utils.set_random_seed(0)
    members = [build_member("cnn", (28, 28, 1), 10) for _ in range(2)]
    fns = [feature_model(m) for m in members]
    x, x_s = tf.constant(fmnist_test[0][:16]), tf.constant(fmnist_test[0][16:32])
    cfg = PGDConfig(eps=0.1, eps_iter=0.01, nb_iter=10)
    x_d = feature_distillation(fns, x_s, x, tf.constant(layer), cfg).numpy()
    assert x_d.shape == (2, 16, 28, 28, 1)
    assert np.abs(x_d - x_s.numpy()[None]).max() <= cfg.eps + 1e-6
    assert x_d.min() >= 0 and x_d.max() <= 1
    for j, fn in enumerate(fns):
        dist = lambda z: float(tf.reduce_sum(tf.square(fn(z)[layer] - fn(x)[layer])))
        assert dist(x_d[j]) < 0.8 * dist(x_s), (j, dist(x_d[j]), dist(x_s))


def test_smoothing_pgd_raises_the_gradient_norm_inside_its_ball(batch):
    ens = tiny_ensemble()
    x, y = batch
    rng = tf.random.Generator.from_seed(0)
    x_t = smoothing_pgd(ens.members, x, y, tf.constant(0.2), 6, rng).numpy()
    assert np.abs(x_t - x.numpy()).max() <= 0.2 + 1e-6 and x_t.min() >= 0 and x_t.max() <= 1
    norm = lambda z: float(tf.reduce_sum(tf.square(diversity.input_gradients(ens.members, z, y, False)[1])))
    assert norm(tf.constant(x_t)) > norm(x)


def test_trs_radius_grows_with_the_epochs():
    trainer = make_trainer("trs", build_ensemble("cnn", (28, 28, 1), 10, 2), None,
                           trs=TRSConfig(eps=0.1, eps_end=0.2), steps_per_epoch=10, epochs=4)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.optimizer.build(trainer.ensemble.trainable_variables)
    radii = []
    for step in (0, 9, 10, 39):
        trainer.optimizer.iterations.assign(step)
        radii.append(float(trainer.smoothing_eps()))
    assert radii == pytest.approx([0.1, 0.1, 0.125, 0.175])


def test_dverge_draws_come_from_its_generator(fmnist_test):
    keras.utils.set_random_seed(0)
    ens = build_ensemble("cnn", (28, 28, 1), 10, 2)
    dverge = DVERGEConfig(PGDConfig(eps=0.1, eps_iter=0.01, nb_iter=2))
    x, y = tf.constant(fmnist_test[0][:8]), tf.constant(fmnist_test[1][:8])
    a = make_trainer("dverge", ens, None, dverge=dverge, seed=3)
    b = make_trainer("dverge", ens, None, dverge=dverge, seed=3)
    (xa, ya), (xb, yb) = a.adversarial(x, y), b.adversarial(x, y)
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert sorted(ya.numpy()) == sorted(y.numpy())           # a permutation of the batch's labels
    xa2, _ = a.adversarial(x, y)                              # the generator moved on: new draws
    assert not np.array_equal(xa.numpy(), xa2.numpy())


@pytest.mark.parametrize("method,kwargs", [
    ("gal", {}),
    ("dverge", dict(dverge=DVERGEConfig(PGDConfig(eps=0.35, eps_iter=0.035, nb_iter=2), "plus"))),
    ("trs", dict(trs=TRSConfig(nb_iter=2))),
])
def test_each_diversity_method_lowers_its_loss(fmnist_train, method, kwargs):
    # One batch of 32 real images, seen 12 times: the objective, its regularisers included, falls.
    keras.utils.set_random_seed(0)
    x, y = fmnist_train[0][:32], fmnist_train[1][:32]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat(4)
    trainer = make_trainer(method, build_ensemble("cnn", (28, 28, 1), 10, 2),
                           PGDConfig(eps=0.1, eps_iter=0.05, nb_iter=2), **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    hist = trainer.fit(ds, epochs=3, verbose=0).history
    assert all(math.isfinite(v) for v in hist["loss"])
    assert hist["loss"][-1] < hist["loss"][0] - 0.1, hist["loss"]
    assert "adv_acc" in hist if method != "gal" else "adv_acc" not in hist


def fake_run(folder, dataset="fashion_mnist", arch="cnn", members=2, seed=0) -> str:
    """A run folder with config.json and freshly initialised weights: a warm-start source."""
    from cce_tf import data
    info = data.info(dataset)
    keras.utils.set_random_seed(seed)
    os.makedirs(folder)
    build_ensemble(arch, info.input_shape, info.num_classes, members).save_weights(
        os.path.join(folder, "ensemble.weights.h5"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(dataset=dataset, arch=arch, members=members, input_shape=list(info.input_shape),
                       num_classes=info.num_classes), f)
    return str(folder)


def test_cli_trains_dverge_warm_started_on_fashion_mnist(tmp_path):
    src = fake_run(tmp_path / "src")
    out = tmp_path / "dverge"
    # A vanishing learning rate keeps the members at the weights they started from.
    proc = train_cli(out, "--method", "dverge", "--dverge_variant", "plus", "--dverge_nb_iter", "1", "--init_from",
                     src, "--learning_rate", "1e-30", "--train_subset", "64", "--test_subset", "64", "--batch_size",
                     "32", "--epochs", "1")
    assert "clean test accuracy" in proc.stdout
    cfg = json.load(open(out / "config.json"))
    from cce_tf.fingerprint import file_sha256
    assert cfg["init_from"] == src
    assert cfg["init_from_sha256"] == file_sha256(os.path.join(src, "ensemble.weights.h5"))
    assert cfg["dverge"] == {"variant": "plus", "eps": 0.35, "eps_iter": 0.035, "nb_iter": 1}
    assert (cfg["gal"], cfg["trs"]) == (None, None)
    for a, b in zip(load_run(src).weights, load_run(str(out)).weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize("dataset,method,extra", [("cifar10", "gal", ("--gal_adv", "--nb_iter", "1")),
                                                  ("cifar100", "trs", ("--trs_nb_iter", "1"))])
def test_cli_trains_on_the_cifar_fixtures(tmp_path, monkeypatch, dataset, method, extra):
    (make_cifar10 if dataset == "cifar10" else make_cifar100)(tmp_path / "data")
    monkeypatch.setenv("CCE_DATA_DIR", str(tmp_path / "data"))
    proc = train_cli(tmp_path / "run", "--dataset", dataset, "--method", method, "--epochs", "1", "--batch_size", "4",
                     *extra)
    assert "clean test accuracy" in proc.stdout
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["method"] == method and cfg[method] is not None
    history = json.load(open(tmp_path / "run" / "history.json"))
    assert "adv_acc" in history[0] and math.isfinite(history[0]["loss"])


def test_dverge_trains_resnet20_members(tmp_path):
    # ResNet-20's 20 pre-ReLU candidates, BatchNorm in the distilled pass: one step, finite, weights move.
    keras.utils.set_random_seed(0)
    ens = build_ensemble("resnet20", (32, 32, 3), 10, 2)
    trainer = make_trainer("dverge", ens, None, dverge=DVERGEConfig(PGDConfig(eps=0.07, eps_iter=0.007, nb_iter=1)))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy() for w in ens.trainable_variables]
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    out = trainer.train_step((tf.constant(x), tf.constant([0, 1, 2, 3], tf.int64)))
    assert math.isfinite(float(out["loss"])) and trainer.n_layers == 20
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, ens.trainable_variables))
