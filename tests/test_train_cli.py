"""python -m cce_tf.train: run folder, resume, bad input, NaN, missing data, mirrored strategy."""
import json
import os

import numpy as np
import pytest

from cce_tf.ensemble import load_run, read_config
from conftest import train_cli


def test_run_folder_holds_what_contract_5_lists(tiny_run):
    for name in ("config.json", "ensemble.weights.h5", "history.json", "checkpoints", "logs"):
        assert os.path.exists(os.path.join(tiny_run, name)), name
    cfg = read_config(tiny_run)
    for key in ("dataset", "arch", "method", "members", "lambda_pm", "lambda_dm", "pgd", "seed", "versions"):
        assert key in cfg, key
    assert (cfg["method"], cfg["preset"], cfg["lambda_pm"], cfg["lambda_dm"]) == ("cce", "cce-rm", 1.0, 1.0)
    assert cfg["pgd"] == {"eps": 0.1, "eps_iter": 0.025, "nb_iter": 3, "eps_max": None}
    assert {"tensorflow", "keras", "cleverhans"} <= set(cfg["versions"])
    history = json.load(open(os.path.join(tiny_run, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "acc", "adv_acc", "val_acc", "learning_rate"} <= set(history[0])


def test_loaded_run_classifies_real_images(tiny_run, fmnist_test):
    ens = load_run(tiny_run)
    x, y = fmnist_test
    acc = float(np.mean(np.argmax(ens(x).numpy(), -1) == y))
    assert acc > 0.4                       # 10 classes: chance is 0.1
    assert len(ens.members) == 2


def test_resume_continues_from_the_saved_epoch(tmp_path):
    out = tmp_path / "run"
    flags = ("--method", "adv", "--train_subset", "256", "--nb_iter", "2")
    train_cli(out, *flags, "--epochs", "1")
    first = json.load(open(out / "history.json"))
    proc = train_cli(out, *flags, "--epochs", "2")
    assert "resuming" in proc.stdout and "after epoch 1" in proc.stdout
    history = json.load(open(out / "history.json"))
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first[0]                    # epoch 1 was not trained again
    proc = train_cli(out, *flags, "--epochs", "2")   # finished: nothing more to train
    assert "resuming" in proc.stdout and len(json.load(open(out / "history.json"))) == 2


@pytest.mark.parametrize("flags,names", [
    (("--dataset", "imagenet"), "--dataset"),
    (("--method", "cce-xx"), "--method"),
    (("--arch", "vgg"), "--arch"),
    (("--members", "0"), "--members"),
    (("--lambda_pm", "-1"), "--lambda_pm"),
    (("--lambda_dm", "-0.5"), "--lambda_dm"),
    (("--eps", "0"), "--eps"),
    (("--eps", "-0.1"), "--eps"),
    (("--batch_size", "0"), "--batch_size"),
    (("--method", "adv", "--members", "2"), "--members"),
    (("--strategy", "tpu"), "--strategy"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, flags, names):
    out = tmp_path / "run"
    proc = train_cli(out, *flags, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and names in lines[0], proc.stderr[-2000:]
    assert not out.exists()


def test_resume_with_other_settings_is_refused_and_nothing_changes(tiny_run):
    before = {n: os.path.getmtime(os.path.join(tiny_run, n)) for n in ("config.json", "ensemble.weights.h5")}
    proc = train_cli(tiny_run, "--train_subset", "1024", "--epochs", "2", "--nb_iter", "3", "--lambda_dm", "5",
                     check=False)
    assert proc.returncode == 2
    assert "lambda_dm" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert before == {n: os.path.getmtime(os.path.join(tiny_run, n)) for n in before}


def test_missing_cifar_names_file_and_folder(tmp_path):
    env_dir = tmp_path / "data"
    env_dir.mkdir()
    os.environ["CCE_DATA_DIR"] = str(env_dir)
    try:
        proc = train_cli(tmp_path / "run", "--dataset", "cifar100", check=False)
    finally:
        del os.environ["CCE_DATA_DIR"]
    assert proc.returncode == 2
    msg = proc.stderr.strip().splitlines()[-1]
    assert "cifar-100-python.tar.gz" in msg and str(env_dir) in msg
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = train_cli(out, "--method", "nat", "--train_subset", "256", "--epochs", "2", "--learning_rate", "1e30",
                     check=False)
    assert proc.returncode == 1
    assert "NaN" in proc.stderr
    assert not (out / "ensemble.weights.h5").exists()   # no epoch ended with a finite loss


def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    out = tmp_path / "run"
    proc = train_cli(out, "--strategy", "mirrored", "--cpu_devices", "2", "--method", "adv-en",
                     "--train_subset", "256", "--epochs", "1", "--nb_iter", "2")
    assert "on 2 device(s)" in proc.stdout
    assert "clean test accuracy" in proc.stdout
    assert len(load_run(str(out)).members) == 2
