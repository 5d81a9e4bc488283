"""The canaries that say when an evaluation cannot rank defences (eval/sanity.py checks 7 and 8), and
Madry's step rule for a shortened PGD (cce_tf.config.converging_step)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cce_tf import config
from conftest import ROOT, train_cli
from eval import sanity


def test_a_shortened_pgd_gets_a_step_that_can_cross_the_ball():
    # The paper's own k keeps its own η, CIFAR-100's 10 steps of ε/10 included.
    assert config.converging_step(0.01, 0.001, 10, 10) == 0.001
    assert config.converging_step(0.1, 0.01, 100, 100) == 0.01
    # Shortened: k·η >= 2.5 ε, and never above ε.
    assert config.converging_step(0.1, 0.01, 10, 100) == pytest.approx(0.025)
    assert config.converging_step(0.1, 0.05, 10, 100) == 0.05    # already larger: kept
    assert config.converging_step(0.1, 0.01, 2, 100) == 0.1       # 2.5 ε / 2 > ε: capped


def _flags(robust: int, n: int = 1000) -> np.ndarray:
    return np.arange(n) < robust


def test_single_step_beating_the_iterative_attack_is_flagged():
    checks = sanity.canaries({"fgsm": _flags(400), "pgd": _flags(600)}, undefended=False, pgd_params=None)
    c = checks["single_step"]["fgsm"]
    assert c["iterative"] == "pgd" and not c["passed"] and c["ci"][0] > 0
    assert any(w.startswith("canary: single-step fgsm") for w in sanity.warnings_for(checks))


def test_single_step_within_the_sampling_noise_passes():
    # 1 point apart, with 30 samples only PGD leaves robust and 20 only FGSM leaves robust.
    pgd, fgsm = _flags(600), _flags(570)
    fgsm[600:620] = True
    checks = sanity.canaries({"fgsm": fgsm, "pgd": pgd, "bim": _flags(10)}, undefended=False, pgd_params=None)
    assert checks["single_step"]["fgsm"]["passed"] and checks["single_step"]["fgsm"]["iterative"] == "pgd"
    assert sanity.warnings_for(checks) == []


def test_undefended_model_must_fall_below_ten_percent():
    params = {"eps": 0.1, "eps_iter": 0.025, "nb_iter": 10}
    kept = sanity.canaries({"pgd": _flags(300)}, undefended=True, pgd_params=params)
    assert not kept["undefended"]["passed"] and kept["undefended"]["robust_accuracy"] == pytest.approx(0.3)
    assert any("undefended model keeps 0.300" in w for w in sanity.warnings_for(kept))
    broken = sanity.canaries({"pgd": _flags(50)}, undefended=True, pgd_params=params)
    assert broken["undefended"]["passed"]
    # A defended run has no such canary.
    assert "undefended" not in sanity.canaries({"pgd": _flags(300)}, undefended=False, pgd_params=params)


def test_canaries_replace_older_ones_and_keep_the_other_warnings():
    old = {"double_steps": {"nb_iter": [10, 20], "robust_accuracy": [0.5, 0.45], "tolerance": 0.01,
                            "passed": False},
           "single_step": {"fgsm": {"passed": False, "single_accuracy": 0.1, "iterative": "pgd",
                                    "iterative_accuracy": 0.5, "n_samples": 10, "ci": [0.1, 0.2]}}}
    old["warnings"] = sanity.warnings_for(old)
    assert len(old["warnings"]) == 2
    new = sanity.with_canaries(old, sanity.canaries({"fgsm": _flags(600), "pgd": _flags(600)}, False, None))
    assert len(new["warnings"]) == 1 and "doubling PGD's steps" in new["warnings"][0]


@pytest.fixture(scope="module")
def nat_run(tmp_path_factory):
    """An undefended NAT_2 trained for one epoch on 1024 images."""
    out = tmp_path_factory.mktemp("canary") / "nat"
    train_cli(out, "--method", "nat", "--members", "2", "--train_subset", "1024", "--epochs", "1")
    return str(out)


def test_a_deliberately_weak_pgd_is_flagged_on_an_undefended_model(nat_run):
    """PGD with k = 2 steps of 1e-5 moves no prediction, so the NAT model keeps its natural accuracy
    on the attacked samples (well above 10 % after an epoch); the suite's report must say so."""
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "eval.attack_suite", "--run_dir", nat_run, "--attacks", "pgd",
           "--nb_iter", "2", "--eps_iter", "0.00001", "--n_samples", "200", "--nosanity", "--verbose", "0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(nat_run, "eval", "attack_suite.json")) as f:
        r = json.load(f)
    pgd = r["attacks"]["pgd"]["robust_accuracy"]
    assert pgd > 0.10, f"precondition: the 1-epoch NAT model should keep > 10 % under a null attack, got {pgd}"
    canary = r["sanity"]["undefended"]
    assert not canary["passed"] and canary["params"]["nb_iter"] == 2
    assert any(w.startswith("canary: an undefended model") for w in r["sanity"]["warnings"])
    assert "canary: an undefended model" in proc.stdout
