"""python -m eval.attack_suite on a real tiny run: contract 7's JSON, the table, reuse, bad input,
the bounds check, and the gradient-masking sanity checks."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import registry
from conftest import copy_run
from attacks.errors import AttackUnavailable
from eval import attack_suite as suite_cli, reuse, sanity, stats
from eval.analyses.attack_suite import engine, report, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--attacks", "fgsm,pgd", "--n_samples", "64", "--nb_iter", "5", "--batch_size", "32"]


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory):
    """A copy of the tiny run, so this module's eval/ files stay its own."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("suite") / "run")


@pytest.fixture(scope="module")
def first_run(run_dir):
    """The suite run once with tiny settings; (stdout, results)."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY]) == 0
    return buf.getvalue(), _results(run_dir)


def _path(run_dir):
    return os.path.join(run_dir, "eval", store.RESULTS_FILE)


def _results(run_dir):
    with open(_path(run_dir)) as f:
        return json.load(f)


def _counting_run(monkeypatch):
    calls = []
    real = registry.run_detailed

    def run(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(registry, "run_detailed", run)
    return calls


def test_json_matches_contract_7(first_run, run_dir):
    _, r = first_run
    assert set(r) == {"run_dir", "dataset", "seed", "natural_accuracy", "n_test", "attacks", "sanity",
                      "weights_sha256", "any_attack"}
    assert r["weights_sha256"] == reuse.fingerprint(run_dir)
    assert r["run_dir"] == run_dir and r["dataset"] == "fashion_mnist" and r["seed"] == 0
    assert r["n_test"] == 10000 and 0.2 < r["natural_accuracy"] <= 1  # trained: well above chance
    assert set(r["attacks"]) == {"fgsm", "pgd"}
    for name, e in r["attacks"].items():
        assert set(e) == {"robust_accuracy", "params", "n_samples", "seconds", "weights_sha256", "settings"}
        assert e["weights_sha256"] == r["weights_sha256"]
        assert e["settings"] == {"params": e["params"], "n_samples": 64, "seed": 0}
        assert 0 <= e["robust_accuracy"] <= 1 and isinstance(e["robust_accuracy"], float)
        assert e["n_samples"] == 64 and e["seconds"] > 0
    # k = 5 is shorter than the default 100: Madry's rule raises η to 2.5 ε / k.
    assert r["attacks"]["pgd"]["params"] == {"eps": 0.1, "eps_iter": pytest.approx(0.05), "nb_iter": 5}
    assert r["attacks"]["fgsm"]["params"] == {"eps": 0.1}
    s = r["sanity"]
    assert isinstance(s["warnings"], list)
    sweep = s["eps_sweep"]
    assert sweep["eps"] == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert all(0 <= a <= 1 for a in sweep["robust_accuracy"]) and isinstance(sweep["passed"], bool)
    assert s["double_steps"]["nb_iter"] == [5, 10]
    assert "skipped" in s["spsa_vs_pgd"]  # no SPSA in this run
    assert s["n_samples"] == 64
    # The worst case over both attacks, from the per-sample flags: no higher than either.
    worst = r["any_attack"]
    assert worst["attacks"] == ["fgsm", "pgd"] and worst["n_samples"] == 64
    assert worst["robust_accuracy"] <= min(e["robust_accuracy"] for e in r["attacks"].values())
    masks = store.read_masks(run_dir)
    assert worst["robust_accuracy"] == pytest.approx(np.mean(masks["fgsm"] & masks["pgd"]))


def test_any_attack_intersects_the_sample_sets():
    entries = {"pgd": {"robust_accuracy": 0.5}, "spsa": {"robust_accuracy": 0.75},
               "mim": {"skipped": "no library"}}
    masks = {"pgd": np.array([1, 0, 1, 0, 1, 1], bool), "spsa": np.array([1, 1, 0, 1], bool)}
    worst = engine.any_attack(entries, masks)
    # Only the first 4 samples were attacked by both; of those, 0 survives both, 2 is broken by
    # SPSA, 1 and 3 by PGD.
    assert worst == {"robust_accuracy": 0.25, "n_samples": 4, "attacks": ["pgd", "spsa"]}
    assert engine.any_attack({"mim": {"skipped": "x"}}, {}) is None


def test_table_has_the_papers_rows(first_run):
    out, r = first_run
    lines = [l for l in out.splitlines() if l.startswith("|")]
    assert lines[0] == "| Attack | CCE-RM_2 |"
    assert [l.split("|")[1].strip() for l in lines[2:]] == [
        "Non-att (Nat. acc.)", "FGSM", "PGD k = 5", f"**{report.ANY_ROW}**"]
    for line, value, n in ((lines[2], r["natural_accuracy"], r["n_test"]),
                           (lines[4], r["attacks"]["pgd"]["robust_accuracy"], 64)):
        lo, hi = stats.wilson_interval(round(value * n), n)  # each cell: value [95 % Wilson interval]
        assert line.split("|")[2].strip() == f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def test_plain_model_passes_the_eps_sweep(first_run):
    _, r = first_run
    assert r["sanity"]["eps_sweep"]["passed"], r["sanity"]
    assert not any(w.startswith("eps sweep") for w in r["sanity"]["warnings"])


def test_rerun_reuses_and_force_recomputes(first_run, run_dir, monkeypatch, capsys):
    _, before = first_run
    calls = _counting_run(monkeypatch)
    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY]) == 0
    assert calls == []  # neither the attacks nor the sanity PGD ran again
    after = _results(run_dir)
    assert after["attacks"] == before["attacks"] and after["sanity"] == before["sanity"]
    assert "reused" in capsys.readouterr().out

    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY, "--attacks", "fgsm",
                             "--force", "--nosanity"]) == 0
    assert calls == ["fgsm", "fgsm"]  # two batches of 32
    forced = _results(run_dir)
    assert forced["attacks"]["pgd"] == before["attacks"]["pgd"]
    assert forced["attacks"]["fgsm"]["seconds"] != before["attacks"]["fgsm"]["seconds"]

    # Other params: that attack's entry is replaced, the rest are kept.
    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY, "--attacks", "pgd",
                             "--nb_iter", "3", "--nosanity"]) == 0
    changed = _results(run_dir)
    assert changed["attacks"]["pgd"]["params"]["nb_iter"] == 3
    assert changed["attacks"]["fgsm"] == forced["attacks"]["fgsm"]


def test_bad_attack_name_exits_2_and_leaves_the_json(first_run, run_dir):
    before = open(_path(run_dir), "rb").read()
    mtime = os.stat(_path(run_dir)).st_mtime_ns
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "eval.attack_suite", "--run_dir", run_dir,
                           "--attacks", "pgd,nope"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0]
    assert open(_path(run_dir), "rb").read() == before and os.stat(_path(run_dir)).st_mtime_ns == mtime


@pytest.mark.parametrize("flags, needle", [
    ([], "--run_dir is required"),
    (["--n_samples", "0"], "--n_samples"),
    (["--eps", "-0.1"], "--eps"),
    (["--eps", "0.1", "--eps_iter", "0.2"], "eps_iter"),
    (["--batch_size", "0"], "--batch_size"),
    (["--attacks", ""], "--attacks"),
    (["--n_samples", "abc"], "n_samples"),
    (["extra"], "unexpected argument"),
])
def test_bad_input_exits_2(first_run, run_dir, flags, needle, capsys):
    before = open(_path(run_dir), "rb").read()
    argv = ["attack_suite"] + ([] if flags == [] else ["--run_dir", run_dir]) + flags
    assert suite_cli.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert open(_path(run_dir), "rb").read() == before


def test_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert suite_cli.cli(["attack_suite", "--run_dir", str(tmp_path)]) == 2
    assert "is not a trained run" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "eval")


def test_check_bounds():
    x = np.full((3, 4, 4, 1), 0.5, np.float32)
    engine.check_bounds(x, x + np.float32(0.1), eps=0.1)  # on the sphere: fine
    engine.check_bounds(x, x + np.float32(0.1 + 5e-7), eps=0.1)  # within float32 tolerance
    out = x.copy()
    out[2, 1, 1, 0] += 0.1 + 1e-5
    with pytest.raises(engine.BoundsError, match="test sample 12 .*ε-ball"):
        engine.check_bounds(x, out, eps=0.1, indices=np.arange(10, 10 + len(x)))
    low = np.zeros_like(x)
    low[0, 0, 0, 0] = -1e-3
    with pytest.raises(engine.BoundsError, match=r"leaves \[0, 1\]"):
        engine.check_bounds(low + 0, low, eps=0.1)
    with pytest.raises(engine.BoundsError, match="not finite"):
        engine.check_bounds(x, np.where(x > 0, np.nan, x), eps=0.1)
    with pytest.raises(engine.BoundsError, match="shape"):
        engine.check_bounds(x, x[:2], eps=0.1)


def test_a_killed_attack_resumes_at_its_next_batch_with_the_same_flags(tiny_run, tmp_path, monkeypatch):
    """Killed in its second batch, PGD keeps the first on file and attacks only the second again; its
    flags are those of an uninterrupted run, and the record of finished batches is gone after."""
    args = [*TINY, "--attacks", "pgd", "--nosanity"]
    whole = copy_run(tiny_run, tmp_path / "whole")
    assert suite_cli.cli(["attack_suite", "--run_dir", whole, *args]) == 0
    run = copy_run(tiny_run, tmp_path / "killed")
    real, calls = registry.run_detailed, []

    def killed_in_batch_2(name, *a, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(name, *a, **kw)

    monkeypatch.setattr(registry, "run_detailed", killed_in_batch_2)
    with pytest.raises(KeyboardInterrupt):
        suite_cli.cli(["attack_suite", "--run_dir", run, *args])
    record = os.path.join(run, "eval", store.BATCHES_FILE.format("pgd"))
    with open(record) as f:
        assert list(json.load(f)["batches"]) == ["0"]
    monkeypatch.setattr(registry, "run_detailed", real)
    calls = _counting_run(monkeypatch)
    assert suite_cli.cli(["attack_suite", "--run_dir", run, *args]) == 0
    assert calls == ["pgd"] and not os.path.exists(record)
    resumed, uninterrupted = store.read_masks(run), store.read_masks(whole)
    np.testing.assert_array_equal(resumed["pgd"], uninterrupted["pgd"])
    assert _results(run)["attacks"]["pgd"]["robust_accuracy"] == _results(whole)["attacks"]["pgd"]["robust_accuracy"]


def test_out_of_ball_attack_is_an_error_and_not_recorded(first_run, run_dir, monkeypatch, capsys):
    before = _results(run_dir)["attacks"]["fgsm"]

    def last_row_leaves(name, model, x, y, **p):  # only the last attacked sample of a batch
        x_adv = np.array(x)
        x_adv[-1] = np.clip(x_adv[-1] + 2 * p["eps"], 0, 1)
        return x_adv, {}

    monkeypatch.setattr(registry, "run_detailed", last_row_leaves)
    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY, "--attacks", "fgsm",
                             "--force", "--nosanity"]) == 1
    err = capsys.readouterr().err
    assert "outside the ε-ball" in err
    assert _results(run_dir)["attacks"]["fgsm"] == before
    # The message names the test-set index of that sample: the last one of the first batch that
    # the model gets right (only those are attacked), not its position among them.
    from eval import batches
    from eval.target import load_run_checked
    ens, _ = load_run_checked(run_dir)
    x, y = batches.test_samples("fashion_mnist", 32)
    right = np.flatnonzero(batches.predict_labels(ens, x) == y)
    assert right[-1] != len(right) - 1  # else this test could not tell the two apart
    assert f"test sample {right[-1]} is" in err


def test_unavailable_attack_is_skipped(first_run, run_dir, monkeypatch, capsys):
    real = registry.run_detailed

    def run(name, *args, **kwargs):
        if name == "autoattack":
            raise AttackUnavailable("AutoAttack needs torch; install with: pip install -r requirements-autoattack.txt")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(registry, "run_detailed", run)
    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY,
                             "--attacks", "autoattack,fgsm", "--nosanity"]) == 0
    r = _results(run_dir)
    assert "pip install" in r["attacks"]["autoattack"]["skipped"]
    assert "robust_accuracy" in r["attacks"]["fgsm"]
    assert "| Auto-Attack | skipped |" in capsys.readouterr().out


def test_autoattack_keeps_its_examples_and_stages(first_run, run_dir, monkeypatch, capsys):
    """AutoAttack's entry gains the robust accuracy after each sub-attack, and its x_adv are saved
    with indices, clean labels and the weights they belong to. A stand-in for the official code
    (FGSM as its first sub-attack) keeps it fast; autoattack_stages itself is tested in test_attacks."""
    from attacks import autoattack, gradient

    def stages(model, x, y, eps, seed=0, batch_size=500):
        x_adv = gradient.fgsm(model, x, y, eps=eps)
        fooled = np.argmax(model(tf.constant(x_adv)), -1) != y
        return x_adv, np.where(fooled, 0, autoattack.NOT_BROKEN).astype(np.int8)

    monkeypatch.setattr(autoattack, "autoattack_stages", stages)
    assert suite_cli.cli(["attack_suite", "--run_dir", run_dir, *TINY, "--attacks", "autoattack",
                             "--nosanity"]) == 0
    e = _results(run_dir)["attacks"]["autoattack"]
    assert list(e["stages"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert e["stages"]["square"] == e["robust_accuracy"] < _results(run_dir)["natural_accuracy"]
    with np.load(e["adversarial_examples"]) as z:
        assert z["indices"].tolist() == list(range(64)) and z["x_adv"].shape == (64, 28, 28, 1)
        assert z["robust"].mean() == e["robust_accuracy"] and reuse.fingerprint(run_dir) in str(z["key"])
        from eval import batches
        from eval.target import load_run_checked
        x, y = batches.test_samples("fashion_mnist", 64)
        ens, _ = load_run_checked(run_dir)
        np.testing.assert_array_equal(z["labels"], y)
        np.testing.assert_array_equal(batches.predict_labels(ens, z["x_adv"]) == y, z["robust"])
    assert "after APGD-CE" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Gradient masking: a trained classifier behind a zero-gradient rounding layer
# --------------------------------------------------------------------------------------------------


@tf.custom_gradient
def _round_without_gradient(z):
    # A quantising input layer whose gradient is zero: PGD's steps are all 0, only its random
    # start moves x (shattered gradients, Athalye et al. 2018).
    return tf.round(z * 4) / 4, lambda g: tf.zeros_like(g)


class _Rounded(keras.Model):
    def __init__(self, classifier, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier

    def call(self, x):
        return self.classifier(_round_without_gradient(x))


def test_masked_gradients_trip_the_eps_sweep(tiny_run, fmnist_test):
    """The plain model passing the sweep is test_plain_model_passes_the_eps_sweep (same data)."""
    from cce_tf.ensemble import load_run
    x, y = fmnist_test[0][:64], fmnist_test[1][:64]
    masked = _Rounded(load_run(tiny_run), name="rounded")

    def pgd_robust(p):
        keras.utils.set_random_seed(0)
        return engine.robust_mask(masked, "pgd", x, y, p, batch_size=64)

    sweep, _ = sanity.check_eps_sweep(pgd_robust, {"eps": 0.1, "eps_iter": 0.01, "nb_iter": 5})
    assert not sweep["passed"] and sweep["robust_accuracy"][-1] > 0.2, sweep
    assert any(w.startswith("eps sweep") for w in sanity.warnings_for({"eps_sweep": sweep}))


def test_spsa_check_compares_the_same_samples():
    pgd_mask = np.array([1, 1, 0, 0] * 25 + [0] * 100, bool)  # 0.5 on the first 100, 0.25 overall
    spsa_mask = np.array([1, 0, 0, 0] * 25, bool)  # 0.25 on its 100
    c = sanity.check_spsa_vs_pgd(spsa_mask, pgd_mask)
    assert c["n_samples"] == 100 and c["pgd"] == 0.5 and c["spsa"] == 0.25 and not c["passed"]
    assert any("SPSA" in w for w in sanity.warnings_for({"spsa_vs_pgd": c}))
    assert sanity.check_spsa_vs_pgd(pgd_mask[:100], pgd_mask)["passed"]


def test_sweep_eps():
    assert sanity.sweep_eps(0.1) == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert sanity.sweep_eps(8 / 255) == pytest.approx([8 / 255, 16 / 255, 32 / 255, 64 / 255, 0.5])
    p = sanity.sweep_params({"eps": 0.1, "eps_iter": 0.01, "nb_iter": 100}, 0.4)
    assert p["eps"] == 0.4 and p["eps_iter"] == pytest.approx(0.04) and p["nb_iter"] == 100


def test_progress_in_a_log_file_is_plain_lines_with_an_eta(monkeypatch, capsys):
    """Under a study (stdout a file) the bar becomes a plain line at most every LOG_INTERVAL seconds,
    with an ETA until done; verbose 2 prints the last line only, verbose 0 nothing."""
    from eval.progress import Progress
    monkeypatch.setattr(Progress, "LOG_INTERVAL", 0.0)
    bar = Progress(300, verbose=1)
    for _ in range(3):
        bar.add(100)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(",")[0].strip() for ln in lines] == ["100/300 samples", "200/300 samples", "300/300 samples"]
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and not any("\x1b" in ln or "\r" in ln for ln in lines)
    quiet, last = Progress(300, verbose=0), Progress(300, verbose=2)
    for _ in range(3):
        quiet.add(100)
        last.add(100)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("  300/300 samples,")
