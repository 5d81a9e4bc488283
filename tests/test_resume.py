"""Trustworthy runs: the same weights after a kill and a resume, the LR schedule on extension, failed
writes, corrupt run files. The batches and the LR milestones in-process; runs by the real CLI."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from conftest import ROOT, train_cli


def test_train_dataset_is_a_function_of_seed_epoch_and_step():
    from cce_tf import data
    x = np.random.RandomState(0).rand(40, 8, 8, 1).astype(np.float32)
    y = np.arange(40) % 10

    def batches(epoch, skip=0, n=7):   # 5 batches an epoch
        ds = data.train_dataset(x, y, 8, seed=3, epoch=epoch, skip=skip)
        return [np.asarray(b[0]) for b in ds.take(n)]

    stream = batches(0)
    np.testing.assert_array_equal(stream[5:], batches(1, n=2))     # epoch 1 follows epoch 0
    np.testing.assert_array_equal(stream[3:], batches(0, skip=3, n=4))
    assert not np.array_equal(stream[0], stream[5])                 # a new order and new shifts


def test_milestones_scale_at_creation_and_never_change_a_started_epoch():
    from cce_tf import config
    assert config.scaled_milestones("cifar10", 180) == [80, 120, 160]
    assert config.scaled_milestones("cifar10", 90) == [40, 60, 80]
    assert config.scaled_milestones("mnist", 4) == [2, 3]
    assert config.scaled_milestones("mnist", 2) == [1]            # 75/100 of 2 epochs: at the end
    assert [config.learning_rate(e, 1.0, [1, 3]) for e in range(4)] == pytest.approx([1, 0.1, 0.1, 0.01])
    resumed = config.resumed_milestones
    assert resumed([1], None, 2) == [1]
    assert resumed([1, 5], [1, 5], 3) == [1, 5]                   # the command that made the run
    assert resumed([1, 5], [3], 3) == [1, 3]                      # new milestones for new epochs
    assert resumed([1], [1, 2], 2) == [1, 2]                      # 2: from the first new epoch on
    for bad in ([2], [1, 1], [0, 3]):
        with pytest.raises(ValueError, match="already trained"):
            resumed([1], bad, 3)


# --------------------------------------------------------------------------------------------------
# One finished 2-epoch run, and copies of it resumed: extended, with a write that fails, refused.
# A fresh run killed mid-epoch and resumed must end with its weights. The runs that train go
# concurrently through the CLI; the resumes refused before training call cce_tf.train's `run`
# in-process (no TensorFlow start-up each): this keeps the suite fast.
# --------------------------------------------------------------------------------------------------

# 8 steps of 32 images an epoch, a backup every 2 steps, the LR milestone after epoch 1.
FLAGS = ("--method", "adv", "--members", "1", "--nb_iter", "1", "--train_subset", "256", "--test_subset", "64",
         "--batch_size", "32", "--backup_every_steps", "2", "--lr_milestones", "1")
STEPS = 8
# Determinism is process-wide and for good: never in-process (it may be left out on a resume).
CLI_FLAGS = FLAGS + ("--deterministic",)


def weights(run):
    """Every array of the run's ensemble.weights.h5, by its path in the file."""
    arrays = {}

    def read(name, node):
        if isinstance(node, h5py.Dataset):
            arrays[name] = node[()]

    with h5py.File(os.path.join(run, "ensemble.weights.h5"), "r") as f:
        f.visititems(read)
    return arrays


def latest_checkpoint(run):
    """The number (steps trained) of the checkpoint that checkpoints/checkpoint names, or None."""
    try:
        text = open(os.path.join(run, "checkpoints", "checkpoint")).read()
    except FileNotFoundError:
        return None
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else None


def snapshot(run):
    """Every file of the run (but TensorBoard's) -> its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and "logs" not in p.parts}


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def block_checkpoints(run):
    """Make the next checkpoint write fail: a read-only folder, or, for root (whom permissions do
    not stop), a file where TF's temporary folder for each checkpoint of epoch 3 would go."""
    folder = run / "checkpoints"
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    for n in range(2 * STEPS + 1, 3 * STEPS + 1):
        (folder / f"ckpt-{n}_temp").write_text("")


def kill_mid_epoch(run):
    """Start a fresh 2-epoch run and SIGKILL it as soon as it has a backup from inside an epoch;
    returns that backup's number (None if the run was not killed)."""
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "cce_tf.train", "--out_dir", str(run), "--verbose", "0", *CLI_FLAGS, "--epochs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n, deadline = None, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not (n and n % STEPS):
        time.sleep(0.01)
        n = latest_checkpoint(run)
    proc.send_signal(signal.SIGKILL)   # os.kill, unless the process has already ended
    return n if proc.wait() == -signal.SIGKILL else None


# name: (what is done to the copy first, flags after CLI_FLAGS)
TRAINED = {
    "extended": (None, ("--epochs", "4")),
    "new_milestone": (None, ("--epochs", "3", "--lr_milestones", "2")),
    "weights_write_fails": (lambda run: (run / "ensemble.tmp.weights.h5").mkdir(), ("--epochs", "3")),
    "checkpoint_write_fails": (block_checkpoints, ("--epochs", "3")),
    "killed": (kill_mid_epoch, ("--epochs", "2")),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(a finished 2-epoch run, {name: (run folder, what `first` returned or its files before, exit
    code, stdout, stderr)}) for every case of TRAINED: a copy of that run (a fresh folder for
    "killed") resumed by the CLI."""
    base = tmp_path_factory.mktemp("base") / "run"

    def resume(name):
        first, flags = TRAINED[name]
        run = tmp_path_factory.mktemp(name) / "run"
        if name == "killed":
            before = first(run)          # the backup it was killed at
        else:
            shutil.copytree(base, run)
            if first:
                first(run)
            before = snapshot(run)
        proc = train_cli(run, *CLI_FLAGS, *flags, check=False)
        return name, (run, before, proc.returncode, proc.stdout, proc.stderr)

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        killed = pool.submit(resume, "killed")      # needs no base run: alongside it
        train_cli(base, *CLI_FLAGS, "--epochs", "2")
        results = dict(pool.map(resume, [name for name in TRAINED if name != "killed"]))
        results.update([killed.result()])
    yield base, results
    (results["checkpoint_write_fails"][0] / "checkpoints").chmod(0o755)   # let pytest clean up


@pytest.fixture(scope="module")
def base_run(runs):
    return runs[0]


@pytest.fixture(scope="module")
def resumed(runs):
    return runs[1]


def test_killed_run_resumes_to_the_same_weights(base_run, resumed):
    run, killed_at, code, out, err = resumed["killed"]
    assert killed_at and killed_at % STEPS, "the run ended before a backup inside an epoch"
    assert code == 0, err[-3000:]
    match = re.search(r"resuming \S+ from epoch (\d) step (\d)", out)
    assert match, out
    epoch, step = int(match.group(1)), int(match.group(2))
    # From the backup seen before the kill, or from one written before the kill landed.
    assert step in (2, 4, 6) and (epoch - 1) * STEPS + step >= killed_at, (epoch, step, killed_at)
    a, b = weights(run), weights(base_run)
    assert a.keys() == b.keys()
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-6
    # The interrupted epoch's metrics went on from those of its first steps.
    history, uninterrupted = json.load(open(run / "history.json")), json.load(open(base_run / "history.json"))
    assert [h["epoch"] for h in history] == [1, 2]
    for h, u in zip(history, uninterrupted):
        assert h == pytest.approx(u, abs=1e-6)


def learning_rates(run):
    return [h["learning_rate"] for h in json.load(open(run / "history.json"))]


def test_an_extension_goes_on_at_the_last_rate(resumed):
    run, _, code, out, err = resumed["extended"]
    assert code == 0, err[-2000:]
    assert "resuming" in out and "after epoch 2" in out
    # Milestone 1 was fixed when the run was made with 2 epochs: never back up to 1e-3.
    assert learning_rates(run) == pytest.approx([1e-3, 1e-4, 1e-4, 1e-4], rel=1e-6)
    assert json.load(open(run / "config.json"))["lr_milestones"] == [1]


def test_milestones_given_on_an_extension_apply_to_new_epochs(resumed):
    run, _, code, _, err = resumed["new_milestone"]
    assert code == 0, err[-2000:]
    assert learning_rates(run) == pytest.approx([1e-3, 1e-4, 1e-5], rel=1e-6)
    assert json.load(open(run / "config.json"))["lr_milestones"] == [1, 2]


def error_line(err):
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("name,path,latest", [
    ("weights_write_fails", "ensemble.tmp.weights.h5", 3 * STEPS - 2),   # at the end of epoch 3
    ("checkpoint_write_fails", "checkpoints", 2 * STEPS),                 # at its first backup
])
def test_failed_write_is_one_line_exit_1_and_keeps_the_last_good_files(resumed, name, path, latest):
    import tensorflow as tf
    run, before, code, _, err = resumed[name]
    assert code == 1, err[-3000:]
    assert str(run / path) in error_line(err)
    # The last backup before the failure is the latest checkpoint, and readable.
    assert latest_checkpoint(run) == latest
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / f"ckpt-{latest}"))
    position = [reader.get_tensor(f"{v}/.ATTRIBUTES/VARIABLE_VALUE") for v in ("epoch", "step")]
    assert tuple(position) == divmod(latest, STEPS)
    after = snapshot(run)
    if name == "weights_write_fails":
        assert after["ensemble.weights.h5"] == before["ensemble.weights.h5"]   # epoch 2's
    else:
        assert all(after[f] == before[f] for f in before if f.startswith("checkpoints"))
    assert weights(run)


# name: (what is done to the copy first, flags after FLAGS, what the error line names)
REFUSED = {
    "trained_milestone": (None, ("--epochs", "3", "--lr_milestones", "1,1"), "--lr_milestones 1,1"),
    "fewer_epochs": (None, ("--epochs", "1"), "--epochs 1"),
    "config_truncated": (lambda run: truncate(run / "config.json"), ("--epochs", "3"), "config.json"),
    "weights_truncated": (lambda run: truncate(run / "ensemble.weights.h5"), ("--epochs", "3"),
                          "ensemble.weights.h5"),
    "history_corrupt": (lambda run: (run / "history.json").write_text('[{"epoch": 1'), ("--epochs", "3"),
                        "history.json"),
    "checkpoint_truncated": (lambda run: truncate(run / "checkpoints" / f"ckpt-{2 * STEPS}.index"),
                             ("--epochs", "3"), f"ckpt-{2 * STEPS}"),
    "checkpoints_deleted": (lambda run: shutil.rmtree(run / "checkpoints"), ("--epochs", "3"), "no checkpoint"),
    "checkpoint_index_corrupt": (lambda run: (run / "checkpoints" / "checkpoint").write_text("garbage {{"),
                                 ("--epochs", "3"), os.path.join("checkpoints", "checkpoint")),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_resume_is_one_line_exit_2_and_writes_nothing(base_run, tmp_path, capsys, name):
    from cce_tf import train
    first, flags, names = REFUSED[name]
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    if first:
        first(run)
    before = snapshot(run)
    assert train.cli(["cce_tf.train", "--out_dir", str(run), "--verbose", "0", *FLAGS, *flags]) == 2
    assert names in error_line(capsys.readouterr().err)
    assert snapshot(run) == before
