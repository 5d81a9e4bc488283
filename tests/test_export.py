"""Runs people can share: ensemble.keras beside the weights, the package-free exports (.keras and
SavedModel, checked in a Python where cce_tf cannot be imported), and the attack suite on a model
file in place of a run folder."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from cce_tf.cli_flags import UsageError
from cce_tf.ensemble import (KERAS_FILE, WEIGHTS_FILE, Ensemble, InconsistentRun, build_ensemble,
                             keras_file_weights_sha256, load_run)
from cce_tf.export import cli as export_cli, export_run
from cce_tf.fingerprint import file_sha256, model_file_fingerprint, weights_fingerprint
from eval import batches, model_scan
from eval import attack_suite as suite_cli
from eval.analyses.attack_suite import store, plan as suite_plan, run as suite_run

SUITE = suite_plan.SuiteOptions(attacks=("fgsm", "pgd"), n_samples=32, nb_iter=2, batch_size=32,
                                  sanity=False, dataset="fashion_mnist")


@pytest.fixture(scope="module")
def exported(tiny_run, fmnist_test, tmp_path_factory):
    """The tiny run exported both ways (the CLI for the SavedModel), and its logits on 16 images."""
    out = tmp_path_factory.mktemp("export")
    export_run(tiny_run, "keras", str(out / "ens.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert export_cli(["export", "--run_dir", tiny_run, "--format", "savedmodel",
                           "--out", str(out / "ens_savedmodel")]) == 0
    x = fmnist_test[0][:16]
    np.save(out / "x.npy", x)
    np.save(out / "ref.npy", load_run(tiny_run)(x).numpy())
    return out


def test_a_run_holds_ensemble_keras_with_the_fingerprinted_weights(tiny_run, fmnist_test):
    assert keras_file_weights_sha256(os.path.join(tiny_run, KERAS_FILE)) == weights_fingerprint(tiny_run)
    ens = load_run(tiny_run)                       # from ensemble.keras, safe_mode=True
    assert isinstance(ens, Ensemble) and len(ens.members) == 2
    # Equal to the ensemble rebuilt from config.json + weights, the route of runs without the file.
    cfg = json.load(open(os.path.join(tiny_run, "config.json")))
    old = build_ensemble(cfg["arch"], tuple(cfg["input_shape"]), cfg["num_classes"], cfg["members"])
    old.load_weights(os.path.join(tiny_run, WEIGHTS_FILE))
    x = fmnist_test[0][:16]
    np.testing.assert_array_equal(ens(x).numpy(), old(x).numpy())


def test_ensemble_save_and_load_round_trip(tmp_path):
    """The issue's symptom: ensemble.save("e.keras") raised NotImplementedError (no get_config)."""
    ens = build_ensemble("cnn", (28, 28, 1), 10, n_members=3)
    ens.save(tmp_path / "e.keras")
    back = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True)
    x = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    assert isinstance(back, Ensemble) and [m.name for m in back.members] == ["member_0", "member_1", "member_2"]
    np.testing.assert_array_equal(back(x).numpy(), ens(x).numpy())
    np.testing.assert_array_equal(back.member_logits(x).numpy(), ens.member_logits(x).numpy())


def test_keras_file_with_other_weights_is_refused(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    os.makedirs(run)
    for name in ("config.json", WEIGHTS_FILE, KERAS_FILE):
        shutil.copy(os.path.join(tiny_run, name), run / name)
    ens = load_run(str(run))
    ens.set_weights([w * 0.5 for w in ens.get_weights()])
    ens.save_weights(str(run / WEIGHTS_FILE))      # weights replaced, ensemble.keras left behind
    with pytest.raises(InconsistentRun, match="holds other weights"):
        load_run(str(run))
    assert export_cli(["export", "--run_dir", str(run), "--out", str(tmp_path / "e.keras")]) == 2
    assert suite_cli.cli(["attack_suite", "--run_dir", str(run), "--attacks", "fgsm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "holds other weights" in line for line in err)
    assert not (tmp_path / "e.keras").exists() and not (run / "eval" / store.RESULTS_FILE).exists()


def test_exports_give_the_same_logits_without_the_package(exported):
    """python -I from a temp folder: neither the repo nor PYTHONPATH is on sys.path, and the package
    (which make installs into .venv in editable mode) cannot be imported: loading needs none of it."""
    code = """
import sys
for name in ("cce_tf", "attacks", "eval", "figures", "studies"):   # as on a machine without the package
    sys.modules[name] = None
import numpy as np, keras, tensorflow as tf
x, ref = np.load("x.npy"), np.load("ref.npy")
k = keras.saving.load_model("ens.keras", safe_mode=True)(x).numpy()
served = tf.saved_model.load("ens_savedmodel")  # held: its variables die with the object
s = served.serve(tf.constant(x)).numpy()
print(float(np.abs(k - ref).max()), float(np.abs(s - ref).max()))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=exported, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    dk, ds = map(float, proc.stdout.split()[-2:])
    print(f"max |delta logits|: .keras {dk:.3g}, SavedModel {ds:.3g}")
    assert dk <= 1e-5 and ds <= 1e-5


def test_export_refuses_bad_input(tiny_run, tmp_path, capsys):
    cases = [(["--run_dir", tiny_run, "--out", str(tmp_path / "e.h5")], "must end in .keras"),
             (["--run_dir", tiny_run, "--format", "onnx", "--out", str(tmp_path / "e.keras")], "--format"),
             (["--run_dir", str(tmp_path), "--out", str(tmp_path / "e.keras")], "not a trained run"),
             (["--run_dir", tiny_run, "--format", "savedmodel", "--out", str(tmp_path)], "exists")]
    for argv, words in cases:
        assert export_cli(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err


def test_attack_suite_on_an_exported_keras_file(exported, tiny_run, fmnist_test):
    path = str(exported / "ens.keras")
    with contextlib.redirect_stdout(io.StringIO()):
        (header, summary), = suite_run.evaluate([path], SUITE)
    results = json.load(open(exported / "ens.keras.eval" / store.RESULTS_FILE))
    assert header == "ens.keras" and results["weights_sha256"] == file_sha256(path) == model_file_fingerprint(path)
    assert set(results["attacks"]) == {"fgsm", "pgd"}
    assert all(e["weights_sha256"] == results["weights_sha256"] for e in results["attacks"].values())
    # The exported model is the run's ensemble: the same natural accuracy on the whole test set.
    from cce_tf import data
    x, y = data.load("fashion_mnist", "test")
    assert results["natural_accuracy"] == pytest.approx(
        float(np.mean(batches.predict_labels(load_run(tiny_run), x) == y)), abs=1e-9)
    # Run again: reused under the same rule as a run folder's results.
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        suite_run.evaluate([path], SUITE)
    assert "fgsm: reused" in buf.getvalue() and "pgd: reused" in buf.getvalue()


def test_attack_suite_on_a_savedmodel_and_model_file_errors(exported, capsys):
    sm = str(exported / "ens_savedmodel")
    assert model_scan.refused_ops(model_scan.read_saved_model(sm)) == []   # loaded below after the same scan
    opts = suite_plan.SuiteOptions(attacks=("fgsm",), n_samples=16, batch_size=16, sanity=False)
    with contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(UsageError, match="give --dataset"):   # 28x28x1, 10 classes: two data sets
            suite_run.evaluate([sm], opts)
        (_, summary), = suite_run.evaluate([sm], suite_plan.SuiteOptions(**{**opts.__dict__,
                                                                                "dataset": "fashion_mnist"}))
    assert isinstance(summary["attacks"]["fgsm"], float)
    assert os.path.isfile(os.path.join(sm + ".eval", store.RESULTS_FILE))
    assert suite_cli.cli(["attack_suite", "--run_dir", str(exported / "ens.keras"), "--dataset", "cifar10",
                             "--attacks", "fgsm"]) == 2
    assert "does not fit --dataset cifar10" in capsys.readouterr().err


def test_detection_and_black_box_on_a_model_file(exported, tiny_run, tmp_path, capsys):
    """Entropy detection, the detector-aware attacks and the black-box matrix need only logits: a
    model file works in place of a run, its results beside it in PATH.eval/; transferability needs
    the members and says so in one line."""
    from eval.analyses import adaptive_detection, blackbox, detection, transferability
    path = str(exported / "ens.keras")
    kw = dict(n_samples=32, batch_size=32, nb_iter=2, dataset="fashion_mnist", verbose=0)
    d = detection.evaluate(path, detection.Options(attacks=("pgd",), sweep=False, **kw))
    m = d["attacks"]["pgd"]
    # The AUC is defined exactly when the tiny model leaves both classes (clean right, and fooled),
    # which the last bits of a convolution decide on 32 samples: assert the rule, not the score.
    assert d["members"] == 1 and (m["auc"] is None) == (m["n_pos"] == 0 or m["n_neg"] == 0)
    assert m["auc"] is None or 0 <= m["auc"] <= 1
    assert os.path.isfile(exported / "ens.keras.eval" / detection.JSON_NAME)
    a = adaptive_detection.evaluate(path, adaptive_detection.Options(betas=(1.0,), max_nb_iter=4, **kw))
    assert a["weights_sha256"] == model_file_fingerprint(path)
    assert 0 <= a["detection_aware_robust_accuracy"] <= a["natural_accuracy"]
    r = blackbox.evaluate([tiny_run, path], blackbox.Options(labels=("run", "file"), eps_list=(0.1,), **kw))
    acc = np.asarray(r["results"][0]["accuracy"])
    # The file is the run's ensemble: the same examples leave both at the same accuracy.
    np.testing.assert_allclose(acc[:, 0], acc[:, 1], atol=1e-9)
    assert blackbox.cli(["blackbox", "--run_dir", path, "--out_dir", str(tmp_path)]) == 2
    assert "give --dataset" in capsys.readouterr().err
    assert transferability.cli(["transferability", "--run_dir", path]) == 2
    assert "members" in capsys.readouterr().err
