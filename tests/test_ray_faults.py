"""Faults of the Ray executor, made to happen (docs/reliability.md): a worker SIGKILLed in the middle
of a training job and one in the middle of an attack shard are retried by Ray, and a driver
SIGKILLed in the middle of a study is run again and redoes only the jobs that were in flight; each
study ends with the results of an undisturbed run.

Every study here is the real CLI in a subprocess of its own session that starts its own local Ray:
the test finds that Ray's workers in /proc (children of its raylet, a child of the driver), kills
one of them or the driver, and at the end kills whatever a killed driver left behind."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import ROOT, STUDY_HEAD  # noqa: E402
from eval.analyses.attack_suite import store

# One defended run; the plan adds the undefended NAT_2 canary (studies.plan.CANARY), whose results
# are not rows of results.jsonl (its weights and masks are compared too). Four jobs: two trainings,
# in this order, then an attack suite on each, split into two shards (FGSM, PGD on 64 samples).
STUDY = STUDY_HEAD + """runs = [{label = "ADV-EN_2", method = "adv-en", members = 2}]\n"""
TRAIN = ("train__fashion_mnist_cnn_adv-en_n2_s0", "train__fashion_mnist_cnn_nat_n2_s0")
SHARDS = 4
AGENTS = {"DashboardAgent", "RuntimeEnvAgent"}   # the raylet's helpers, titled like workers
TIMEOUT_S = 900                                  # a study's wait longer than this is a hang


# --------------------------------------------------------------------------------------------------
# Processes, from /proc
# --------------------------------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):   # not a process, or gone meanwhile
            pass
    return out


def _title(pid: int) -> str:
    """Ray titles a worker "ray::NAME" while it runs task NAME ("ray::IDLE" before); "" once gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return _title(pid).startswith("ray::")


def _opens(pid: int, path: str) -> bool:
    """The process has ``path`` open (a job's task writes its log through fds 1 and 2)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _has_tensorflow(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libtensorflow" in f.read()
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# The study's CLI
# --------------------------------------------------------------------------------------------------


def command(out_dir, *flags) -> list[str]:
    """The study's command line, its study file written beside ``out_dir``."""
    (out_dir.parent / "faults.toml").write_text(STUDY)
    return [sys.executable, "-m", "studies.reproduce", "--study", str(out_dir.parent / "faults.toml"),
            "--scale", "tiny", "--seeds", "0", "--out_dir", str(out_dir), *flags]


def environment() -> dict:
    """No RAY_ADDRESS: every driver starts a local Ray of its own."""
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("RAY_ADDRESS", None)
    return env


class Driver:
    """A running ``studies.reproduce --executor ray``; ``poll`` records every Ray worker seen under it
    with the tasks it ran."""

    def __init__(self, proc: subprocess.Popen, output: str):
        self.proc, self.output = proc, output
        self.seen: dict[int, set[str]] = {}

    def poll(self) -> dict[int, str]:
        """The driver's workers now: pid -> task name."""
        parents = _parents()
        raylets = {pid for pid, parent in parents.items() if parent == self.proc.pid}
        now = {}
        for pid, parent in parents.items():
            title = _title(pid) if parent in raylets else ""
            if title.startswith("ray::"):
                now[pid] = title[len("ray::"):]
                self.seen.setdefault(pid, set()).add(now[pid])
        return now

    def ran(self, task: str) -> set[int]:
        """The workers seen running ``task``: one per attempt, as each task has a fresh worker."""
        return {pid for pid, tasks in self.seen.items() if task in tasks}

    def until(self, what: str, found):
        """Polls until ``found(workers now)`` is true and returns it; fails if the driver ends first."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            result = found(self.poll())
            if result:
                return result
            assert self.proc.poll() is None, f"the study ended ({self.proc.returncode}) before {what}:\n{self.tail()}"
            time.sleep(0.2)
        raise AssertionError(f"no {what} in {TIMEOUT_S} s:\n{self.tail()}")

    def wait(self) -> int:
        """The exit code, polling the workers meanwhile."""
        self.until("its end", lambda now: self.proc.poll() is not None)
        return self.proc.returncode

    def text(self) -> str:
        with open(self.output) as f:
            return f.read()

    def tail(self) -> str:
        return self.text()[-3000:]


@contextlib.contextmanager
def study(out_dir, max_parallel: int):
    """The study on Ray, as a Driver; on leaving, nothing of it stays: the driver's session (its
    Ray's head processes and agents) and every worker seen (each has a process group of its own)
    are killed if still there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, output = tempfile.mkstemp(prefix="driver.", suffix=".txt", dir=out_dir.parent)
    with os.fdopen(fd, "w") as f:
        proc = subprocess.Popen(command(out_dir, "--executor", "ray", "--max_parallel", str(max_parallel)),
                                cwd=ROOT, env=environment(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    driver = Driver(proc, output)
    try:
        yield driver
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in driver.seen:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# What a study leaves
# --------------------------------------------------------------------------------------------------


def text(path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def attempts(out_dir, name: str) -> int:
    """How often the job started: run_job appends the header "== ID (time): options" to its log."""
    return text(out_dir / "logs" / f"{name}.log").count(f"== {name.replace('__', '/')} (")


def started_training(log) -> bool:
    """cce_tf.train prints "training ..." into the job's log just before its first step."""
    return "\ntraining " in text(log)


def markers(out_dir) -> dict[str, tuple[int, bytes]]:
    """Every job marker -> (mtime in ns, bytes). The jobs' lock files beside them are left out: a
    killed job's stays, naming its dead holder, and the next invocation takes it over."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out_dir / "jobs").glob("*.json")}


def assert_same_results(out_dir, undisturbed) -> None:
    """The same results.jsonl, trained weights (SHA-256 in the training markers) and per-sample
    robust flags of every run, the canary's included."""
    def rows(d):
        with open(d / "results.jsonl") as f:
            return [json.loads(line) for line in f]

    def weights(d):
        return {name: json.loads((d / "jobs" / f"{name}.json").read_text())["weights_sha256"] for name in TRAIN}

    assert rows(out_dir) == rows(undisturbed)
    assert weights(out_dir) == weights(undisturbed)
    for run in sorted(os.listdir(undisturbed / "runs")):
        got, want = (store.read_masks(str(d / "runs" / run)) for d in (out_dir, undisturbed))
        assert got.keys() == want.keys() and want
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The study's output folder after a run that nothing disturbed, on the local executor (no Ray
    start, no shard tasks: the cheaper one); one job per core keeps every job at one thread, as
    on Ray, where training is bit-exact; so comparing a Ray study with it also shows that the two
    executors agree."""
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    proc = subprocess.run(command(out, "--max_parallel", str(os.cpu_count())), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# --------------------------------------------------------------------------------------------------
# The faults
# --------------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_training_and_one_mid_shard_are_retried_to_the_same_results(undisturbed, tmp_path):
    out = tmp_path / "out"
    log = out / "logs" / f"{TRAIN[0]}.log"
    with study(out, max_parallel=2) as driver:
        driver.until("training", lambda now: started_training(log))
        trainer = driver.until("the trainer", lambda now: [p for p in now if _opens(p, os.path.realpath(log))])
        os.kill(trainer[0], signal.SIGKILL)
        # A shard's task imports TensorFlow first thing (studies.ray_executor._enter): once it has,
        # it is at its work.
        shard = driver.until("a shard at work", lambda now: [p for p, task in now.items()
                                                             if task == "_shard_task" and _has_tensorflow(p)])
        os.kill(shard[0], signal.SIGKILL)
        assert driver.wait() == 0, driver.tail()
    # Each killed task ran again in a fresh worker: the training job from its start (a second
    # header in its log), the shard as a fifth shard worker.
    assert attempts(out, TRAIN[0]) == 2
    assert trainer[0] in driver.ran("_job_task") and len(driver.ran("_job_task")) == len(TRAIN) + 1
    assert shard[0] in driver.ran("_shard_task") and len(driver.ran("_shard_task")) == SHARDS + 1
    assert_same_results(out, undisturbed)
    # Ray left what the local executor leaves: a marker, a lock and a log per job, no probe file.
    for folder in ("jobs", "logs"):
        assert sorted(os.listdir(out / folder)) == sorted(os.listdir(undisturbed / folder))
    assert not [f for f in os.listdir(out) if f.startswith(".ray_probe")]


def test_a_driver_killed_mid_study_is_run_again_and_redoes_only_the_jobs_in_flight(undisturbed, tmp_path):
    out = tmp_path / "out"
    # One job at a time: the first training is done, the second in flight when the driver dies.
    with study(out, max_parallel=1) as driver:
        driver.until("the second training", lambda now: started_training(out / "logs" / f"{TRAIN[1]}.log"))
        driver.proc.kill()
        driver.proc.wait()
        # Its local Ray dies with it (raylet and GCS share its fate); the workers notice and exit.
        # Ray's two agents outlive it by about a minute (waiting for the dead GCS): study() ends them.
        lost = [pid for pid, tasks in driver.seen.items() if _alive(pid) and not tasks & AGENTS]
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in lost) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in lost if _alive(pid)], "workers of the killed driver go on"
    done = markers(out)
    assert sorted(done) == [f"{TRAIN[0]}.json"]          # the lost job left no marker

    with study(out, max_parallel=1) as again:
        assert again.wait() == 0, again.tail()
    plan = again.text()
    assert re.search(r"train +2 jobs: 1 done, 1 to do", plan) and re.search(r"attack_suite +2 jobs: 0 done, 2 to do", plan)
    after = markers(out)
    assert len(after) == 4 and {name: after[name] for name in done} == done   # the finished job untouched
    assert attempts(out, TRAIN[0]) == 1 and attempts(out, TRAIN[1]) == 2     # the lost attempt, the rerun
    assert_same_results(out, undisturbed)
