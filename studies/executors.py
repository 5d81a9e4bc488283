"""Where jobs run: here (in this process, or in --max_parallel worker processes) or on a Ray cluster.

Usage::

    from studies import executors
    outcomes = executors.execute(todo, out_dir, executor="local", max_parallel=2, eta=estimate_fn)

One scheduler for every executor: a job starts once the jobs it needs are done; a failed job is
reported with its log and the others go on (the jobs that need it are reported as waiting for it);
Ctrl-C stops the scheduler, and only the jobs in flight are lost (their markers are never written).
A progress line shows the counts and an ETA from the cost of what is left.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

from studies import jobs as jobs_mod
from studies.plan import Job


class _InProcess:
    """Runs each job at submit time, in this process (max_parallel = 1)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def submit(self, job: Job) -> cf.Future:
        f: cf.Future = cf.Future()
        f.set_result(jobs_mod.run_job(job, self.out_dir))
        return f

    def shutdown(self) -> None:
        pass


def gpu_count() -> int:
    """GPUs this machine shows (CUDA_VISIBLE_DEVICES, else nvidia-smi), without starting TensorFlow
    in the scheduler."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def _worker(job: Job, out_dir: str, threads: int, conn, gpu: Optional[str] = None) -> None:
    if gpu is not None:  # one job per GPU: this worker sees only its own
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    # TensorFlow's C++ start-up lines go to the job's log, not over the progress line.
    path = jobs_mod.log_path(job, out_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    jobs_mod.set_threads(threads)
    conn.send(jobs_mod.run_job(job, out_dir, fd_level=True))
    conn.close()


class _Processes:
    """A fresh spawned process per job (TensorFlow state never leaks between jobs, and a worker that
    dies fails only its own job), each with cores / max_parallel threads and, on a machine with
    GPUs, one GPU of its own; the scheduler keeps at most ``max_parallel`` running."""

    def __init__(self, out_dir: str, max_parallel: int):
        self.out_dir = out_dir
        self.threads = max(1, (os.cpu_count() or 1) // max_parallel)
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list = []
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        n_gpus = gpu_count()
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(n_gpus)]
        self.free_gpus = ids[:n_gpus]
        self.lock = threading.Lock()

    def submit(self, job: Job) -> cf.Future:
        future: cf.Future = cf.Future()
        recv, send = self.ctx.Pipe(duplex=False)
        with self.lock:
            gpu = self.free_gpus.pop(0) if self.free_gpus else None
        proc = self.ctx.Process(target=_worker, args=(job, self.out_dir, self.threads, send, gpu), daemon=True)
        proc.start()
        send.close()
        self.procs.append(proc)

        def wait() -> None:
            try:
                future.set_result(recv.recv())
            except EOFError:  # the worker died without a word (killed, out of memory, a crash)
                proc.join()
                future.set_exception(RuntimeError(f"worker process exited with code {proc.exitcode}"))
            proc.join()
            if gpu is not None:
                with self.lock:
                    self.free_gpus.append(gpu)

        threading.Thread(target=wait, daemon=True).start()
        return future

    def shutdown(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()


def make_pool(executor: str, out_dir: str, max_parallel: int, ray_address: Optional[str] = None):
    if executor == "ray":
        from studies import ray_executor
        return ray_executor.RayPool(out_dir, ray_address)
    return _InProcess(out_dir) if max_parallel <= 1 else _Processes(out_dir, max_parallel)


def execute(todo: list[Job], out_dir: str, pool, max_parallel: int,
            eta: Callable[[list[Job]], float], done_before: set[str] = frozenset(),
            stream=None) -> list[dict]:
    """Run ``todo`` (dependencies first) on ``pool``; returns one outcome per job that ran or was
    held back (ok False, error "needs ...")."""
    stream = stream or sys.stderr  # looked up now: a test may have swapped sys.stderr since import
    pending = list(todo)
    done = set(done_before)
    failed: set[str] = set()
    running: dict[cf.Future, Job] = {}
    outcomes: list[dict] = []
    t0 = time.time()
    total = len(todo)

    started: dict[cf.Future, float] = {}

    def progress() -> None:
        left = pending + list(running.values())
        spent = sum(time.time() - t for t in started.values()) / max(1, max_parallel)  # of the running ones
        n_done = sum(o["ok"] for o in outcomes)
        line = (f"\r[{n_done}/{total} jobs done, {len(failed)} failed, {len(running)} running] "
                f"{_hms(time.time() - t0)} elapsed, ETA {_hms(eta(left) - spent)}   ")
        stream.write(line)
        stream.flush()

    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= max(1, max_parallel):
                    break
                blocked = [n for n in job.needs if n in failed]
                if blocked:
                    pending.remove(job)
                    failed.add(job.id)
                    outcomes.append({"id": job.id, "ok": False, "seconds": 0.0, "log": None,
                                     "error": f"needs {blocked[0]}, which failed"})
                    continue
                if all(n in done for n in job.needs):
                    pending.remove(job)
                    future = pool.submit(job)
                    running[future], started[future] = job, time.time()
            progress()
            if not running:
                if pending:  # what is left needs jobs that are not in this plan: a bug
                    raise RuntimeError(f"{pending[0].id} needs {pending[0].needs}, which never ran")
                break
            finished, _ = cf.wait(list(running), timeout=5, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                job = running.pop(f)
                started.pop(f, None)
                try:
                    outcome = f.result()
                except Exception as e:  # noqa: BLE001 - a lost worker or task: retried next time
                    outcome = {"id": job.id, "ok": False, "seconds": 0.0,
                               "log": jobs_mod.log_path(job, out_dir), "error": f"{type(e).__name__}: {e}"}
                outcomes.append(outcome)
                (done if outcome["ok"] else failed).add(job.id)
                if not outcome["ok"]:
                    stream.write(f"\nFAILED {job.id}: {outcome['error']} (log: {outcome['log']})\n")
        progress()
        stream.write("\n")
    finally:
        pool.shutdown()
    return outcomes


def _hms(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing timed yet
        return "unknown"
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
