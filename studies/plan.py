"""From a study, a scale and seeds to jobs: one training job per (run settings, seed), one evaluation
job per (run, evaluation), one black-box job per set of runs; and which of them are done.

Usage::

    from studies import plan, spec
    from studies.scale import SCALES
    p = plan.make(spec.load("table4"), SCALES["small"], seeds=(0, 1, 2), out_dir="results/table4")
    todo = [j for j in p.jobs if not jobs.is_done(j, p.out_dir)]     # studies.jobs

A job is done when its marker OUT_DIR/jobs/ID.json names the same options and the same weights
fingerprints (eval.reuse) as the job would use now: re-running a study does only what is missing,
and training a run further invalidates every evaluation of it. Run folders live under
OUT_DIR/runs/, shared by every study with the same settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from typing import Optional

from studies.scale import Scale
from studies.spec import RunSpec, Study

TRAIN = "train"   # a job's kind: TRAIN, or the NAME of an analysis of eval.analyses.ANALYSES


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work. ``kind`` is TRAIN or an evaluation; ``options`` are the explicit arguments
    of the library function it calls (studies.jobs.run_job)."""

    id: str
    kind: str
    run_dirs: tuple[str, ...]
    options: dict
    needs: tuple[str, ...] = ()     # ids of the jobs that must be done first
    cost: float = 0.0               # estimated member forward-backward passes on one image

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One column of one study's table for one seed: where its run lives."""

    study: str
    run: RunSpec
    dataset: str
    seed: int
    run_dir: str


@dataclasses.dataclass
class Plan:
    study: Study
    scale: Scale
    seeds: tuple[int, ...]
    out_dir: str
    cells: list[Cell]
    jobs: list[Job]                 # dependencies first
    left_out: list[str]             # what this scale does not reproduce, one line each
    canaries: list[Cell] = dataclasses.field(default_factory=list)   # see CANARY


# Every study that runs the attack suite also trains an undefended NAT_2 per data set and member
# architecture (first seed) and attacks it with the gradient attacks its runs get: eval/sanity.py's
# canary says whether those attacks, at this scale's k, could tell a defence from none at all. The
# analysis that has one (``canary_options``) says which of its options the canary gets.
CANARY = RunSpec(label="NAT_2 (canary)", method="nat", members=2, arch="cnn")


def run_folder(run: RunSpec, dataset: str, seed: int) -> str:
    """The folder name of a run: equal settings (RunSpec.key, whatever the label) share one folder."""
    _, arch, members, method, pm, dm = run.key(dataset)
    lam = f"_pm{pm:g}_dm{dm:g}" if method == "cce" else ""
    return f"{dataset}_{arch}_{method}{lam}_n{members}_s{seed}"


def train_options(run: RunSpec, dataset: str, seed: int, scale: Scale) -> dict:
    """cce_tf.train's options for one run (its flag names as keys)."""
    from cce_tf import config

    method, pm, dm = config.resolve_method(run.method, run.lambda_pm, run.lambda_dm)
    opts = dict(scale.train_options(dataset), arch=run.arch, method=run.method, members=run.members,
                seed=seed)
    if method == "cce":
        opts.update(lambda_pm=pm, lambda_dm=dm)
    return opts


def runs_folder(out_dir: str, name: str, dataset: str, seed: int, run_dirs: list[str]) -> str:
    """OUT_DIR/NAME/DATASET_sSEED_DIGEST, the folder of an analysis across runs (SCOPE "runs", e.g.
    the black-box matrix): named by the runs it crosses, not by the table, so that tables sharing
    their runs (12 and 13 on Fashion-MNIST) share one job."""
    names = "\n".join(os.path.basename(d) for d in run_dirs)
    return os.path.join(out_dir, name, f"{dataset}_s{seed}_{hashlib.sha256(names.encode()).hexdigest()[:10]}")


def _studies(study: Study) -> tuple[Study, ...]:
    return study.parts or (study,)


def make(study: Study, scale: Scale, seeds: tuple[int, ...], out_dir: str,
         dataset: Optional[str] = None) -> Plan:
    """The jobs of ``study`` at ``scale`` for ``seeds`` under ``out_dir``; ``dataset`` overrides the
    data set of every part (default: the scale's, else each study's own). Each analysis of a part's
    ``evaluations`` (eval.analyses.ANALYSES) gives its jobs' options: one job per run (its options
    merged over the parts that evaluate the run), or one across a part's runs per seed."""
    from eval.analyses import ANALYSES

    runs_dir = os.path.join(out_dir, "runs")
    cells, left_out = [], []
    jobs: dict[str, Job] = {}
    per_run: dict[str, dict[str, dict]] = {name: {} for name in ANALYSES}   # analysis -> run_dir -> options
    for part in _studies(study):
        ds = dataset or scale.dataset_for(part.dataset)
        kept = [r for r in part.runs if scale.keeps(r)]
        dropped = [r.label for r in part.runs if not scale.keeps(r)]
        if dropped:
            left_out.append(f"{part.name}: {', '.join(dropped)} (arch not trained at scale {scale.name})")
        analyses = [ANALYSES[e] for e in part.evaluations if e in ANALYSES]
        for seed in seeds:
            part_dirs = []
            for run in kept:
                run_dir = os.path.join(runs_dir, run_folder(run, ds, seed))
                cells.append(Cell(part.name, run, ds, seed, run_dir))
                part_dirs.append(run_dir)
                _add_train(jobs, cells[-1], scale)
                for a in (a for a in analyses if a.SCOPE == "run"):
                    options = a.job_options(scale, part, seed, run.members, per_run[a.NAME].get(run_dir))
                    if options is not None:
                        per_run[a.NAME][run_dir] = options
            for a in (a for a in analyses if a.SCOPE == "runs" and len(part_dirs) > 1):
                folder = runs_folder(out_dir, a.NAME, ds, seed, part_dirs)
                jid = f"{a.NAME}/{os.path.basename(folder)}"
                trains = [jobs[f"{TRAIN}/{os.path.basename(d)}"] for d in part_dirs]
                # No path in the options: the marker must not depend on how out_dir was spelled; the
                # job writes to OUT_DIR/ID (studies.jobs).
                options = a.job_options(scale, part, seed, [r.label for r in kept])
                jobs[jid] = Job(jid, a.NAME, tuple(part_dirs), options, needs=tuple(t.id for t in trains),
                                cost=a.cost(options, [t.options for t in trains]))
        if not kept:
            left_out.append(f"{part.name}: not reproduced at scale {scale.name} (no run left)")
    canaries = _add_canaries(jobs, cells, per_run, scale, seeds, runs_dir)
    for name, options_of in per_run.items():
        for run_dir, options in options_of.items():
            _add_eval(jobs, ANALYSES[name], run_dir, options)
    ordered = [j for j in jobs.values() if j.kind == TRAIN] + [j for j in jobs.values() if j.kind != TRAIN]
    return Plan(study, scale, tuple(seeds), out_dir, cells, ordered, left_out, canaries)


def _add_canaries(jobs: dict, cells: list[Cell], per_run: dict[str, dict[str, dict]], scale: Scale, seeds,
                  runs_dir: str) -> list[Cell]:
    """The CANARY run of every (data set, arch) whose runs an analysis with ``canary_options`` (the
    attack suite) evaluates, with the options it gives (a study that already trains NAT_2 shares its
    run folder)."""
    from eval.analyses import ANALYSES

    out = []
    for name, a in ANALYSES.items():
        if not hasattr(a, "canary_options"):
            continue
        attacked = [c for c in cells if c.run_dir in per_run[name]]
        for ds, arch in dict.fromkeys((c.dataset, c.run.arch) for c in attacked):
            run = dataclasses.replace(CANARY, arch=arch)
            cell = Cell("canary", run, ds, seeds[0], os.path.join(runs_dir, run_folder(run, ds, seeds[0])))
            options = a.canary_options(scale, seeds[0], [per_run[name][c.run_dir] for c in attacked
                                                         if (c.dataset, c.run.arch) == (ds, arch)],
                                       per_run[name].get(cell.run_dir))
            if options is None:
                continue
            _add_train(jobs, cell, scale)
            per_run[name][cell.run_dir] = options
            out.append(cell)
    return out


def _add_train(jobs: dict, cell: Cell, scale: Scale) -> None:
    """The training job of ``cell``'s run folder, unless another cell with the same settings added it."""
    tid = f"{TRAIN}/{os.path.basename(cell.run_dir)}"
    if tid not in jobs:
        opts = train_options(cell.run, cell.dataset, cell.seed, scale)
        jobs[tid] = Job(tid, TRAIN, (cell.run_dir,), opts, cost=train_cost(opts))


def _add_eval(jobs: dict, analysis, run_dir: str, options: dict) -> None:
    tid = f"{TRAIN}/{os.path.basename(run_dir)}"
    train = jobs[tid]
    jid = f"{analysis.NAME}/{os.path.basename(run_dir)}"
    jobs[jid] = Job(jid, analysis.NAME, (run_dir,), options, needs=(tid,),
                    cost=analysis.cost(options, train.options))


# --------------------------------------------------------------------------------------------------
# Cost: member forward-backward passes on one image, turned into seconds by measured timings
# --------------------------------------------------------------------------------------------------


def _train_steps(opts: dict) -> tuple[int, int, int]:
    """(steps per epoch, epochs, k) of a training job."""
    from cce_tf import config, data

    d = config.defaults(opts["dataset"], opts["arch"])
    n_train = opts.get("train_subset") or data.TRAIN_SIZES[opts["dataset"]]
    epochs = opts.get("epochs") or d["epochs"]
    k = opts.get("nb_iter") or d["pgd"].nb_iter
    return math.ceil(n_train / d["batch_size"]) * d["batch_size"], epochs, k


def passes_per_image(method: str, members: int, k: int) -> int:
    """Member forward-backward passes one training image costs per step: the PGD steps, then the
    loss (methods.py): NAT N; ADV k + 1; ADV-EN and ADP N (k + 2) (PGD on the ensemble, clean and
    adversarial terms); CCE N k + N + N² (N member attacks, clean terms, cross inference); GAL 3N
    (the input gradients differentiated again); DVERGE N·10 + N² (its own 10 distillation steps,
    then every member on the others' distilled examples); TRS N·6 + 3N (its own 6 smoothing steps,
    then the double backward). The last three match bench/train_step.py's ratios to CCE within 30 %."""
    n = members
    return {"nat": n, "adv": k + 1, "adv-en": n * (k + 2), "adp": n * (k + 2), "gal": 3 * n,
            "dverge": n * 10 + n * n, "trs": n * 6 + 3 * n}.get(method, n * k + n + n * n)


def train_cost(opts: dict) -> float:
    from cce_tf import config

    images, epochs, k = _train_steps(opts)
    method = config.resolve_method(opts["method"], None, None)[0]
    return float(images * epochs * passes_per_image(method, opts["members"], k))
