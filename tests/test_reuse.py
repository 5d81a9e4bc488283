"""Contract 9: a result is reused only on the weights and settings it was computed on, by one rule
in every tool; figures and analyses work in any order."""
import json
import os
import shutil

import numpy as np
import pytest

from cce_tf import fingerprint
from conftest import copy_run, train_cli
from eval import reuse
from eval.analyses import detection, transferability
from eval.analyses.attack_suite import plan as suite_plan, run as suite_run
from figures import entropy_histogram, roc_attacks, roc_eps

TINY_TRAIN = ("--train_subset", "256", "--nb_iter", "1", "--batch_size", "64")
SUITE = suite_plan.SuiteOptions(attacks=("fgsm", "pgd"), n_samples=64, nb_iter=3, batch_size=64,
                                  sanity=False)


def test_fingerprint_is_the_sha256_and_cached_by_size_and_mtime(tmp_path, monkeypatch):
    import hashlib
    w = tmp_path / fingerprint.WEIGHTS_FILE
    w.write_bytes(b"weights one")
    assert fingerprint.weights_fingerprint(str(tmp_path)) == hashlib.sha256(b"weights one").hexdigest()
    calls = []
    real = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda p: calls.append(p) or real(p))
    fingerprint._memo.clear()
    fingerprint.weights_fingerprint(str(tmp_path))  # from RUN/eval/weights_sha256.json
    assert calls == []
    w.write_bytes(b"weights two!")  # rewritten: another size and mtime
    assert fingerprint.weights_fingerprint(str(tmp_path)) == hashlib.sha256(b"weights two!").hexdigest()
    assert len(calls) == 1


def test_decide_and_explain():
    s = {"eps": 0.1, "nb_iter": (3,)}
    entry = dict(robust_accuracy=0.5, **reuse.stamp(s, "a" * 64))
    assert reuse.decide(entry, "a" * 64, {"eps": 0.1, "nb_iter": [3]}).reuse  # tuples == lists
    assert reuse.decide(entry, "a" * 64, s, force=True).why == reuse.FORCED
    assert reuse.decide(entry, "b" * 64, s).why == reuse.WEIGHTS
    assert reuse.decide(entry, "a" * 64, {"eps": 0.2, "nb_iter": [3]}).why == reuse.SETTINGS
    assert reuse.decide({"robust_accuracy": 0.5}, "a" * 64, s).why == reuse.UNSTAMPED
    assert reuse.decide(None, "a" * 64, s).why == reuse.NEW
    lines = reuse.explain("eval/attack_suite.json", {
        "pgd": reuse.Decision(False, reuse.WEIGHTS), "mim": reuse.Decision(False, reuse.WEIGHTS),
        "fgsm": reuse.Decision(True), "spsa": reuse.Decision(False, reuse.NEW)})
    assert lines == ["weights changed since eval/attack_suite.json: recomputing pgd, mim"]


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A run attacked after 1 epoch, trained 1 more epoch and attacked again; and a copy of the
    2-epoch run evaluated afresh. Returns (run, fresh, stdout of the second evaluation)."""
    import contextlib
    import io
    run = tmp_path_factory.mktemp("extend") / "run"
    train_cli(run, *TINY_TRAIN, "--epochs", "1")
    suite_run.evaluate([str(run)], SUITE)
    first = json.loads((run / "eval" / "attack_suite.json").read_text())
    train_cli(run, *TINY_TRAIN, "--epochs", "2")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        suite_run.evaluate([str(run)], SUITE)
    fresh = tmp_path_factory.mktemp("fresh") / "run"
    copy_run(run, fresh)
    suite_run.evaluate([str(fresh)], SUITE)
    return run, fresh, first, buf.getvalue()


def test_training_further_never_leaves_old_robust_accuracies(extended):
    run, fresh, first, out = extended
    second = json.loads((run / "eval" / "attack_suite.json").read_text())
    again = json.loads((fresh / "eval" / "attack_suite.json").read_text())
    assert second["weights_sha256"] != first["weights_sha256"]
    assert second["weights_sha256"] == again["weights_sha256"] == reuse.fingerprint(str(run))
    assert second["natural_accuracy"] == again["natural_accuracy"]
    for name in ("fgsm", "pgd"):
        assert second["attacks"][name]["robust_accuracy"] == again["attacks"][name]["robust_accuracy"]
        assert second["attacks"][name]["weights_sha256"] == second["weights_sha256"]
    assert second["any_attack"] == again["any_attack"]
    assert f"weights changed since {run}/eval/attack_suite.json: recomputing fgsm, pgd" in out
    # The results of the 1-epoch weights are kept, apart.
    stale = run / "eval" / "stale" / first["weights_sha256"][:12] / "attack_suite.json"
    assert json.loads(stale.read_text()) == first


def test_analyses_recompute_on_new_weights(extended, tmp_path):
    run, fresh, _, _ = extended
    kw = dict(n_samples=32, nb_iter=2, batch_size=32, verbose=False)
    t1 = transferability.evaluate(str(run), transferability.Options(**kw))
    assert t1["weights_sha256"] == reuse.fingerprint(str(run))
    assert transferability.evaluate(str(run), transferability.Options(**kw))["seconds"] == t1["seconds"]  # reused
    # Other weights in the same folder: recomputed, equal to a fresh evaluation of those weights.
    other = tmp_path / "run"
    shutil.copytree(run, other)
    from cce_tf.ensemble import load_run, save_keras_file
    ens = load_run(str(other))
    ens.set_weights([w * 0.5 for w in ens.get_weights()])  # same shapes, other values
    ens.save_weights(str(other / "ensemble.weights.h5"))
    save_keras_file(ens, str(other / "ensemble.weights.h5"), str(other / "ensemble.keras"))  # as train does
    t2 = transferability.evaluate(str(other), transferability.Options(**kw))
    assert t2["weights_sha256"] == reuse.fingerprint(str(other)) != t1["weights_sha256"]
    fresh2 = copy_run(other, tmp_path / "fresh2")
    assert transferability.evaluate(fresh2, transferability.Options(**kw))["a"] == t2["a"]


@pytest.mark.parametrize("order", [("roc_eps", "roc_attacks", "entropy_histogram"),
                                   ("entropy_histogram", "roc_attacks", "roc_eps"),
                                   ("roc_attacks", "roc_eps", "entropy_histogram")])
def test_figures_in_any_order(tiny_run, tmp_path, order):
    run = tmp_path / "run"
    copy_run(tiny_run, run)
    makers = {"roc_eps": roc_eps.make, "roc_attacks": roc_attacks.make,
              "entropy_histogram": entropy_histogram.make}
    for name in order:
        paths = makers[name](str(run), n_samples=48, batch_size=48, nb_iter=2)
        assert all(os.path.getsize(p) > 0 for p in paths)
    r = json.loads((run / "eval" / "detection.json").read_text())
    assert set(r["attacks"]) == set(detection.ATTACKS) and len(r["eps_sweep"]) == 8
    h = detection.load_entropies(str(run))
    assert str(h["weights_sha256"]) == r["weights_sha256"] == reuse.fingerprint(str(run))
    assert all(f"adv_{k}" in h for k in [*detection.ATTACKS, *(f"sweep{i}" for i in range(8))])
    # Everything is there now: a second pass computes nothing.
    before = (run / "eval" / "detection.json").read_text()
    for name in order:
        makers[name](str(run), n_samples=48, batch_size=48, nb_iter=2)
    after = json.loads((run / "eval" / "detection.json").read_text())
    assert after["attacks"] == json.loads(before)["attacks"]
    assert after["eps_sweep"] == json.loads(before)["eps_sweep"]
    np.testing.assert_array_equal(detection.load_entropies(str(run))["adv_pgd"], h["adv_pgd"])
