"""The Ray executor of ``python -m studies.reproduce --executor ray [--ray_address ADDR]``.

Usage::

    from studies import executors
    pool = executors.make_pool("ray", out_dir, max_parallel=8, ray_address="auto")   # a RayPool
    executors.execute(todo, out_dir, pool, 8, eta=...)

    from studies.ray_executor import RayPool
    pool = RayPool("results/table4", address=None)   # None: a local instance on every core
    outcome = pool.submit(job).result()              # the outcome dict of studies.jobs.run_job
    pool.shutdown()

One Ray task per job, each calling ``studies.jobs.run_job`` (so logs, markers and results are those
of the local executor), except attack-suite jobs, which are split: every attack's samples are cut
into shards on batch boundaries (``eval.analyses.attack_suite.run.shard_mask``; each batch is seeded by its first
sample index, so the merged flags equal those of one process), one task per shard, then one merge
task (started by Ray once every shard is done: the shards' ObjectRefs are its arguments) that hands
the merged flags to ``run_job(..., merged=...)``.

The cluster shares the code and the data through the same install on every node: tasks get the
repo root on PYTHONPATH and the driver's CCE_* variables, and for a relative --out_dir they run in
the driver's working directory (which then must exist on every node). --out_dir must be storage
every node sees; ``RayPool`` checks that at start with a probe file per node (nodes that join later
are not checked). Its job locks (studies.jobs) keep a second invocation from running a job twice
only where that storage's flock reaches every node (Linux NFS clients map it to NFS byte-range locks).
Each task needs one GPU where the cluster has GPUs, else one CPU (and TensorFlow runs it on one
thread); every task runs in a fresh worker process (``max_calls=1``: TensorFlow state and GPU memory
never leak between jobs), and Ray retries it up to twice if its worker or node dies.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import time
import traceback
import uuid
from typing import Any, Callable, Optional

from cce_tf.cli_flags import UsageError
from eval.analyses import ANALYSES
from studies import jobs as jobs_mod
from studies.plan import Job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_TIMEOUT_S = 120.0      # a node that cannot run a zero-CPU task in this time is not usable
RETRIES = 2                  # Ray re-runs a task whose worker or node died (not one that raised)

# --------------------------------------------------------------------------------------------------
# What runs in the Ray workers (plain functions; ``_remote`` wraps them, so importing this module
# does not need Ray)
# --------------------------------------------------------------------------------------------------


def _enter(cwd: Optional[str]) -> None:
    """Start of every task: the driver's working directory when the job's paths are relative to
    it, and on a CPU task one TensorFlow thread (the task reserved one CPU)."""
    import ray

    if cwd:
        os.chdir(cwd)
    if not ray.get_gpu_ids():
        jobs_mod.set_threads(1)


def _job_task(job: Job, out_dir: str, cwd: Optional[str]) -> dict:
    _enter(cwd)
    return jobs_mod.run_job(job, out_dir, fd_level=True)


def _shard_task(job: Job, cwd: Optional[str], name: str, start: int, stop: int) -> dict:
    """Attack ``name`` on samples [start, stop): {"name", "start", "stop", "seconds"} with "mask"
    (the robust flags) or "error" (the merge task then lets evaluate redo the attack, which fails
    or skips it exactly as the local executor would, in the job's log)."""
    _enter(cwd)
    t0 = time.time()
    out: dict[str, Any] = {"name": name, "start": start, "stop": stop}
    try:
        out["mask"] = ANALYSES[job.kind].shard(job.run_dirs[0], jobs_mod.suite_options(job), name, start, stop)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    out["seconds"] = time.time() - t0
    return out


def _merge_task(job: Job, out_dir: str, cwd: Optional[str], *shards: dict) -> dict:
    """Merge the shards by sample index and run the job with them (results, masks, marker, log)."""
    import numpy as np

    _enter(cwd)
    by_name: dict[str, list[dict]] = {}
    for s in shards:
        by_name.setdefault(s["name"], []).append(s)
    merged, notes = {}, []
    for name, parts in by_name.items():
        parts.sort(key=lambda s: s["start"])
        failed = [s for s in parts if "error" in s]
        if failed:
            notes.append(f"shard [{failed[0]['start']}, {failed[0]['stop']}) of {name} failed: "
                         f"{failed[0]['error']}; {name} is run again here, whole")
            continue
        merged[name] = (np.concatenate([s["mask"] for s in parts]), round(sum(s["seconds"] for s in parts), 3))
    if notes:
        log = jobs_mod.log_path(job, out_dir)
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "a") as f:
            f.write("".join(f"ray_executor: {n}\n" for n in notes))
    return jobs_mod.run_job(job, out_dir, fd_level=True, merged=merged)


def _read_text(path: str) -> Optional[str]:
    """The file's text, or None if it cannot be read (the probe's reader, on either side)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _probe_task(cwd: Optional[str], out_dir: str, driver_file: str, token: str, probe_id: str) -> dict:
    """On one node: read the driver's probe file, write one back. Returns {"node", "read", "wrote"
    (the path, or None), "error"}."""
    import ray

    node = ray.util.get_node_ip_address()
    out: dict[str, Any] = {"node": node, "read": None, "wrote": None, "error": None}
    try:
        if cwd:
            os.chdir(cwd)
    except OSError as e:
        out["error"] = (f"lacks the driver's working directory {cwd}, which the relative --out_dir "
                        f"needs ({e.strerror}); give an absolute path")
        return out
    out["read"] = _read_text(os.path.join(out_dir, driver_file))
    path = os.path.join(out_dir, f".ray_probe_{probe_id}_{ray.get_runtime_context().get_node_id()}")
    try:
        with open(path, "w") as f:
            f.write(token + node)
        out["wrote"] = path
    except OSError as e:
        out["error"] = f"cannot write {os.path.abspath(path)} ({e.strerror})"
    return out


# --------------------------------------------------------------------------------------------------
# The driver side
# --------------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install -r requirements-cluster.txt") from None
    return ray


_REMOTES: dict[Callable, Any] = {}


def _remote(fn: Callable):
    """``ray.remote(fn)``, made once: a fresh worker per task, retried when the worker dies."""
    if fn not in _REMOTES:
        _REMOTES[fn] = _import_ray().remote(max_calls=1, max_retries=RETRIES)(fn)
    return _REMOTES[fn]


def _runtime_env() -> dict:
    """Every task's environment: this repo importable, and the driver's CCE_* settings (data
    folders, CCE_OFFLINE); CCE_THREADS is each task's own."""
    env = {k: v for k, v in os.environ.items() if k.startswith("CCE_") and k != "CCE_THREADS"}
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {**env, "PYTHONPATH": path}}


def check_visible(out_dir: str, cwd: Optional[str] = None,
                  run_probes: Optional[Callable[..., list[dict]]] = None) -> None:
    """Raise UsageError unless every alive node reads what the driver wrote under ``out_dir`` and
    the driver reads what each node wrote there.

    Usage: ``check_visible("/shared/results/table4")`` once Ray is initialised.

    :param cwd: where the tasks resolve a relative ``out_dir`` (RayPool: the driver's directory).
    :param run_probes: ``f(cwd, out_dir, driver_file, token, probe_id) -> [_probe_task's answer per
        node]``; default: one zero-CPU Ray task pinned to each alive node.
    """
    if cwd is None and not os.path.isabs(out_dir):
        cwd = os.getcwd()
    probe_id = uuid.uuid4().hex[:12]
    token = uuid.uuid4().hex
    driver_file = f".ray_probe_{probe_id}_driver"
    driver_path = os.path.join(out_dir, driver_file)
    answers: list[dict] = []
    try:
        try:
            with open(driver_path, "w") as f:
                f.write(token)
        except OSError as e:
            raise UsageError(f"--out_dir {out_dir} cannot be written ({e.strerror})") from None
        answers = (run_probes or _ray_probes)(cwd, out_dir, driver_file, token, probe_id)
        for a in answers:
            if a["error"]:
                reason = a["error"]
            elif a["read"] != token:
                reason = f"cannot read {os.path.abspath(driver_path)}, which the driver wrote"
            elif _read_text(a["wrote"]) != token + a["node"]:
                reason = f"wrote {os.path.abspath(a['wrote'])}, which the driver cannot read"
            else:
                continue
            raise UsageError(f"--out_dir {out_dir} is not visible from the Ray workers (a task on node "
                             f"{a['node']} {reason}): use storage every node mounts")
    finally:
        for path in [driver_path] + [a["wrote"] for a in answers if a.get("wrote")]:
            try:
                os.remove(path)
            except OSError:
                pass


def _ray_probes(cwd: Optional[str], out_dir: str, driver_file: str, token: str, probe_id: str) -> list[dict]:
    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = _remote(_probe_task)
    refs = [probe.options(num_cpus=0, runtime_env=_runtime_env(),
                          scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                          ).remote(cwd, out_dir, driver_file, token, probe_id)
            for n in ray.nodes() if n.get("Alive")]
    try:
        return ray.get(refs, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise UsageError(f"--out_dir {out_dir} could not be checked: a Ray node did not run the probe "
                         f"task within {PROBE_TIMEOUT_S:.0f} s") from None


def plan_shards(job: Job, slots: int, shard_size: Optional[int] = None) -> list[tuple[str, int, int]]:
    """(attack, start, stop) of every shard of an attack-suite job, on the driver and without
    loading the model: eval.analyses.attack_suite.plan.plan_shards on the job's run with its options (attacks whose
    stored result the suite will reuse get no shard).

    :raises UsageError: the run folder is not a readable run (the job then runs whole, and fails
        in its log as it would locally).
    """
    return ANALYSES[job.kind].plan_shards(job.run_dirs[0], jobs_mod.suite_options(job), slots, shard_size)


class RayPool:
    """Runs jobs as Ray tasks; ``submit`` returns a Future of ``studies.jobs.run_job``'s outcome.

    :param out_dir: the study's output folder (checked to be visible from every node).
    :param address: a Ray cluster's address (``ray.init(address=...)``); None: connect to the Ray
        already started in this process, else start a local instance on every core.
    :param shard_size: samples per attack-suite shard (default: about 2 shards per CPU or GPU).
    :raises UsageError: Ray is missing, or out_dir is not visible from every node.
    """

    def __init__(self, out_dir: str, address: Optional[str] = None, shard_size: Optional[int] = None):
        ray = _import_ray()
        # The tasks work in the driver's directory only when the job's paths are relative to it.
        self.out_dir, self.shard_size = out_dir, shard_size
        self.cwd = None if os.path.isabs(out_dir) else os.getcwd()
        self._owns_ray = not ray.is_initialized()  # a Ray its caller started stays up after shutdown
        kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                  runtime_env=_runtime_env())
        if address:
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise UsageError(f"--ray_address {address}: cannot connect to a Ray cluster there ({e})") from None
        else:   # "local": a new instance even where RAY_ADDRESS names a cluster (as under ray job submit)
            ray.init(address="local", num_cpus=os.cpu_count(), **kw)
        os.makedirs(out_dir, exist_ok=True)
        try:
            check_visible(out_dir, self.cwd)
        except BaseException:
            self.shutdown()
            raise
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        self.slots = gpus or int(res.get("CPU", 1))
        # A GPU task reserves one CPU too (Ray's default) and keeps TensorFlow's own thread count.
        self.resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}

    def _task(self, fn: Callable):
        return _remote(fn).options(runtime_env=_runtime_env(), **self.resources)

    def submit(self, job: Job) -> cf.Future:
        shards = []
        if hasattr(ANALYSES.get(job.kind), "plan_shards") and len(job.run_dirs) == 1:
            try:
                shards = plan_shards(job, self.slots, self.shard_size)
            except Exception:  # noqa: BLE001 - the whole job in one task says what is wrong, in its log
                shards = []
        if not shards:
            return self._task(_job_task).remote(job, self.out_dir, self.cwd).future()
        refs = [self._task(_shard_task).remote(job, self.cwd, *shard) for shard in shards]
        # Ray starts the merge once every shard is done, with their results as its arguments.
        return self._task(_merge_task).remote(job, self.out_dir, self.cwd, *refs).future()

    def shutdown(self) -> None:
        """Disconnect; a local instance this pool started stops, with its tasks (only the jobs in
        flight are lost: their markers are never written)."""
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
