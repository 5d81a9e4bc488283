"""Seconds from cost: what a job will take, from the jobs this package has timed.

Usage::

    python -m studies.costs --from results/calibrate      # fit and write studies/timings.json

    from studies import costs
    model = costs.load(out_dir)                 # fitted on OUT_DIR's finished jobs, else timings.json
    model.seconds(job)                          # a + b × passes, per (job family, data set, arch)

A job's cost is counted in member forward-backward passes on one image (studies.plan). Every
finished job leaves its measured seconds in its marker (studies.jobs); a least-squares line
seconds = a + b × passes per (family, data set, arch, threads) turns costs into seconds: ``a`` is
what a job pays whatever its size (starting TensorFlow, loading data, tracing), ``b`` the time of a
pass. The families are training and evaluation (attacks differ from training in what they
differentiate). Where no job of a kind was timed, the nearest timed kind is scaled by the ratio of
input sizes (32×32×3 against 28×28×1).
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Iterable, Optional

import numpy as np

from studies.plan import TRAIN, Job

TIMINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timings.json")
_PIXELS = {"mnist": 784, "fashion_mnist": 784, "cifar10": 3072, "cifar100": 3072}


def family(kind: str) -> str:
    return "train" if kind == TRAIN else "eval"


def _key(kind: str, dataset: str, arch: str, threads: int) -> str:
    return f"{family(kind)}/{dataset}/{arch}/{threads}"


def _job_shape(job_id: str, options: dict) -> tuple[str, str]:
    """(dataset, arch) of a job from its run folder name (plan.run_folder: DATASET_ARCH_...)."""
    if "dataset" in options:
        return options["dataset"], options["arch"]
    folder = job_id.split("/", 1)[1]
    for ds in sorted(_PIXELS, key=len, reverse=True):
        if folder.startswith(ds + "_"):
            return ds, folder[len(ds) + 1:].split("_")[0]
    return "fashion_mnist", "cnn"


def fit(markers: Iterable[dict]) -> dict:
    """{key: [a, b]} from finished jobs' markers."""
    points: dict[str, list[tuple[float, float]]] = {}
    for m in markers:
        if not m.get("cost"):
            continue
        ds, arch = _job_shape(m["id"], m.get("options", {}))
        points.setdefault(_key(m["kind"], ds, arch, m.get("threads", 1)), []).append((m["cost"], m["seconds"]))
    out = {}
    for key, pts in points.items():
        c, s = np.array(pts, float).T
        if len(set(c)) >= 2:
            b, a = np.polyfit(c, s, 1)
            if b <= 0 or a < 0:  # noise on too few points: a line through the origin
                a, b = 0.0, float(s.sum() / c.sum())
        else:
            a, b = 0.0, float(s.sum() / c.sum())
        out[key] = [float(a), float(b)]
    return out


def read_markers(out_dir: str) -> list[dict]:
    markers = []
    for path in glob.glob(os.path.join(out_dir, "jobs", "*.json")):
        try:
            with open(path) as f:
                markers.append(json.load(f))
        except (OSError, ValueError):
            continue
    return markers


class CostModel:
    def __init__(self, lines: dict, threads: int, source: str):
        self.lines, self.threads, self.source = lines, threads, source

    def seconds(self, job: Job) -> float:
        ds, arch = _job_shape(job.id, job.options)
        key = _key(job.kind, ds, arch, self.threads)
        if key in self.lines:
            a, b = self.lines[key]
            return a + b * job.cost
        # The nearest measured shape: same family and threads first, scaled by input size.
        fam = family(job.kind)
        near = [k for k in self.lines if k.startswith(fam + "/")]
        if not near:
            return float("nan")
        near.sort(key=lambda k: (k.split("/")[3] != str(self.threads), k.split("/")[2] != arch))
        a, b = self.lines[near[0]]
        return a + b * job.cost * _PIXELS[ds] / _PIXELS[near[0].split("/")[1]]

    def total(self, jobs: list[Job], parallel: int) -> float:
        """Wall-clock estimate of ``jobs`` on ``parallel`` workers (longest-first greedy schedule;
        dependencies ignored, which the plan's order keeps close)."""
        loads = [0.0] * max(1, parallel)
        for s in sorted((self.seconds(j) for j in jobs), reverse=True):
            loads[loads.index(min(loads))] += s
        return max(loads)


def load(out_dir: Optional[str], threads: int) -> CostModel:
    """Fitted on OUT_DIR's own finished jobs where it has some, else studies/timings.json."""
    lines, source = {}, "no timings"
    if os.path.exists(TIMINGS):
        with open(TIMINGS) as f:
            lines, source = json.load(f)["lines"], "studies/timings.json"
    if out_dir:
        own = fit(read_markers(out_dir))
        if own:
            lines, source = {**lines, **own}, f"{out_dir}/jobs and studies/timings.json"
    return CostModel(lines, threads, source)


def main(argv: list[str]) -> int:
    """python -m studies.costs --from OUT_DIR [--from OUT_DIR ...]: fit and write timings.json."""
    dirs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--from"]
    if not dirs:
        print("error: give --from OUT_DIR (a study's output folder with finished jobs)", file=sys.stderr)
        return 2
    markers = [m for d in dirs for m in read_markers(d)]
    if not markers:
        print(f"error: no finished jobs under {', '.join(dirs)}/jobs", file=sys.stderr)
        return 2
    lines = fit(markers)
    with open(TIMINGS, "w") as f:
        json.dump({"from": dirs, "jobs": len(markers), "lines": lines}, f, indent=2)
        f.write("\n")
    print(f"wrote {TIMINGS}: {len(lines)} lines from {len(markers)} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
