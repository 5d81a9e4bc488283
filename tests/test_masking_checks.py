"""The evaluation the paper did not do: PGD on the margin loss, and the masking checks that fire when
a stronger attack or a transferred one beats cross-entropy PGD (Carlini et al. 2019)."""
import numpy as np
import pytest
import tensorflow as tf

from attacks import gradient, registry
from eval import sanity
from eval.analyses import blackbox


def test_margin_loss_by_hand():
    logits = tf.constant([[2.0, 5.0, 1.0], [4.0, -1.0, 3.5]])
    labels = tf.constant([0, 0], tf.int64)
    # max over the wrong classes minus the true one: 5 - 2 (misclassified), 3.5 - 4 (right)
    np.testing.assert_allclose(gradient.margin_loss(labels, logits).numpy(), [3.0, -0.5])


def test_pgd_margin_stays_in_the_ball_and_is_in_the_default_suite(tiny_run, fmnist_test):
    from cce_tf.ensemble import load_run
    ens = load_run(tiny_run)
    x, y = fmnist_test[0][:64], fmnist_test[1][:64]
    x_adv = registry.run("pgd_margin", ens, x, y, eps=0.1, eps_iter=0.01, nb_iter=5)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not np.allclose(x_adv, x)
    assert "pgd_margin" in registry.DEFAULT_ATTACKS and "pgd_margin" not in registry.PAPER_ATTACKS
    assert registry.default_params("pgd_margin", "cifar10") == registry.default_params("pgd", "cifar10")


def test_sweep_monotone_fires_on_a_rise_only():
    rising = sanity.check_sweep_monotone({"eps": [0.1, 0.2, 0.4, 0.5], "robust_accuracy": [0.5, 0.3, 0.35, 0.0]})
    assert not rising["passed"] and rising["largest_rise"] == pytest.approx(0.05)
    falling = sanity.check_sweep_monotone({"eps": [0.1, 0.2], "robust_accuracy": [0.5, 0.3]})
    assert falling["passed"]
    w = sanity.warnings_for({"sweep_monotone": rising})
    assert len(w) == 1 and "rises by 0.050" in w[0]


def test_a_stronger_attack_below_pgd_is_flagged_and_named():
    pgd = np.r_[np.ones(50, bool), np.zeros(50, bool)]          # 0.50
    mul = np.r_[np.ones(40, bool), np.zeros(60, bool)]          # 0.40: 10 points below
    margin = np.r_[np.ones(49, bool), np.zeros(51, bool)]       # 0.49: inside the threshold
    checks = sanity.check_below_pgd({"mul_pgd": mul, "pgd_margin": margin}, pgd)
    assert not checks["mul_pgd"]["passed"] and checks["pgd_margin"]["passed"]
    w = sanity.warnings_for({"below_pgd": checks})
    assert len(w) == 1 and w[0].startswith("mul_pgd (0.400) is 0.100 below")
    assert "trust mul_pgd" in w[0] and "Carlini et al. 2019" in w[0]
    # The same samples only: a longer PGD mask is cut to the attack's samples.
    assert sanity.check_below_pgd({"autoattack": mul[:20]}, pgd)["autoattack"]["n_samples"] == 20


def test_report_runs_the_new_checks_from_earlier_numbers():
    previous = {"eps_sweep": {"eps": [0.1, 0.5], "robust_accuracy": [0.4, 0.6], "max_accuracy": 0.05,
                              "passed": False},
                "double_steps": {"nb_iter": [5, 10], "robust_accuracy": [0.4, 0.4], "tolerance": 0.01,
                                 "passed": True}}
    pgd = np.ones(10, bool)
    r = sanity.report(None, {}, previous=previous, below_pgd=({"pgd_margin": np.zeros(10, bool)}, pgd))
    assert not r["sweep_monotone"]["passed"] and not r["below_pgd"]["pgd_margin"]["passed"]
    assert len(r["warnings"]) == 3  # the sweep's end, its rise, and the margin loss


def test_any_attack_above_restarted_margin_pgd_is_flagged():
    any_attack = np.r_[np.ones(45, bool), np.zeros(55, bool)]     # 0.45
    restarts = np.r_[np.ones(40, bool), np.zeros(60, bool)]       # 0.40: the worst case is 5 points too high
    c = sanity.check_any_vs_restarts(any_attack, restarts)
    assert not c["passed"] and c["n_samples"] == 100
    w = sanity.warnings_for({"any_vs_restarts": c})
    assert len(w) == 1 and "any attack (0.450) is 0.050 above" in w[0] and "trust pgd_margin_restarts" in w[0]
    assert sanity.check_any_vs_restarts(restarts, any_attack)["passed"]           # below: quiet
    assert sanity.check_any_vs_restarts(any_attack[:20], restarts)["n_samples"] == 20


def test_restarts_attack_again_only_what_survives(tiny_run, fmnist_test):
    """Each start is a new random start; a sample fooled once keeps that x_adv; more starts never
    leave more samples robust than the first start alone did."""
    from cce_tf.ensemble import load_run
    ens = load_run(tiny_run)
    x, y = fmnist_test[0][:64], fmnist_test[1][:64]
    calls = []

    def counting(model, xs, ys, **p):
        calls.append(len(xs))
        return gradient.pgd_margin(model, xs, ys, **p)

    tf.random.set_seed(0)
    x_adv = gradient.restarted(counting, ens, x, y, 3, eps=0.1, eps_iter=0.01, nb_iter=3)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    right = lambda xs: np.argmax(ens(tf.constant(xs)), 1) == y  # noqa: E731
    assert calls[0] == 64 and len(calls) >= 2 and calls[1] < 64
    tf.random.set_seed(0)
    assert right(x_adv).sum() <= right(gradient.pgd_margin(ens, x, y, eps=0.1, eps_iter=0.01, nb_iter=3)).sum()
    assert registry.default_params("pgd_margin_restarts", "fashion_mnist")["restarts"] == registry.RESTARTS


def test_transferred_attack_stronger_than_white_box_is_flagged():
    result = {"labels": ["NAT", "CCE-DM"], "results": [
        {"eps": 0.1, "accuracy": [[0.05, 0.30], [0.70, 0.45]]}]}   # NAT's examples break CCE-DM more
    w = blackbox.transfer_warnings(result)
    assert len(w) == 1 and "PGD against NAT leaves CCE-DM at 0.300, below its white-box 0.450" in w[0]
    result["results"][0]["accuracy"][0][1] = 0.44                  # within the threshold
    assert blackbox.transfer_warnings(result) == []


class _Confident:
    """Logits of 3 classes on 2x2 images: class 0 while pixel 1 is below 0.35, then class 1, confidently
    at 0.8 (margin 9); class 2 never wins."""

    def __call__(self, x):
        flat = tf.reshape(x, [-1, 4])
        return tf.stack([4.0 + 0 * flat[:, 0], 20.0 * flat[:, 1] - 3.0, 0 * flat[:, 0] - 5.0], axis=1)


@pytest.mark.parametrize("name", ["pgd_confident", "mul_pgd_confident", "two_stage"])
def test_detector_aware_attacks_find_the_confident_wrong_class(name):
    from attacks import detector_aware
    model = _Confident()
    x = np.full((8, 2, 2, 1), 0.3, np.float32)   # class 0, with class 1 within reach of ε = 0.5
    y = np.zeros(8, np.int64)
    params = dict(eps=0.5, eps_iter=0.05, nb_iter=20)
    if name == "pgd_confident":
        params["beta"] = 0.1  # a larger β holds random starts deep in class 0 there (the sweep has both)
    x_adv = getattr(detector_aware, name)(model, x, y, **params)
    assert np.abs(x_adv - x).max() <= 0.5 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    logits = model(tf.constant(x_adv))
    h = detector_aware.entropy_of_logits(logits).numpy()
    assert (logits.numpy().argmax(-1) == 1).all()   # misclassified ...
    assert (h < 0.1).all()                            # ... and below a 0.1 detector threshold


def test_detection_aware_robust_accuracy_counts_only_undetected_fooling(tiny_run, tmp_path):
    from conftest import copy_run
    from eval.analyses import adaptive_detection
    run = copy_run(tiny_run, tmp_path / "run")
    options = adaptive_detection.Options(n_samples=48, batch_size=48, nb_iter=2, max_nb_iter=4, betas=(1.0,),
                                         verbose=0)
    r = adaptive_detection.evaluate(run, options)
    assert set(r["attacks"]) == {"pgd", "pgd_confident_beta1", "mul_pgd_confident", "two_stage"}
    worst = min(m["robust"] for m in r["attacks"].values())
    assert r["detection_aware_robust_accuracy"] <= worst <= r["natural_accuracy"]
    # The worst case is over every k the ladder ran: never above any rung's own.
    rungs = r["k_check"]["rungs"]
    assert [x["nb_iter"] for x in rungs] == [2, 4] and r["detection_aware_robust_accuracy"] == rungs[-1]["robust"]
    assert {m["params"]["nb_iter"] for m in r["attacks"].values()} == {4}   # the rows: the longest attack
    assert adaptive_detection.threshold_at_fpr(np.arange(100.0)) == pytest.approx(94.05)
    again = adaptive_detection.evaluate(run, options)
    assert again["seconds"] == r["seconds"]  # reused: same weights and settings


def test_a_killed_ladder_resumes_at_its_next_k_with_the_same_result(tiny_run, tmp_path, monkeypatch):
    """Killed during k = 4, the evaluation keeps k = 2 on file and runs only k = 4 again; its result is
    the one an uninterrupted evaluation writes, and the record of finished rungs is gone after."""
    import os

    from attacks import detector_aware
    from conftest import copy_run
    from eval.analyses import adaptive_detection
    options = adaptive_detection.Options(n_samples=48, batch_size=48, nb_iter=2, max_nb_iter=4, betas=(1.0,),
                                         verbose=0)
    whole = adaptive_detection.evaluate(copy_run(tiny_run, tmp_path / "whole"), options)
    run = copy_run(tiny_run, tmp_path / "killed")
    two_stage = detector_aware.two_stage

    def killed_at_4(*args, **kw):
        if kw["nb_iter"] == 4:
            raise KeyboardInterrupt
        return two_stage(*args, **kw)

    monkeypatch.setattr(detector_aware, "two_stage", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        adaptive_detection.evaluate(run, options)
    rungs = os.path.join(run, "eval", adaptive_detection.RUNGS_NAME)
    assert list(adaptive_detection.results_file.read(rungs)["rungs"]) == ["2"]
    monkeypatch.setattr(detector_aware, "two_stage", two_stage)
    confident, ks = detector_aware.pgd_confident, []
    monkeypatch.setattr(detector_aware, "pgd_confident", lambda *a, **kw: ks.append(kw["nb_iter"]) or confident(*a, **kw))
    resumed = adaptive_detection.evaluate(run, options)
    assert ks == [4] and not os.path.exists(rungs)
    assert resumed["k_check"] == whole["k_check"]
    assert resumed["detection_aware_robust_accuracy"] == whole["detection_aware_robust_accuracy"]
    assert {n: m["evaded"] for n, m in resumed["attacks"].items()} == {n: m["evaded"] for n, m in whole["attacks"].items()}


def _ladder(robust_at: dict, n: int = 200):
    """k_ladder on a synthetic attacker: at k it evades the first n·(1 − robust_at[k]) of n samples,
    all classified right."""
    from eval.analyses import adaptive_detection
    calls = []

    def evaded_at(k):
        calls.append(k)
        return np.arange(n) < round(n * (1 - robust_at[k]))

    check, evaded = adaptive_detection.k_ladder(evaded_at, np.ones(n, bool), 20, 160)
    return check, evaded, calls


def test_k_ladder_stops_where_doubling_moves_less_than_a_point():
    # The CCE-DM_2: 52.8 at k = 20, about 45.4 from k = 100 on: measured k = 80.
    check, evaded, calls = _ladder({20: 0.528, 40: 0.49, 80: 0.455, 160: 0.45})
    assert calls == [20, 40, 80, 160] and check["converged"] and check["nb_iter"] == 80
    assert evaded.mean() == pytest.approx(0.55)
    # A threshold no bounded perturbation reaches: nothing is ever evaded, k = 20 is converged.
    check, evaded, calls = _ladder({20: 1.0, 40: 1.0})
    assert calls == [20, 40] and check["nb_iter"] == 20 and not evaded.any()
    # One that a targeted step always evades: all of it at k = 20 already.
    check, evaded, calls = _ladder({20: 0.0, 40: 0.0})
    assert calls == [20, 40] and check["nb_iter"] == 20 and evaded.all()


def test_k_ladder_flags_an_attacker_still_moving_at_its_longest_k():
    from eval.analyses import adaptive_detection
    check, _, calls = _ladder({20: 0.60, 40: 0.55, 80: 0.50, 160: 0.45})
    assert calls == [20, 40, 80, 160] and not check["converged"] and check["nb_iter"] is None
    w, = adaptive_detection.k_warnings(check)
    assert "not converged" in w and "from 80 to 160" in w and "5.0 points" in w
    # Exactly one point is not "less than a point"; 0.5 of a point is.
    assert not _ladder({20: 0.60, 40: 0.59, 80: 0.58, 160: 0.57})[0]["converged"]
    assert _ladder({20: 0.60, 40: 0.595})[0]["nb_iter"] == 20


def test_a_detector_no_bounded_perturbation_can_reach(tmp_path):
    """A classifier whose output does not depend on its input: no attack at any k fools it, so the
    detection-aware robust accuracy is its natural accuracy and the ladder stops at the first
    doubling, converged."""
    import keras

    from eval.analyses import adaptive_detection
    inp = keras.Input((28, 28, 1))
    out = keras.layers.Dense(10, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant([3.0] + [0.0] * 9))(keras.layers.Flatten()(inp))
    path = str(tmp_path / "constant.keras")
    keras.Model(inp, out).save(path)
    r = adaptive_detection.evaluate(path, adaptive_detection.Options(n_samples=40, batch_size=40, nb_iter=2,
                                                                     betas=(10.0,), dataset="fashion_mnist",
                                                                     verbose=0))
    from cce_tf import data
    _, y = data.load("fashion_mnist", "test")
    assert r["natural_accuracy"] == pytest.approx(np.mean(y[:40] == 0))
    assert r["detection_aware_robust_accuracy"] == r["natural_accuracy"]
    assert r["k_check"]["converged"] and [x["nb_iter"] for x in r["k_check"]["rungs"]] == [2, 4]
    assert r["warnings"] == [] and set(r["attacks"]) == {"pgd", "pgd_confident_beta10", "mul_pgd_confident",
                                                       "two_stage"}


def test_beyond_cascade_counts_only_what_the_cascade_left_and_allows_sampling_noise():
    cascade = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    one = cascade.copy()
    one[0] = False                                       # 1 of 100 beyond the cascade: noise
    many = cascade.copy()
    many[:6] = False                                      # 6 of 100: the 95 % interval is above 1 %
    only_elsewhere = cascade.copy()
    only_elsewhere[40:] = True                            # robust where the cascade broke: not counted
    c = sanity.check_beyond_cascade({"cascade": np.r_[cascade, np.ones(900, bool)], "spsa": one,
                                     "autoattack": many, "bb_pgd1": only_elsewhere, "pgd": many})
    assert set(c) == {"spsa", "autoattack", "bb_pgd1"}    # pgd is part of the cascade, not a check
    assert (c["spsa"]["beyond_cascade"], c["spsa"]["passed"], c["spsa"]["n_samples"]) == (1, True, 100)
    assert (c["autoattack"]["beyond_cascade"], c["autoattack"]["passed"]) == (6, False)
    assert (c["bb_pgd1"]["beyond_cascade"], c["bb_pgd1"]["passed"]) == (0, True)
    w, = sanity.warnings_for({"beyond_cascade": c})
    assert w.startswith("masking: autoattack breaks 6 of 100 images")
    assert sanity.canaries({"cascade": cascade, "spsa": many}, False, None)["beyond_cascade"]["spsa"]["passed"] is False


class _Masked:
    """The ensemble behind a front whose gradient is zero everywhere (x·0 + stop_gradient(x)): the
    same predictions, nothing for a gradient attack to follow."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, training=False):
        return self.model(x * 0.0 + tf.stop_gradient(x), training=training)


def test_masking_check_fires_on_a_model_that_masks_gradients_and_not_on_a_plain_one(tiny_run, fmnist_test):
    """At ε = 0.3 the gradient-free SPSA breaks the short-trained ensemble whichever front it has; the
    cascade's gradient stages break it only without the masking front."""
    from attacks import cascade
    from cce_tf.ensemble import load_run
    from eval.analyses.attack_suite.engine import robust_mask
    ens = load_run(tiny_run)
    x, y = fmnist_test[0][:32], fmnist_test[1][:32]
    eps = 0.3
    spsa = dict(registry.default_params("spsa", "fashion_mnist", eps=eps), nb_iter=20)
    stages = dict(eps=eps, eps_iter=0.03, nb_iter=20, mul_eps_iter=0.06, mul_nb_iter=5, stages=cascade.STAGES[:3])
    verdicts = {}
    for name, model in (("plain", ens), ("masked", _Masked(ens))):
        _, broken_by = cascade.cascade_stages(model, x, y, **stages)
        masks = {"cascade": broken_by == cascade.NOT_BROKEN,
                 "spsa": robust_mask(model, "spsa", x, y, spsa, batch_size=32, seed=0)}
        verdicts[name] = sanity.check_beyond_cascade(masks)["spsa"]
    assert verdicts["plain"]["passed"] and verdicts["plain"]["beyond_cascade"] == 0
    assert not verdicts["masked"]["passed"]
