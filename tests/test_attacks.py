"""Tests of the attacks package: every adapter on a tiny undefended CNN (and a 2-member ensemble
of them) trained on real Fashion-MNIST; the library shims, the TF -> torch bridge, the registry.
"""
import importlib
import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import AttackUnavailable, autoattack, brendel_bethge, gradient, registry, spsa
from cce_tf import data

TOL = 1e-6  # float32 slack on the ε-ball

# --------------------------------------------------------------------------------------------------
# Fixtures: two tiny CNNs trained for one epoch, and their ensemble
# --------------------------------------------------------------------------------------------------


def _member(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),  # logits
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="session")
def members():
    x, y = data.load("fashion_mnist", "train")
    trained = []
    for seed in (0, 1):
        model = _member(seed)
        model.fit(x[:4000], y[:4000], batch_size=32, epochs=1, verbose=0)
        trained.append(model)
    return trained


@pytest.fixture(scope="session")
def ensemble(members):
    """log of the mean of the members' softmax: logsumexp_n(log_softmax(z_n)) - log N."""
    inputs = keras.Input((28, 28, 1))
    log_p = keras.ops.stack([keras.ops.log_softmax(m(inputs)) for m in members])
    return keras.Model(inputs, keras.ops.logsumexp(log_p, axis=0) - math.log(len(members)))


@pytest.fixture(scope="session")
def batch(fmnist_test):
    """64 real test images and their labels (read-only arrays, so in-place writes would fail)."""
    x, y = fmnist_test
    return x[:64], y[:64]


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model(tf.constant(x)), axis=1) == y))


def p_true(model, x, y) -> np.ndarray:
    return tf.nn.softmax(model(tf.constant(x))).numpy()[np.arange(len(y)), y]


def assert_in_bounds(x_adv, x, eps):
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= eps + TOL
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_fixture_models_learned(members, ensemble, batch):
    """Well above chance (10 %): they score 67-72 % on these 64 images, which a bound of 60 % left
    within two samples' rounding of; 30 % no processor's last bits can reach."""
    x, y = batch
    assert all(accuracy(m, x, y) > 0.3 for m in members)
    assert accuracy(ensemble, x, y) > 0.3


# --------------------------------------------------------------------------------------------------
# Gradient attacks (cleverhans)
# --------------------------------------------------------------------------------------------------

GRADIENT = ["fgsm", "pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim"]


def _params(name, eps, eps_iter, nb_iter):
    if name == "fgsm":
        return {"eps": eps}
    return {"eps": eps, "eps_iter": eps_iter, "nb_iter": nb_iter}


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_attack_breaks_undefended_ensemble_at_large_eps(name, ensemble, batch):
    x, y = batch
    x_adv = registry.run(name, ensemble, x, y, **_params(name, 0.3, 0.05, 10))
    assert_in_bounds(x_adv, x, 0.3)
    # One FGSM step is weaker than the iterative attacks.
    assert accuracy(ensemble, x_adv, y) <= (0.15 if name == "fgsm" else 0.02)


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_attack_stays_in_small_ball_on_one_member(name, members, batch):
    x, y = batch
    x_adv = registry.run(name, members[0], x[:16], y[:16], **_params(name, 0.02, 0.005, 5))
    assert_in_bounds(x_adv, x[:16], 0.02)
    assert np.abs(x_adv - x[:16]).max() > 0.01  # it did move


@pytest.mark.parametrize("base", ["pgd", "bim", "mim"])
def test_multi_targeted_breaks_about_as_many_as_untargeted(base, ensemble, fmnist_test):
    x, y = fmnist_test[0][:128], fmnist_test[1][:128]
    params = _params(base, 0.1, 0.02, 10)
    acc = accuracy(ensemble, registry.run(base, ensemble, x, y, **params), y)
    acc_mul = accuracy(ensemble, registry.run("mul_" + base, ensemble, x, y, **params), y)
    assert acc_mul <= acc + 2 / len(y)


def test_multi_targeted_keeps_first_success_else_lowest_true_probability():
    # Three classes; an "image" is its own logits (1x1 pixel, 3 channels), so the stub attack below
    # chooses exactly what the model predicts for every target.
    def model(x):
        return tf.reshape(tf.cast(x, tf.float32), [-1, 3]) * 10.0

    y = np.array([0, 0, 0], np.int64)
    x = np.full((3, 1, 1, 3), 0.5, np.float32)
    x[:, 0, 0, 0] = 0.6  # all correct (class 0)
    outcomes = {  # target t -> per-sample image after the targeted attack
        1: [[0.5, 0.3, 0.2], [0.4, 0.3, 0.2], [0.1, 0.9, 0.0]],  # sample 2 broken by t=1
        2: [[0.1, 0.0, 0.9], [0.35, 0.3, 0.2], [0.0, 0.0, 1.0]],  # sample 0 broken by t=2
    }
    calls = []

    def stub_attack(model, x, y, targeted, y_target, eps):
        assert targeted and eps == 0.5
        t = int((y_target[0] - y[0]) % 3)
        calls.append((t, len(x)))
        rows = [outcomes[t][i] for i in range(3) if len(x) == 3 or i != 2]
        return np.array(rows, np.float32).reshape(-1, 1, 1, 3)

    x_adv = gradient.multi_targeted(stub_attack, model, x, y, eps=0.5)
    assert calls == [(1, 3), (2, 2)]  # sample 2, broken by t=1, is not attacked again
    np.testing.assert_allclose(x_adv[0, 0, 0], outcomes[2][0])  # first success
    np.testing.assert_allclose(x_adv[2, 0, 0], outcomes[1][2])  # first success
    # sample 1 is never broken: the candidate with the lower p(true class), here t=2
    np.testing.assert_allclose(x_adv[1, 0, 0], outcomes[2][1])


def test_compiled_attacks_trace_once_per_model(members, batch):
    x, y = batch
    model = members[1]
    for n, k in [(16, 3), (7, 5), (33, 2)]:  # new batch sizes and step counts: no retrace
        gradient.pgd(model, x[:n], y[:n], eps=0.05, eps_iter=0.01, nb_iter=k)
        gradient.mim(model, x[:n], y[:n], eps=0.05, eps_iter=0.01, nb_iter=k)
    for method in ("pgd", "mim"):
        fn = gradient.compiled_attack(model, method, False, 0.05, 0.01, 1.0, x.shape[1:])
        assert fn.experimental_get_tracing_count() == 1
    # a second model gets its own compiled function
    gradient.pgd(members[0], x[:4], y[:4], eps=0.05, eps_iter=0.01, nb_iter=2)
    fn0 = gradient.compiled_attack(members[0], "pgd", False, 0.05, 0.01, 1.0, x.shape[1:])
    assert fn0 is not gradient.compiled_attack(model, "pgd", False, 0.05, 0.01, 1.0, x.shape[1:])
    assert fn0.experimental_get_tracing_count() == 1


def test_bim_is_deterministic_pgd_is_not(members, batch):
    x, y = batch[0][:8], batch[1][:8]
    kw = dict(eps=0.05, eps_iter=0.01, nb_iter=3)
    np.testing.assert_array_equal(gradient.bim(members[0], x, y, **kw),
                                  gradient.bim(members[0], x, y, **kw))
    assert not np.array_equal(gradient.pgd(members[0], x, y, **kw),
                              gradient.pgd(members[0], x, y, **kw))


def test_targeted_attack_needs_y_target(members, batch):
    with pytest.raises(ValueError, match="y_target"):
        gradient.pgd(members[0], batch[0][:2], batch[1][:2], 0.1, 0.01, 2, targeted=True)


# --------------------------------------------------------------------------------------------------
# SPSA (cleverhans, Keras 3 shim)
# --------------------------------------------------------------------------------------------------


def test_unpatched_cleverhans_spsa_fails_under_keras3(members, batch):
    """Why the shim exists; if this starts passing, the shim may be removable."""
    from cleverhans.tf2.attacks.spsa import spsa as raw_spsa
    with pytest.raises(ValueError, match="lr"):
        raw_spsa(members[0], tf.constant(batch[0][:1]), tf.constant(batch[1][:1]), eps=0.1,
                 nb_iter=1, clip_min=0.0, clip_max=1.0)


def test_spsa_shim_is_scoped():
    from cleverhans.tf2.attacks.spsa import SPSAAdam
    assert SPSAAdam.__bases__ == (keras.optimizers.Adam,)
    with spsa.keras3_spsa_compat():
        with spsa.keras3_spsa_compat():  # re-entrant
            assert SPSAAdam.__bases__ == (spsa._AdamHyperparameters,)
        assert SPSAAdam.__bases__ == (spsa._AdamHyperparameters,)
        assert SPSAAdam(lr=0.05).lr == 0.05
    assert SPSAAdam.__bases__ == (keras.optimizers.Adam,)


def test_spsa_lowers_true_class_probability(ensemble, batch):
    x, y = batch
    right = np.flatnonzero(np.argmax(ensemble(tf.constant(x)), axis=1) == y)[:4]
    x, y = x[right], y[right]
    x_adv = spsa.spsa(ensemble, x, y, eps=0.3, nb_iter=50)
    assert_in_bounds(x_adv, x, 0.3)
    assert np.all(p_true(ensemble, x_adv, y) < p_true(ensemble, x, y))
    assert accuracy(ensemble, x_adv, y) <= 0.5
    assert list(spsa._COMPILED[ensemble].values())[0].experimental_get_tracing_count() == 1


# --------------------------------------------------------------------------------------------------
# Brendel & Bethge (foolbox)
# --------------------------------------------------------------------------------------------------


def test_bb_from_starting_points_counts_at_eps(ensemble, batch):
    x, y = batch[0][:16], batch[1][:16]
    starts = gradient.pgd(ensemble, x, y, eps=0.3, eps_iter=0.05, nb_iter=10)
    starts[0] = x[0]  # a start that is not adversarial (if x[0] is classified right): not attacked
    eps = 0.05
    x_adv, success = brendel_bethge.from_starting_points(ensemble, x, y, starts, eps, steps=20)
    assert_in_bounds(x_adv, x, eps)
    assert success.any() and not success.all()  # some B&B results lie beyond ε=0.05 ...
    np.testing.assert_array_equal(x_adv[~success], x[~success])  # ... and those are reset to x
    assert np.all(np.argmax(ensemble(tf.constant(x_adv[success])), axis=1) != y[success])
    if np.argmax(ensemble(tf.constant(x[:1]))) == y[0]:
        assert not success[0]


def test_bb_adapter_breaks_undefended_ensemble(ensemble, batch):
    x, y = batch[0][:16], batch[1][:16]
    x_adv = registry.run("bb_pgd2", ensemble, x, y, eps=0.3, start_eps=0.3, start_eps_iter=0.05,
                         start_nb_iter=10, steps=20, repeats=2)
    assert_in_bounds(x_adv, x, 0.3)
    assert accuracy(ensemble, x_adv, y) <= 0.05


# --------------------------------------------------------------------------------------------------
# AutoAttack (official code through the TF -> torch bridge)
# --------------------------------------------------------------------------------------------------


def test_bridge_matches_tf_logits_and_input_gradients(ensemble, batch):
    torch = pytest.importorskip("torch")
    x = batch[0][:8]
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    logits = autoattack.tf_to_torch(ensemble)(x_torch)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    (logits * weights).sum().backward()

    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        logits_tf = ensemble(x_tf)
        objective = tf.reduce_sum(logits_tf * weights.numpy())
    grad_tf = tape.gradient(objective, x_tf).numpy()
    np.testing.assert_allclose(logits.detach().numpy(), logits_tf.numpy(), atol=1e-5)
    np.testing.assert_allclose(x_torch.grad.numpy().transpose(0, 2, 3, 1), grad_tf, atol=1e-5)


def test_bridge_backward_twice_on_one_forward(ensemble, batch):
    """FAB's pattern: one forward, then one backward per class with retain_graph=True."""
    torch = pytest.importorskip("torch")
    x = batch[0][:4]
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    logits = autoattack.tf_to_torch(ensemble)(x_torch)
    x_tf = tf.constant(x)
    for c in (3, 7):
        mask = torch.zeros_like(logits)
        mask[:, c] = 1.0
        x_torch.grad = None
        logits.backward(mask, retain_graph=True)
        with tf.GradientTape() as tape:
            tape.watch(x_tf)
            z_c = ensemble(x_tf)[:, c]
        np.testing.assert_allclose(x_torch.grad.numpy().transpose(0, 2, 3, 1),
                                   tape.gradient(z_c, x_tf).numpy(), atol=1e-5)


@pytest.mark.parametrize("attacks", [["apgd-ce"], None])
def test_autoattack_breaks_undefended_ensemble(attacks, ensemble, batch):
    pytest.importorskip("pyautoattack")
    x, y = batch[0][:4], batch[1][:4]
    version = "standard" if attacks is None else "custom"
    x_adv = autoattack.autoattack(ensemble, x, y, eps=0.3, version=version, attacks=attacks)
    assert_in_bounds(x_adv, x, 0.3)
    assert accuracy(ensemble, x_adv, y) == 0.0


def test_autoattack_stages_match_one_standard_run(monkeypatch, ensemble, batch):
    """Sub-attack by sub-attack gives the one-call standard evaluation's x_adv, and broken_by says
    which sub-attack broke each sample (a clean error counts as broken by the first). Two of the four
    sub-attacks keep it fast: FAB-T and Square go through the same loop."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(autoattack, "STANDARD_ATTACKS", ("apgd-ce", "apgd-t"))
    x, y = batch[0][:8], batch[1][:8].copy()
    y[0] = (y[0] + 1) % 10                       # a sample the model gets wrong before any attack
    eps = 0.04                                   # small enough that APGD-CE leaves some robust
    x_adv, broken_by = autoattack.autoattack_stages(ensemble, x, y, eps=eps, batch_size=8)
    _, adversary, device = autoattack._adversary(ensemble, eps, "standard", None, 0)
    adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
    np.testing.assert_array_equal(x_adv, autoattack._run(torch, adversary, device, x, y, 8)[0])
    fooled = np.argmax(ensemble(tf.constant(x_adv)), axis=1) != y
    np.testing.assert_array_equal(fooled, broken_by != autoattack.NOT_BROKEN)
    assert broken_by[0] == 0 and set(broken_by) - {0}
    assert_in_bounds(x_adv, x, eps)


def test_autoattack_unavailable_without_torch(monkeypatch, ensemble, batch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    module = importlib.reload(autoattack)  # importing the adapter still works
    with pytest.raises(AttackUnavailable, match="pip install -r requirements-autoattack.txt"):
        module.autoattack(ensemble, batch[0][:2], batch[1][:2], eps=0.1)
    monkeypatch.undo()
    importlib.reload(autoattack)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_names():
    assert list(registry.ATTACKS) == ["fgsm", "pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd",
                                      "mul_bim", "mul_mim", "spsa", "bb_pgd1", "bb_pgd2", "autoattack", "cascade"]
    assert registry.PAPER_ATTACKS == ("pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim", "spsa",
                                      "bb_pgd1", "bb_pgd2", "autoattack")
    assert registry.get("mul_mim") is gradient.mul_mim
    assert registry.get("bb_pgd2").keywords == {"start": "pgd2"}
    with pytest.raises(ValueError, match="unknown attack"):
        registry.get("cw")


@pytest.mark.parametrize("dataset, eps, eps_iter", [
    ("cifar10", 8 / 255, 2 / 255), ("cifar100", 0.01, 0.001),
    ("fashion_mnist", 0.1, 0.01), ("mnist", 0.3, 0.01)])
def test_registry_default_params(dataset, eps, eps_iter):
    for name in registry.ATTACKS:
        assert registry.default_params(name, dataset)["eps"] == eps
    assert registry.default_params("pgd", dataset) == {"eps": eps, "eps_iter": eps_iter,
                                                       "nb_iter": 100}
    assert registry.default_params("bim", dataset, arch="resnet20")["nb_iter"] == 250
    assert registry.default_params("mul_mim", dataset, arch="resnet20")["nb_iter"] == 20
    assert registry.default_params("spsa", dataset)["nb_iter"] == 50
    bb1, bb2 = (registry.default_params(n, dataset) for n in ("bb_pgd1", "bb_pgd2"))
    assert (bb1["steps"], bb1["repeats"], bb1["start"], bb2["start"]) == (100, 3, "pgd1", "pgd2")
    assert (bb1["start_eps"], bb2["start_eps"], bb1["start_nb_iter"]) == (eps, 2 * eps, 20)
    assert registry.default_params("autoattack", dataset)["version"] == "standard"


def test_registry_overrides_apply_to_what_they_name():
    """--nb_iter sets k of PGD / BIM / MIM only; --eps moves every radius defined relative to ε."""
    for name in ("pgd", "bim", "mim"):
        assert registry.default_params(name, "cifar10", nb_iter=20)["nb_iter"] == 20
    assert registry.default_params("spsa", "cifar10", nb_iter=20)["nb_iter"] == 50
    assert registry.default_params("mul_pgd", "cifar10", nb_iter=7)["nb_iter"] == 20
    assert registry.default_params("mul_pgd", "cifar10", mul_nb_iter=7)["nb_iter"] == 7
    bb2 = registry.default_params("bb_pgd2", "cifar10", eps=16 / 255)
    assert (bb2["eps"], bb2["start_eps"], bb2["start_eps_iter"]) == pytest.approx((16 / 255, 32 / 255, 4 / 255))
    pgd = registry.default_params("pgd", "cifar10", eps=16 / 255)
    assert pgd["eps_iter"] == pytest.approx(4 / 255)  # η keeps its ratio to ε
    assert registry.default_params("pgd", "cifar10", eps=16 / 255, eps_iter=1 / 255)["eps_iter"] == 1 / 255


def test_registry_cifar10_bb_starts_are_the_papers():
    for name, start in (("bb_pgd1", "pgd1"), ("bb_pgd2", "pgd2")):
        p = registry.default_params(name, "cifar10")
        paper = brendel_bethge.START_ATTACKS[start]
        assert (p["start_eps"], p["start_eps_iter"], p["start_nb_iter"]) == pytest.approx(
            (paper["eps"], paper["eps_iter"], paper["nb_iter"]))


def test_registry_sample_counts_and_errors():
    for name in ("fgsm", "pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim"):
        assert registry.default_n_samples(name) is None
    for name in ("spsa", "bb_pgd1", "bb_pgd2", "autoattack"):
        assert registry.default_n_samples(name) == 1000
    with pytest.raises(ValueError, match="data set"):
        registry.default_params("pgd", "svhn")
    with pytest.raises(ValueError, match="arch"):
        registry.default_params("pgd", "cifar10", arch="vgg")


# --------------------------------------------------------------------------------------------------
# The cascade (attacks/cascade.py)
# --------------------------------------------------------------------------------------------------


class _Coded:
    """3 classes on 2x2 images: the class coded by pixel 0 (y / 10), moved to the next class when an
    attack has set pixel 1 above 0.5."""

    def __call__(self, x):
        flat = tf.reshape(x, [-1, 4])
        label = tf.cast(tf.round(flat[:, 0] * 10), tf.int32) + tf.cast(flat[:, 1] > 0.5, tf.int32)
        return tf.one_hot(label % 3, 3) * 10.0


def test_cascade_attacks_only_survivors_and_its_worst_case_is_the_per_sample_minimum(monkeypatch):
    """Stand-in stages that break known samples (and record what they were given): each stage sees
    only the samples every earlier one left, and the cascade's robust flags equal the per-sample AND
    of the same stages run separately on every sample."""
    from attacks import cascade
    n = 40
    y = np.arange(n) % 3
    x = np.zeros((n, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = y / 10
    rng = np.random.default_rng(0)
    breaks = {name: set(rng.choice(n, 8, replace=False).tolist()) for name in cascade.STAGES}
    seen = {}

    def stage(name):
        def attack(model, xs, ys, **params):
            idx = np.rint(xs[:, 1, 1, 0] * 100).astype(int)     # each image carries its index
            seen.setdefault(name, []).append(idx)
            out = xs.copy()
            out[[i in breaks[name] for i in idx], 0, 1, 0] = 1.0
            return out
        return attack

    def autoattack_stage(model, xs, ys, eps, seed, batch_size, stages):
        out = stage(stages[0])(model, xs, ys)
        return out, np.where(np.asarray(model(tf.constant(out))).argmax(-1) != ys, 0, cascade.NOT_BROKEN)

    x[:, 1, 1, 0] = np.arange(n) / 100
    for name in ("pgd", "pgd_margin", "mul_pgd"):
        monkeypatch.setattr(cascade.gradient, name, stage(name))
    monkeypatch.setattr(cascade.autoattack, "autoattack_stages", autoattack_stage)
    params = dict(eps=0.1, eps_iter=0.01, nb_iter=5, mul_eps_iter=0.02, mul_nb_iter=5)
    x_adv, broken_by = cascade.cascade_stages(_Coded(), x, y, **params)
    left = set(range(n))
    for s, name in enumerate(cascade.STAGES):
        assert set(np.concatenate(seen[name]).tolist()) == left, name       # only the survivors
        assert {i for i in range(n) if broken_by[i] == s} == left & breaks[name]
        left -= breaks[name]
    alone = np.logical_and.reduce([[i not in breaks[name] for i in range(n)] for name in cascade.STAGES])
    np.testing.assert_array_equal(broken_by == cascade.NOT_BROKEN, alone)
    np.testing.assert_array_equal(np.asarray(_Coded()(tf.constant(x_adv))).argmax(-1) != y, ~alone)
    assert registry.run_detailed("cascade", _Coded(), x, y, **params)[1]["broken_by"].tolist() == broken_by.tolist()


def test_cascade_breaks_an_undefended_ensemble_with_its_first_stage(ensemble, batch):
    """At ε = 0.3 cross-entropy PGD breaks the undefended ensemble outright: the later stages
    (AutoAttack's among them) never run, and every x_adv is inside the ball."""
    from attacks import cascade
    x, y = batch[0][:16], batch[1][:16]
    x_adv, broken_by = cascade.cascade_stages(ensemble, x, y, eps=0.3, eps_iter=0.03, nb_iter=20,
                                              mul_eps_iter=0.03, mul_nb_iter=5)
    assert_in_bounds(x_adv, x, 0.3)
    assert set(broken_by.tolist()) == {0} and accuracy(ensemble, x_adv, y) == 0.0
    p = registry.default_params("cascade", "fashion_mnist", nb_iter=40, mul_nb_iter=20)
    assert (p["nb_iter"], p["mul_nb_iter"], p["seed"]) == (40, 20, 0)
