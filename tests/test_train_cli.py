"""python -m cce_tf.train: run folder, resume, bad input, NaN, missing data, mirrored strategy.
Killed runs, the LR schedule on extension, failed writes and corrupt run files: tests/test_resume.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cce_tf import train
from cce_tf.cli_flags import UsageError
from cce_tf.train_settings import Settings, TrainOptions
from cce_tf.ensemble import load_run, read_config
from conftest import ROOT, train_cli


def test_run_folder_holds_what_contract_5_lists(tiny_run):
    for name in ("config.json", "ensemble.weights.h5", "history.json", "checkpoints", "logs"):
        assert os.path.exists(os.path.join(tiny_run, name)), name
    cfg = read_config(tiny_run)
    for key in ("dataset", "arch", "method", "members", "lambda_pm", "lambda_dm", "pgd", "seed", "versions"):
        assert key in cfg, key
    assert (cfg["method"], cfg["preset"], cfg["lambda_pm"], cfg["lambda_dm"]) == ("cce", "cce-rm", 1.0, 1.0)
    # k = 3 is shorter than the data set's 10: Madry's rule raises η to 2.5 ε / k.
    assert cfg["pgd"] == {"eps": 0.1, "eps_iter": pytest.approx(0.25 / 3), "nb_iter": 3, "eps_max": None}
    assert {"tensorflow", "keras", "cleverhans"} <= set(cfg["versions"])
    assert "train-images-idx3-ubyte.gz" in cfg["data_source"]["files"]
    assert cfg["lr_milestones"] == [1]     # the paper's 50, 75 of 100 epochs, scaled to 2 (75 -> 2: never)
    history = json.load(open(os.path.join(tiny_run, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "acc", "adv_acc", "val_acc", "learning_rate"} <= set(history[0])
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-3, 1e-4], rel=1e-6)


def test_loaded_run_classifies_real_images(tiny_run, fmnist_test):
    ens = load_run(tiny_run)
    x, y = fmnist_test
    acc = float(np.mean(np.argmax(ens(x).numpy(), -1) == y))
    assert acc > 0.4                       # 10 classes: chance is 0.1
    assert len(ens.members) == 2


def test_resume_continues_from_the_saved_epoch(tmp_path):
    out = tmp_path / "run"
    flags = ("--method", "adv", "--train_subset", "256", "--test_subset", "256", "--nb_iter", "2")
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


# Each numeric flag with each kind of bad value: negative, zero (where 0 means nothing), NaN, inf,
# huge, not a number, empty. The checks run before TensorFlow is imported: in-process here, as the
# CLI in a few subprocesses below.
INT_FLAGS = ("epochs", "batch_size", "nb_iter", "members", "train_subset", "backup_every_steps", "seed")
FLOAT_FLAGS = ("learning_rate", "eps", "eps_iter", "eps_max", "lambda_pm", "lambda_dm")
ZERO_IS_FINE = ("train_subset", "backup_every_steps", "seed", "lambda_pm", "lambda_dm")


def bad_numbers():
    for flag in INT_FLAGS + FLOAT_FLAGS:
        values = ["-1", "nan", "inf", "-inf", "1e300", "abc", ""]
        values += [] if flag in ZERO_IS_FINE else ["0"]
        values += [str(10**12)] if flag in INT_FLAGS else []
        yield from ((flag, value) for value in values)


@pytest.fixture
def fresh_flags():
    yield
    train.FLAGS.unparse_flags()   # leave absl's global flags as an unparsed process would have them


def check_flags(*argv):
    """cce_tf.train's checks of its command line, in-process; returns the UsageError's message."""
    with pytest.raises(UsageError) as e:
        train.parse(["cce_tf.train", *argv])
        Settings.from_options(TrainOptions.from_flags(train.FLAGS))
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("flag,value", list(bad_numbers()))
def test_bad_number_is_refused_in_one_line(fresh_flags, flag, value):
    assert f"--{flag}" in check_flags(f"--{flag}={value}")


@pytest.mark.parametrize("value", ["a,b", "0", "3,2", "1.5", "1e300", str(10**6)])
def test_bad_lr_milestones_are_refused_in_one_line(fresh_flags, value):
    assert "--lr_milestones" in check_flags(f"--lr_milestones={value}")


def test_good_flags_pass_the_checks(fresh_flags):
    train.parse(["cce_tf.train", "--lambda_pm=0", "--train_subset=0", "--seed=0", "--backup_every_steps=0",
                 "--lr_milestones=", "--epochs=100000", "--members=16"])
    s = Settings.from_options(TrainOptions.from_flags(train.FLAGS))
    assert (s.lr_milestones, s.epochs, s.members) == ((), 100000, 16)


@pytest.mark.parametrize("argv,names", [
    (("--epochs=1000000000000",), "--epochs"),
    (("--learning_rate=nan",), "--learning_rate"),
    (("--members=abc",), "--members"),
    (("--eps=1e300",), "--eps"),
    (("--backup_every_steps=",), "--backup_every_steps"),
    (("--epoch=3",), "epoch"),              # unknown flag: absl alone would exit 1
    (("--lr_milestones=2,1",), "--lr_milestones"),
])
def test_bad_flag_is_one_line_exit_2_before_tensorflow(tmp_path, argv, names):
    out = tmp_path / "run"
    env = dict(os.environ, CCE_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "cce_tf.train", "--out_dir", str(out), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    # One line, and only one: TensorFlow, once imported, would add its own start-up lines.
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:") and names in proc.stderr, proc.stderr
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
    proc = train_cli(out, "--method", "nat", "--train_subset", "256", "--test_subset", "256", "--epochs", "2",
                     "--learning_rate", "1e30", check=False)
    assert proc.returncode == 1
    assert "NaN" in proc.stderr
    assert not (out / "ensemble.weights.h5").exists()   # no epoch ended with a finite loss


def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    out = tmp_path / "run"
    proc = train_cli(out, "--strategy", "mirrored", "--cpu_devices", "2", "--method", "adv-en",
                     "--train_subset", "256", "--test_subset", "256", "--epochs", "1", "--nb_iter", "2")
    assert "on 2 device(s)" in proc.stdout
    assert "clean test accuracy" in proc.stdout
    assert len(load_run(str(out)).members) == 2


@pytest.mark.parametrize("argv,names", [
    (("--method=gal", "--gal_lambda=-1"), "--gal_lambda"),
    (("--method=gal", "--gal_lambda=nan"), "--gal_lambda"),
    (("--method=dverge", "--dverge_variant=adv"), "--dverge_variant"),
    (("--method=dverge", "--dverge_eps=0"), "--dverge_eps"),
    (("--method=dverge", "--dverge_eps=0.1", "--dverge_eps_iter=0.2"), "--dverge_eps_iter"),
    (("--method=dverge", "--dverge_nb_iter=0"), "--dverge_nb_iter"),
    (("--method=trs", "--trs_lambda_a=-1"), "--trs_lambda_a"),
    (("--method=trs", "--trs_lambda_b=inf"), "--trs_lambda_b"),
    (("--method=trs", "--trs_eps=0"), "--trs_eps"),
    (("--method=trs", "--trs_eps=0.2", "--trs_eps_end=0.1"), "--trs_eps_end"),
    (("--method=trs", "--trs_nb_iter=0"), "--trs_nb_iter"),
    (("--method=gal", "--members=1"), "--members"),
])
def test_bad_diversity_flags_are_refused_in_one_line(fresh_flags, argv, names):
    assert names in check_flags(*argv)


def test_diversity_defaults_follow_the_data_set(fresh_flags):
    train.parse(["cce_tf.train", "--method=dverge", "--dataset=cifar10", "--dverge_eps=0.14"])
    s = Settings.from_options(TrainOptions.from_flags(train.FLAGS))
    assert s.as_json()["dverge"] == {"variant": "plain", "eps": 0.14, "eps_iter": pytest.approx(0.014), "nb_iter": 10}
    assert (s.gal, s.trs, s.init_from) == (None, None, None)
    train.parse(["cce_tf.train", "--method=trs"])
    assert Settings.from_options(TrainOptions.from_flags(train.FLAGS)).as_json()["trs"] == {
        "lambda_a": 10.0, "lambda_b": 20 / 128**2, "eps": 0.1, "eps_end": 0.2, "nb_iter": 6}


def test_bad_init_from_is_one_line_exit_2_before_tensorflow(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(dict(dataset="fashion_mnist", arch="cnn", members=3)))
    (src / "ensemble.weights.h5").write_bytes(b"not an HDF5 file")
    out = tmp_path / "run"
    for argv, names in (((str(tmp_path / "none"),), "no config.json"),
                        ((str(src),), "members=3"),                         # a 2-member run from a 3-member one
                        ((str(src), "--members", "3"), "unreadable weights file")):
        proc = subprocess.run([sys.executable, "-m", "cce_tf.train", "--method", "dverge", "--out_dir", str(out),
                               "--init_from", *argv], cwd=ROOT, env=dict(os.environ, CCE_OFFLINE="1"),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:") and names in proc.stderr, proc.stderr
        assert not out.exists()


@pytest.mark.parametrize("env,argv,level", [
    ({}, ["cce-train"], "3"),
    ({"TF_CPP_MIN_LOG_LEVEL": "0"}, ["cce-train"], "0"),            # the user's own setting is kept
    ({}, ["cce-train", "--verbose", "2"], None),                    # asked for TensorFlow's log
    ({}, ["cce-train", "--verbose=2"], None),
    ({}, ["cce-train", "--verbose=1"], "3"),
])
def test_quiet_tf_log_unless_the_user_asked(monkeypatch, env, argv, level):
    from cce_tf import cli_flags
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cli_flags.quiet_tf_log(argv)
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia"), reason="with a CUDA driver cuInit succeeds: nothing to hide")
def test_cli_quiets_tensorflows_cuinit_error_before_importing_it(tmp_path):
    """--cpu_devices lists the devices (CUDA's cuInit fails on a machine without it, an ERROR line),
    then the too-large subset exits 2: the CLI alone sets the level, a user's 0 shows the line."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    cmd = [sys.executable, "-m", "cce_tf.train", "--out_dir", str(tmp_path / "run"), "--cpu_devices", "2",
           "--train_subset", "70000"]
    for user_level, shown in ((None, False), ("0", True)):
        run_env = dict(env, CCE_OFFLINE="1", **({"TF_CPP_MIN_LOG_LEVEL": user_level} if user_level else {}))
        proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "more than the data set's 60000 images" in proc.stderr, proc.stderr
        assert ("cuInit" in proc.stderr) == shown, proc.stderr
