"""Running one job, and knowing whether it is done: the same code in this process, in a worker
process and in a Ray task.

Usage::

    from studies import jobs
    outcome = jobs.run_job(job, out_dir)      # {"id", "ok", "seconds", "log", "error"}
    jobs.is_done(job, out_dir)                 # its marker matches the options and the weights now

Each job calls a library function with explicit arguments: cce_tf.train.train, or the ``evaluate``
of the analysis its kind names (eval.analyses.ANALYSES) with its Options (and the figures its
options name, drawn from the results). Its output goes to OUT_DIR/logs/ID.log. On success a marker
OUT_DIR/jobs/ID.json records the options, the weights fingerprints of its runs and the seconds it
took (the cost model of studies.costs learns from them). A job that fails leaves no marker, so the
next invocation retries it. A job runs under its lock OUT_DIR/jobs/ID.lock, so two invocations of a
study on one out_dir at the same time never run the same job twice: the second waits for the job,
then skips it.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Optional

from cce_tf import atomic, run_lock
from cce_tf.run_files import LOCK_FILE
from studies.plan import TRAIN, Job


def _job_file(job: Job, out_dir: str, folder: str, suffix: str) -> str:
    return os.path.join(out_dir, folder, job.id.replace("/", "__") + suffix)


def marker_path(job: Job, out_dir: str) -> str:
    return _job_file(job, out_dir, "jobs", ".json")


def log_path(job: Job, out_dir: str) -> str:
    return _job_file(job, out_dir, "logs", ".log")


def lock_path(job: Job, out_dir: str) -> str:
    """OUT_DIR/jobs/ID.lock, held while the job runs (cce_tf.run_lock)."""
    return _job_file(job, out_dir, "jobs", LOCK_FILE)


def _fingerprints(job: Job) -> Optional[list[str]]:
    from cce_tf.fingerprint import weights_fingerprint

    try:
        return [weights_fingerprint(d) for d in job.run_dirs]
    except OSError:
        return None


def read_marker(job: Job, out_dir: str) -> Optional[dict]:
    try:
        with open(marker_path(job, out_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_done(job: Job, out_dir: str) -> bool:
    """Finished with these options on the weights its runs hold now."""
    from eval import reuse

    m = read_marker(job, out_dir)
    if not m or m.get("options") != reuse.canonical(job.options):
        return False
    fps = _fingerprints(job)
    return fps is not None and m.get("weights_sha256") == fps


def suite_options(job: Job):
    """The Options of an analysis job (for the attack suite, eval.analyses.attack_suite.plan
    .SuiteOptions): its options, every one of them, as keyword arguments (the options a CLI
    invocation would give; the rest keep the CLI's defaults), so that the shards of
    studies.ray_executor attack exactly what the job records. ``figures`` are drawn after the job."""
    from eval.analyses import ANALYSES

    o = {k: v for k, v in job.options.items() if k != "figures"}
    return ANALYSES[job.kind].Options(**{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()})


def _run(job: Job, out_dir: str, merged: Optional[dict] = None) -> None:
    """The library call of one job: training, or the analysis its kind names (eval.analyses
    .ANALYSES), then the figures its options name; ``merged`` (the attack suite's shards): attack ->
    (flags merged from its shards, their seconds), see eval.analyses.attack_suite.evaluate."""
    import dataclasses

    from eval.analyses import ANALYSES

    if job.kind == TRAIN:
        from cce_tf.train import train
        from cce_tf.train_settings import TrainOptions
        train(TrainOptions(**job.options, out_dir=job.run_dirs[0], verbose=2))
        return
    if job.kind not in ANALYSES:
        raise ValueError(f"unknown job kind {job.kind!r}")
    analysis, options = ANALYSES[job.kind], suite_options(job)
    if analysis.SCOPE == "runs":   # across runs: written to OUT_DIR/ID (plan.runs_folder)
        analysis.evaluate(list(job.run_dirs), dataclasses.replace(options, out_dir=os.path.join(out_dir, job.id)))
    elif merged:
        analysis.evaluate(job.run_dirs[0], options, merged=merged)
    else:
        analysis.evaluate(job.run_dirs[0], options)
    for name in job.options.get("figures", []):   # figures/NAME.py's make, from the job's results
        import importlib
        make = importlib.import_module(f"figures.{name}").make
        print("wrote " + ", ".join(make(job.run_dirs[0], n_samples=options.n_samples, seed=options.seed,
                                        nb_iter=options.nb_iter, draw=options.draw)))


@contextlib.contextmanager
def _logging_to(path: str, fd_level: bool):
    """stdout and stderr into ``path``; with ``fd_level`` also the C++ logs of TensorFlow (a worker
    process owns its file descriptors; the main process keeps its terminal for the progress bar)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", buffering=1) as log:
        saved = None
        if fd_level:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = (os.dup(1), os.dup(2))
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield log
        finally:
            if saved:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])


def run_job(job: Job, out_dir: str, fd_level: bool = False, merged: Optional[dict] = None) -> dict:
    """Run ``job``, log to OUT_DIR/logs/, write its marker on success; never raises for a failing
    job (the outcome says why), so one failure does not stop the others. ``merged`` goes to
    eval.suite_run.evaluate (the Ray executor's merged shards; their seconds count in the
    marker's).

    The job runs under its lock (``lock_path``): where another invocation of the study on this
    out_dir is running it, this one waits for it, then finds it done and does not run it again."""
    from eval import reuse

    log = log_path(job, out_dir)
    with _logging_to(log, fd_level) as f, run_lock.hold(lock_path(job, out_dir), wait=True):
        if is_done(job, out_dir):
            print(f"== {job.id}: done by another invocation of the study", file=f)
            return {"id": job.id, "ok": True, "seconds": 0.0, "log": log, "error": None}
        t0 = time.time()  # after any wait for the lock: the marker's seconds are the job's
        print(f"== {job.id} ({time.strftime('%Y-%m-%d %H:%M:%S')}): {json.dumps(job.options)}", file=f)
        try:
            _run(job, out_dir, merged)
        except BaseException as e:  # noqa: BLE001 - SystemExit from a CLI-style check included
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc(file=f)
            return {"id": job.id, "ok": False, "seconds": time.time() - t0, "log": log,
                    "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        seconds = time.time() - t0 + sum(s for _, s in (merged or {}).values())
        # Written under the lock: an invocation waiting for it sees the job done.
        marker = {"id": job.id, "kind": job.kind, "options": reuse.canonical(job.options),
                  "weights_sha256": _fingerprints(job), "seconds": round(seconds, 3), "cost": job.cost,
                  "threads": threads()}
        atomic.write_json(marker_path(job, out_dir), marker)
    return {"id": job.id, "ok": True, "seconds": seconds, "log": log, "error": None}


def threads() -> int:
    """TensorFlow's intra-op threads in this process (what a job's timing was measured with)."""
    return int(os.environ.get("CCE_THREADS", os.cpu_count() or 1))


def set_threads(n: int) -> None:
    """Before TensorFlow starts in a worker: n threads for its ops, so parallel jobs share the
    cores instead of fighting over them."""
    os.environ["CCE_THREADS"] = str(n)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
