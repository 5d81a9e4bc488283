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

TRAIN, ATTACK_SUITE, TRANSFER, DETECTION, ADAPTIVE, BLACKBOX = (
    "train", "attack_suite", "transferability", "detection", "adaptive_detection", "blackbox")
FIGURES = ("entropy_histogram", "roc_attacks", "roc_eps")  # drawn for the detection studies


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
# canary says whether those attacks, at this scale's k, could tell a defence from none at all.
CANARY = RunSpec(label="NAT_2 (canary)", method="nat", members=2, arch="cnn")
CANARY_ATTACKS = ("fgsm", "pgd", "pgd_margin", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")


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


def blackbox_folder(out_dir: str, dataset: str, seed: int, run_dirs: list[str]) -> str:
    """OUT_DIR/blackbox/DATASET_sSEED_DIGEST: named by the runs it crosses, not by the table, so
    that tables sharing their runs (12 and 13 on Fashion-MNIST) share one black-box job."""
    names = "\n".join(os.path.basename(d) for d in run_dirs)
    return os.path.join(out_dir, BLACKBOX, f"{dataset}_s{seed}_{hashlib.sha256(names.encode()).hexdigest()[:10]}")


def _studies(study: Study) -> tuple[Study, ...]:
    return study.parts or (study,)


def make(study: Study, scale: Scale, seeds: tuple[int, ...], out_dir: str,
         dataset: Optional[str] = None) -> Plan:
    """The jobs of ``study`` at ``scale`` for ``seeds`` under ``out_dir``; ``dataset`` overrides the
    data set of every part (default: the scale's, else each study's own)."""
    runs_dir = os.path.join(out_dir, "runs")
    cells, left_out = [], []
    jobs: dict[str, Job] = {}
    suite_attacks: dict[str, list[str]] = {}      # run_dir -> attacks, in first-seen order
    detection_runs: dict[str, None] = {}
    adaptive_runs: dict[str, None] = {}
    transfer_runs: dict[str, None] = {}
    sanity_runs: set[str] = set()               # runs a full_evaluation study checks for masking
    for part in _studies(study):
        ds = dataset or scale.dataset_for(part.dataset)
        kept = [r for r in part.runs if scale.keeps(r)]
        dropped = [r.label for r in part.runs if not scale.keeps(r)]
        if dropped:
            left_out.append(f"{part.name}: {', '.join(dropped)} (arch not trained at scale {scale.name})")
        for seed in seeds:
            part_dirs = []
            for run in kept:
                run_dir = os.path.join(runs_dir, run_folder(run, ds, seed))
                cells.append(Cell(part.name, run, ds, seed, run_dir))
                part_dirs.append(run_dir)
                _add_train(jobs, cells[-1], scale)
                if ATTACK_SUITE in part.evaluations:
                    names = suite_attacks.setdefault(run_dir, [])
                    names += [a for a in scale.attacks_for(part.attacks, part.full_evaluation) if a not in names]
                    if part.full_evaluation:
                        sanity_runs.add(run_dir)
                if DETECTION in part.evaluations:
                    detection_runs[run_dir] = None
                if ADAPTIVE in part.evaluations:
                    adaptive_runs[run_dir] = None
                if TRANSFER in part.evaluations and run.members >= 2:
                    transfer_runs[run_dir] = None
            if BLACKBOX in part.evaluations and len(part_dirs) > 1:
                folder = blackbox_folder(out_dir, ds, seed, part_dirs)
                bid = f"{BLACKBOX}/{os.path.basename(folder)}"
                jobs[bid] = Job(bid, BLACKBOX, tuple(part_dirs),
                                # No path in the options: the marker must not depend on how out_dir was
                                # spelled; the job writes to OUT_DIR/ID (studies.jobs).
                                dict(labels=[r.label for r in kept], seed=seed, n_samples=scale.n_samples,
                                     nb_iter=scale.analysis_nb_iter),
                                needs=tuple(f"{TRAIN}/{os.path.basename(d)}" for d in part_dirs),
                                cost=_blackbox_cost(len(part_dirs), scale))
        if not kept:
            left_out.append(f"{part.name}: not reproduced at scale {scale.name} (no run left)")
    canaries = _add_canaries(jobs, cells, suite_attacks, scale, seeds, runs_dir)
    seeds_of = {c.run_dir: c.seed for c in cells + canaries}
    for run_dir, names in suite_attacks.items():
        subsets = {a: n for a, n in scale.subsets if a in names}
        _add_eval(jobs, ATTACK_SUITE, run_dir,
                  dict(attacks=names, n_samples=scale.n_samples, seed=seeds_of[run_dir],
                       nb_iter=scale.attack_nb_iter, mul_nb_iter=scale.mul_nb_iter,
                       sanity=scale.sanity or run_dir in sanity_runs, **({"subsets": subsets} if subsets else {})))
    for run_dir in transfer_runs:
        _add_eval(jobs, TRANSFER, run_dir, dict(n_samples=scale.n_samples, seed=seeds_of[run_dir],
                                                nb_iter=scale.analysis_nb_iter))
    for run_dir in detection_runs:
        _add_eval(jobs, DETECTION, run_dir, dict(n_samples=scale.n_samples, seed=seeds_of[run_dir],
                                                 nb_iter=scale.analysis_nb_iter, figures=list(FIGURES)))
    for run_dir in adaptive_runs:
        _add_eval(jobs, ADAPTIVE, run_dir, dict(n_samples=scale.n_samples, seed=seeds_of[run_dir],
                                                nb_iter=scale.analysis_nb_iter))
    ordered = [j for j in jobs.values() if j.kind == TRAIN] + [j for j in jobs.values() if j.kind != TRAIN]
    return Plan(study, scale, tuple(seeds), out_dir, cells, ordered, left_out, canaries)


def _add_canaries(jobs: dict, cells: list[Cell], suite_attacks: dict, scale: Scale, seeds, runs_dir: str
                  ) -> list[Cell]:
    """The CANARY run of every (data set, arch) whose runs the suite attacks, with the gradient
    attacks those runs get (a study that already trains NAT_2 shares its run folder)."""
    attacked = [c for c in cells if c.run_dir in suite_attacks]
    out = []
    for ds, arch in dict.fromkeys((c.dataset, c.run.arch) for c in attacked):
        names = [a for c in attacked if (c.dataset, c.run.arch) == (ds, arch) for a in suite_attacks[c.run_dir]
                 if a in CANARY_ATTACKS]
        if "pgd" not in names:
            continue
        run = dataclasses.replace(CANARY, arch=arch)
        cell = Cell("canary", run, ds, seeds[0], os.path.join(runs_dir, run_folder(run, ds, seeds[0])))
        _add_train(jobs, cell, scale)
        have = suite_attacks.setdefault(cell.run_dir, [])
        have += [a for a in dict.fromkeys(names) if a not in have]
        out.append(cell)
    return out


def _add_train(jobs: dict, cell: Cell, scale: Scale) -> None:
    """The training job of ``cell``'s run folder, unless another cell with the same settings added it."""
    tid = f"{TRAIN}/{os.path.basename(cell.run_dir)}"
    if tid not in jobs:
        opts = train_options(cell.run, cell.dataset, cell.seed, scale)
        jobs[tid] = Job(tid, TRAIN, (cell.run_dir,), opts, cost=train_cost(opts))


def _add_eval(jobs: dict, kind: str, run_dir: str, options: dict) -> None:
    tid = f"{TRAIN}/{os.path.basename(run_dir)}"
    train = jobs[tid]
    jid = f"{kind}/{os.path.basename(run_dir)}"
    jobs[jid] = Job(jid, kind, (run_dir,), options, needs=(tid,), cost=eval_cost(kind, options, train.options))


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


# What one sample of SPSA and of AutoAttack costs, in PGD steps, measured side by side in one job
# (results/headline/logs/attack_suite__fashion_mnist_cnn_adv-en_n2_s0.log, N = 2 CNN): PGD k = 40 on
# 500 samples took 23.9 s, SPSA (50 iterations of 128 perturbations) on 50 samples 98.3 s, standard
# AutoAttack on 100 samples 1085.6 s. Counting model calls misses both ways: SPSA's forward-only
# batches cost a quarter of a step each, and AutoAttack's calls through the PyTorch bridge (with
# FAB-T's and Square's) four times its 2,250 counted steps.
SPSA_STEPS_PER_ITER = 33      # 98.3 / 23.9 x (40 x 500) / 50 samples / 50 iterations
AUTOATTACK_STEPS = 9100       # 1085.6 / 23.9 x (40 x 500) / 100 samples


def _test_size(dataset: str, n_samples: Optional[int]) -> int:
    from cce_tf import data

    return min(n_samples or data.TEST_SIZES[dataset], data.TEST_SIZES[dataset])


def eval_cost(kind: str, options: dict, train_opts: dict) -> float:
    """Passes of an evaluation: attack steps × samples × members (each ensemble step runs every
    member), from the attacks' settings (attacks.registry)."""
    from attacks import registry

    n_members, ds, arch = train_opts["members"], train_opts["dataset"], train_opts["arch"]
    if kind == ATTACK_SUITE:
        steps = 0
        for name in options["attacks"]:
            p = registry.default_params(name, ds, arch, nb_iter=options.get("nb_iter"),
                                        mul_nb_iter=options.get("mul_nb_iter"))
            k = {"fgsm": 1, "spsa": SPSA_STEPS_PER_ITER * p.get("nb_iter", 1),
                 "autoattack": AUTOATTACK_STEPS}.get(name, p.get("nb_iter", 1))
            if name.startswith("mul_"):
                k *= 9
            if name.startswith("bb_"):
                k = p["start_nb_iter"] + p["steps"] * p["repeats"]
            steps += k * min(_test_size(ds, options.get("n_samples")), options.get("subsets", {}).get(name, 10 ** 9),
                             registry.default_n_samples(name) or 10 ** 9)
        if options.get("sanity"):  # PGD at each radius of the sweep, at 2k, and restarted margin PGD
            from eval import sanity
            k = registry.default_params("pgd", ds, arch, nb_iter=options.get("nb_iter"))["nb_iter"]
            eps = registry.EPSILONS[ds]["eps"]
            steps += ((len(sanity.sweep_eps(eps)) + 2 + registry.RESTARTS) * k
                      * min(_test_size(ds, options.get("n_samples")), sanity.SUBSET))
        return float(steps * n_members)
    n = _test_size(ds, options.get("n_samples"))
    if kind == TRANSFER:
        return float(2 * options["nb_iter"] * n * n_members)
    if kind == ADAPTIVE:  # PGD, PGD − βH per β, a targeted PGD per wrong class, the two stages
        from cce_tf import data
        from eval.analyses.adaptive_detection import BETAS
        classes = data.info(ds).num_classes
        return float((1 + len(BETAS) + classes - 1 + 2) * options["nb_iter"] * n * n_members)
    return float(11 * options["nb_iter"] * n * n_members)  # detection: 3 attacks + 8 sweep radii


def _blackbox_cost(n_runs: int, scale: Scale) -> float:
    return float(2 * n_runs * scale.analysis_nb_iter * (scale.n_samples or 10000) * 2)
