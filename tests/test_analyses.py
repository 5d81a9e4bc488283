"""The analyses of eval/: Table 6's transferability metrics, detection by entropy, the black-box
matrix; their pure functions from hand-built inputs, and each CLI once on the tiny run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eval.analyses.detection import detection_metrics
from eval.analyses.transferability import transferability_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(module, *args, timeout=300):
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def labels_with(right: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Predicted labels that are y where `right`, another class elsewhere."""
    return np.where(right, y, (y + 1) % 10)


# --------------------------------------------------------------------------------------------------
# Table 6 from hand-built predictions
# --------------------------------------------------------------------------------------------------


def cce_rm_predictions():
    """1000 samples shaped like the paper's CCE-RM row (S01 / S10 rounded so the shares sum to 1):
    a(en,en) = 45.5, S11 = 39.9, S01 = 5.2, S10 = 5.4, S00 = 49.5, a(1,1) = 41.7, a(2,2) = 41.4,
    and a(1,2) = 60.0, a(2,1) = 56.8 so that T = 33.7."""
    b = 1000
    y = np.arange(b) % 10
    groups = np.repeat(["11", "01", "10", "00"], [399, 52, 54, 495])
    r1 = np.array([g[0] == "1" for g in groups])
    r2 = np.array([g[1] == "1" for g in groups])
    en_right = groups == "11"
    en_right[np.flatnonzero(groups == "01")[:30]] = True
    en_right[np.flatnonzero(groups == "10")[:26]] = True        # 399 + 56 = 455
    members = np.stack([labels_with(r1, y), labels_with(r2, y)])

    def first(k):
        return np.arange(b) < k

    cross = np.stack([np.stack([labels_with(first(417), y), labels_with(first(600), y)]),
                      np.stack([labels_with(first(568), y), labels_with(first(414), y)])])
    return y, labels_with(en_right, y), members, cross


def test_table6_identities_on_the_cce_rm_row():
    y, pred_en, members, cross = cce_rm_predictions()
    m = transferability_metrics(y, pred_en, members, cross)
    assert m["a_en_en"] == pytest.approx(0.455)
    assert (m["S11"], m["S01"], m["S10"], m["S00"]) == pytest.approx((0.399, 0.052, 0.054, 0.495))
    assert m["S11"] + m["S01"] + m["S10"] + m["S00"] == pytest.approx(1.0)
    assert m["nT"] == pytest.approx(1 - 0.455 - 0.495) == pytest.approx(0.05)
    assert m["a_single"] == pytest.approx(0.455 - 0.399) == pytest.approx(0.056)
    # rows = member attacked, columns = member tested
    assert np.allclose(m["a"], [[0.417, 0.600], [0.568, 0.414]])
    assert m["T"] == pytest.approx(0.600 - 0.417 + 0.568 - 0.414) == pytest.approx(0.337)
    assert m["fooled_by_k"] == pytest.approx([0.399, 0.106, 0.495])
    assert m["member_accuracy_on_x_en"] == pytest.approx([0.399 + 0.054, 0.399 + 0.052])
    assert m["n_samples"] == 1000


def test_fooled_by_k_for_three_members():
    y = np.zeros(10, np.int64)
    n_wrong = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    right = np.stack([n_wrong <= 0, n_wrong <= 1, n_wrong <= 2])       # member m wrong if m < k
    members = labels_with(right, y)
    en_right = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], bool)
    cross = np.broadcast_to(members, (3, 3, 10))
    m = transferability_metrics(y, labels_with(en_right, y), members, cross)
    assert m["fooled_by_k"] == pytest.approx([0.2, 0.3, 0.1, 0.4])
    assert sum(m["fooled_by_k"]) == pytest.approx(1)
    assert m["S11"] is None and m["S00"] is None
    assert m["a_en_en"] == pytest.approx(0.5)
    assert m["a_single"] == pytest.approx(0.5 - 0.2)           # a(en,en) − |all members right|
    assert m["nT"] == pytest.approx(1 - 0.5 - 0.4)             # 1 − a(en,en) − |all fooled|
    assert len(m["a"]) == 3 and len(m["a"][0]) == 3


def test_metrics_reject_bad_shapes():
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError):
        transferability_metrics(y, y, np.zeros((2, 4)), np.zeros((2, 3, 4)))


# --------------------------------------------------------------------------------------------------
# Detection metrics
# --------------------------------------------------------------------------------------------------


def test_auc_is_one_for_separable_scores():
    rng = np.random.default_rng(0)
    clean, adv = rng.uniform(0, 1, 300), rng.uniform(2, 3, 200)
    m = detection_metrics(clean, adv)
    assert m["auc"] == 1.0 and m["auc_all"] == 1.0 and m["tpr_at_5fpr"] == 1.0
    assert (m["n_pos"], m["n_neg"]) == (200, 300)
    assert m["fpr"][0] == 0.0 and m["tpr"][-1] == 1.0


def test_auc_is_one_half_for_identical_distributions():
    rng = np.random.default_rng(1)
    m = detection_metrics(rng.normal(size=4000), rng.normal(size=4000))
    assert m["auc"] == pytest.approx(0.5, abs=0.03)
    assert m["tpr_at_5fpr"] == pytest.approx(0.05, abs=0.02)
    assert len(m["fpr"]) <= 200 and len(m["fpr"]) == len(m["tpr"])


def test_positives_are_the_fooling_counterparts():
    clean = np.zeros(5)
    adv = np.array([1.0, 1.0, -1.0, -1.0])
    m = detection_metrics(clean, adv, fooled=np.array([True, True, False, False]))
    assert m["auc"] == 1.0 and m["n_pos"] == 2 and m["n_adv"] == 4
    assert m["auc_all"] == pytest.approx(0.5)
    none = detection_metrics(clean, adv, fooled=np.zeros(4, bool))
    assert none["auc"] is None and none["n_pos"] == 0 and none["auc_all"] is not None


# --------------------------------------------------------------------------------------------------
# The CLIs on the tiny run
# --------------------------------------------------------------------------------------------------


def test_transferability_cli(tiny_run, tmp_path):
    proc = cli("eval.analyses.transferability", "--run_dir", tiny_run, "--n_samples", "64", "--nb_iter", "2",
               "--out_dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| Model | a(en,en) |" in proc.stdout and "CCE-RM" in proc.stdout
    with open(os.path.join(tiny_run, "eval", "transferability.json")) as f:
        r = json.load(f)
    for key in ("a_en_en", "a", "S11", "S01", "S10", "S00", "T", "nT", "a_single", "fooled_by_k",
                "params", "n_samples"):
        assert key in r, key
    assert r["n_samples"] == 64 and r["params"]["nb_iter"] == 2 and r["params"]["eps"] == 0.1
    assert r["S11"] + r["S01"] + r["S10"] + r["S00"] == pytest.approx(1)
    assert r["nT"] == pytest.approx(1 - r["a_en_en"] - r["S00"])
    assert r["a_single"] == pytest.approx(r["a_en_en"] - r["S11"])
    a = r["a"]
    assert r["T"] == pytest.approx(a[0][1] - a[0][0] + a[1][0] - a[1][1])


def test_detection_cli(tiny_run, tmp_path):
    proc = cli("eval.analyses.detection", "--run_dir", tiny_run, "--n_samples", "64", "--nb_iter", "2",
               "--attacks", "pgd", "--sweep_eps", "0.05", "--sweep_eps", "1/10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| Attack |" in proc.stdout and "AUC" in proc.stdout
    with open(os.path.join(tiny_run, "eval", "detection.json")) as f:
        r = json.load(f)
    m = r["attacks"]["pgd"]
    for key in ("auc", "auc_all", "tpr_at_5fpr", "n_pos", "n_neg", "fpr", "tpr"):
        assert key in m, key
    # k = 2 is shorter than detection's 20: Madry's rule raises η from ε/8 to 2.5 ε / k, capped at ε.
    assert m["eps_iter"] == pytest.approx(0.1) and m["n_neg"] == r["n_clean_correct"]
    assert [s["eps"] for s in r["eps_sweep"]] == pytest.approx([0.05, 0.1])
    h = np.load(os.path.join(tiny_run, "eval", "detection_entropy.npz"))
    assert h["clean"].shape == (64,) and h["adv_pgd"].shape == (64,) and h["sweep_eps"].shape == (2,)


def test_blackbox_cli(tiny_run, tmp_path):
    proc = cli("eval.analyses.blackbox", "--run_dir", tiny_run, "--run_dir", tiny_run, "--label", "A",
               "--label", "B", "--n_samples", "64", "--nb_iter", "2", "--eps", "0.1",
               "--out_dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| source \\ target | A | B |" in proc.stdout
    with open(tmp_path / "blackbox.json") as f:
        r = json.load(f)
    acc = np.array(r["results"][0]["accuracy"])
    assert acc.shape == (2, 2) and r["labels"] == ["A", "B"]
    # The same model twice: each row's x_adv fools both columns equally.
    assert acc[0, 0] == acc[0, 1] and acc[1, 0] == acc[1, 1]
    assert (tmp_path / "blackbox_eps0.1.png").stat().st_size > 0
    assert (tmp_path / "blackbox_eps0.1.pdf").stat().st_size > 0


@pytest.mark.parametrize("module,args", [
    ("eval.analyses.transferability", ["--run_dir", "/nonexistent/run"]),
    ("eval.analyses.transferability", []),
    ("eval.analyses.detection", ["--run_dir", "{run}", "--eps", "0.01", "--eps_iter", "0.02"]),
    ("eval.analyses.detection", ["--run_dir", "{run}", "--attacks", "fgsm"]),
    ("eval.analyses.blackbox", ["--run_dir", "{run}", "--eps", "eight"]),
    ("eval.analyses.blackbox", ["--run_dir", "{run}", "--nb_iter", "x"]),
])
def test_bad_input_exits_2(tiny_run, module, args):
    proc = cli(module, *[a.replace("{run}", tiny_run) for a in args], timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
