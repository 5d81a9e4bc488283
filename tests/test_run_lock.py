"""Two processes at once on one folder (cce_tf.run_lock): the lock itself (refuse, wait, the holder
named, a killed holder), two evaluations of one run (attack suite, detection), two trainings into
one --out_dir, and two invocations of a study reaching the same job. The races are made certain, not left to timing:
the test holds the lock while the processes start, so both have read the files before either
writes."""
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cce_tf import run_lock
from conftest import ROOT, copy_run

ENV = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")


def python(out, *argv):
    """``python ARGV...`` in a child process, its stdout and stderr into the file ``out``."""
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=ENV, stdout=open(out, "w"),
                            stderr=subprocess.STDOUT)


def wait_for(text, path, procs, timeout=300):
    """Until ``text`` is in the file ``path``; fails if any of ``procs`` ends first."""
    deadline = time.monotonic() + timeout
    while not (os.path.exists(path) and text in open(path).read()):
        assert all(p.poll() is None for p in procs), open(path).read()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------------


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path):
    folder = tmp_path / "runs" / "run"
    path = run_lock.lock_path(str(folder))
    with run_lock.hold(path, wait=False):
        with pytest.raises(run_lock.Busy) as refused:
            with run_lock.hold(path, wait=False):
                pass
        holder = open(path).read()
    assert holder.startswith(f"pid {os.getpid()} on ") and holder.endswith(shlex.join(sys.argv))
    assert str(refused.value) == f"{folder} is in use by {holder}" and refused.value.holder == holder
    assert not (tmp_path / "runs").exists()  # made for the lock and left empty: removed with it


def test_a_waiting_holder_gets_the_lock_once_it_is_released(tmp_path, capsys):
    path = run_lock.lock_path(str(tmp_path))
    order = []

    def second():
        with run_lock.hold(path, wait=True):
            order.append("second")

    with run_lock.hold(path, wait=False):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()   # blocked: it cannot get past the lock while it is held
        order.append("first released")
    waiter.join(30)
    assert order == ["first released", "second"]
    assert f"waiting for pid {os.getpid()} on " in capsys.readouterr().err
    assert not os.path.exists(path)


def test_a_waiter_on_the_file_its_holder_removed_takes_the_new_one(tmp_path):
    """The holder removes the file as it releases it; a process that opened the file before then
    must not count as holding the lock of the file at that path now."""
    path = run_lock.lock_path(str(tmp_path))
    held, done = threading.Event(), threading.Event()

    def waiter():
        with run_lock.hold(path, wait=True):
            held.set()
            done.wait(30)

    with run_lock.hold(path, wait=False):
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)   # the waiter has opened the file this block holds
    assert held.wait(30)
    with pytest.raises(run_lock.Busy):
        with run_lock.hold(path, wait=False):
            pass
    done.set()
    t.join(30)


def test_a_killed_holder_does_not_block_the_next_one(tmp_path):
    path = run_lock.lock_path(str(tmp_path / "run"))
    log = tmp_path / "child.txt"
    child = python(log, "-c", "import sys, time\nfrom cce_tf import run_lock\n"
                   "with run_lock.hold(sys.argv[1], wait=False):\n    print('held', flush=True)\n"
                   "    time.sleep(600)", path)
    try:
        wait_for("held", log, [child], timeout=60)
        with pytest.raises(run_lock.Busy, match=f"pid {child.pid} on "):
            with run_lock.hold(path, wait=False):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert f"pid {child.pid} on " in open(path).read()   # its file stays, naming it ...
    t0 = time.monotonic()
    with run_lock.hold(path, wait=False):              # ... but its lock died with it
        assert open(path).read().startswith(f"pid {os.getpid()} on ")
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------------------------------
# Two evaluations of one run: the attack suite, detection
# --------------------------------------------------------------------------------------------------


def evaluated_together_and_alone(tiny_run, tmp_path, module, argvs):
    """Two copies of the tiny run: one evaluated by ``python -m MODULE ARGV`` for every argv of
    ``argvs`` at the same time, the other by the same commands one after the other (in this
    process). The first copy's results folder is locked until every process has read its files and
    waits to write: without the merge under the lock, the last to write would drop the others'
    results."""
    import importlib

    together, alone = copy_run(tiny_run, tmp_path / "together"), copy_run(tiny_run, tmp_path / "alone")
    logs = [tmp_path / f"{i}.txt" for i in range(len(argvs))]
    with run_lock.hold(run_lock.lock_path(os.path.join(together, "eval")), wait=False):
        procs = [python(log, "-m", module, "--run_dir", together, *argv) for log, argv in zip(logs, argvs)]
        for log in logs:
            wait_for("waiting for", log, procs)
    for p, log in zip(procs, logs):
        assert p.wait(600) == 0, open(log).read()[-3000:]
    for argv in argvs:
        assert importlib.import_module(module).cli([module, "--run_dir", alone, *argv]) == 0
    assert not os.path.exists(run_lock.lock_path(os.path.join(together, "eval")))
    return together, alone


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


SUITE = ("--n_samples", "32", "--nb_iter", "3", "--batch_size", "16", "--nosanity", "--verbose", "0")


def comparable(results):
    """A results file but for what differs between two equal evaluations: the folder, the seconds,
    the order the attacks finished in."""
    out = dict(results, attacks={n: {k: v for k, v in e.items() if k != "seconds"}
                                 for n, e in results["attacks"].items()})
    if "any_attack" in out:
        out["any_attack"] = dict(out["any_attack"], attacks=sorted(out["any_attack"]["attacks"]))
    for key in ("run_dir", "seconds"):
        out.pop(key, None)
    return out


def test_two_attack_suites_on_one_run_keep_both_attacks(tiny_run, tmp_path):
    from eval.analyses.attack_suite import store

    together, alone = evaluated_together_and_alone(tiny_run, tmp_path, "eval.attack_suite",
                                                   [("--attacks", a, *SUITE) for a in ("fgsm", "pgd")])
    got, expected = (store.read_results(r) for r in (together, alone))
    assert set(got["attacks"]) == set(got["any_attack"]["attacks"]) == {"fgsm", "pgd"}
    assert comparable(got) == comparable(expected)
    assert {"fgsm", "pgd"} <= store.read_masks(together).keys()
    assert_same_arrays(store.read_masks(together), store.read_masks(alone))


def test_two_detections_on_one_run_keep_both_attacks(tiny_run, tmp_path):
    from eval.analyses import detection
    from eval.output import read_json
    from eval.target import eval_path

    flags = ("--nosweep", "--n_samples", "32", "--nb_iter", "3", "--batch_size", "16", "--verbose", "0")
    together, alone = evaluated_together_and_alone(tiny_run, tmp_path, "eval.analyses.detection",
                                                   [("--attacks", a, *flags) for a in ("bim", "mim")])
    got, expected = (read_json(eval_path(r, detection.JSON_NAME)) for r in (together, alone))
    assert set(got["attacks"]) == {"bim", "mim"}
    assert comparable(got) == comparable(expected)
    assert_same_arrays(detection.load_entropies(together), detection.load_entropies(alone))


# --------------------------------------------------------------------------------------------------
# Two trainings into one --out_dir
# --------------------------------------------------------------------------------------------------

TRAIN = ("--method", "adv", "--members", "1", "--nb_iter", "1", "--train_subset", "256", "--test_subset", "64",
         "--batch_size", "32", "--epochs", "1", "--deterministic", "--verbose", "0")


def test_a_second_training_into_a_run_being_trained_exits_2_at_once(tmp_path):
    from cce_tf.fingerprint import weights_fingerprint

    run, undisturbed = tmp_path / "run", tmp_path / "undisturbed"
    first = python(tmp_path / "first.txt", "-m", "cce_tf.train", "--out_dir", run, *TRAIN)
    reference = python(tmp_path / "reference.txt", "-m", "cce_tf.train", "--out_dir", undisturbed, *TRAIN)
    try:
        wait_for("pid", run_lock.lock_path(str(run)), [first])   # it holds the folder
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "cce_tf.train", "--out_dir", str(run), *TRAIN], cwd=ROOT,
                                env=ENV, capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - t0
        assert first.poll() is None          # refused while the first trains
    finally:
        codes = first.wait(600), reference.wait(600)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    # The holder: its pid, host, start time and command line.
    assert second.stderr.startswith(f"error: --out_dir {run} is being trained by pid {first.pid} on ")
    assert f"cce_tf/train.py --out_dir {run} --method adv" in second.stderr
    assert seconds < 30                      # before TensorFlow starts
    assert codes == (0, 0), open(tmp_path / "first.txt").read()[-3000:]
    assert weights_fingerprint(str(run)) == weights_fingerprint(str(undisturbed))
    assert not os.path.exists(run_lock.lock_path(str(run)))


# --------------------------------------------------------------------------------------------------
# Two invocations of a study reaching the same job
# --------------------------------------------------------------------------------------------------

JOB_CODE = """import json, sys
from studies import jobs, plan
job = plan.Job(**json.loads(sys.argv[1]))
print("outcome " + json.dumps(jobs.run_job(job, sys.argv[2])), flush=True)
"""


def test_two_invocations_of_a_study_run_a_job_once(tiny_run, tmp_path):
    from studies import jobs, plan

    run, out = copy_run(tiny_run, tmp_path / "run"), tmp_path / "out"
    job = plan.Job(id=f"attack_suite/{os.path.basename(run)}", kind="attack_suite", run_dirs=(run,),
                   options=dict(attacks=["fgsm"], n_samples=16, seed=0, nb_iter=None, mul_nb_iter=None,
                                sanity=False))
    spec = json.dumps(job.to_json())
    texts = [tmp_path / f"invocation{i}.txt" for i in (1, 2)]
    log = jobs.log_path(job, str(out))
    # Held here until both invocations wait for the job: then exactly one of them must run it.
    with run_lock.hold(jobs.lock_path(job, str(out)), wait=False):
        procs = [python(t, "-c", JOB_CODE, spec, out) for t in texts]
        deadline = time.monotonic() + 300
        while not (os.path.exists(log) and open(log).read().count("waiting for") == 2):
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            time.sleep(0.05)
    for p, t in zip(procs, texts):
        assert p.wait(600) == 0, open(t).read()[-3000:]
    outcomes = [json.loads(open(t).read().split("outcome ", 1)[1]) for t in texts]
    assert all(o["ok"] for o in outcomes), outcomes
    text = open(log).read()
    assert text.count(f"== {job.id} (") == 1 and text.count(f"== {job.id}: done by another invocation") == 1
    assert jobs.is_done(job, str(out))
    assert sorted(os.listdir(out / "jobs")) == [os.path.basename(jobs.marker_path(job, str(out)))]
