"""What the attack suite runs: its options and their checks, each run's attacks with their params
and sample counts, which stored results it reuses, and how an attack's samples split into shards.
Every bad input raises UsageError here, before anything runs or is written.

Usage::

    from eval.analyses.attack_suite.plan import SuiteOptions, plan_runs, plan_shards
    opts = SuiteOptions(attacks=("pgd", "mim"), n_samples=1000)   # a library caller
    opts = SuiteOptions.from_flags(FLAGS)                         # the CLI (eval.analyses.attack_suite)
    plans, test_sets = plan_runs(["runs/cce_rm"], opts)            # one RunPlan per run, model loaded
    plans[0].attacks["pgd"]                                        # (params, n_samples)
    plan_shards("runs/cce_rm", opts, slots=8)                      # [(attack, start, stop), ...]

A study job's options (studies.jobs) are keyword arguments of ``SuiteOptions`` as they are: its
lists and mappings become the tuples the options hold. ``reuse_decisions`` is the one place that
decides which stored attack results a run keeps (eval.reuse); the suite (eval.analyses.attack_suite.run) and the Ray
executor's shard planning (``plan_shards``, on the driver, without loading the model) both ask it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from attacks.settings import ATTACK_NAMES, DEFAULT_ATTACKS, default_n_samples, default_params
from cce_tf.cli_flags import UsageError
from eval import batches, reuse
from eval.flags import check_radius
from eval.labels import run_labels
from eval.analyses.attack_suite.store import read_results
from eval.target import Target

SHARDS_PER_SLOT = 2          # shards per CPU (or GPU): the last shards fill the gaps the first leave


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """What the suite runs on every run folder (the CLI's flags, as one explicit argument).

    attacks: names of ``attacks.registry.ATTACKS`` (None: the paper's list); n_samples: at most the
    first N test samples per attack (None: the paper's counts); eps / eps_iter / nb_iter: overrides
    as ``attacks.registry.default_params`` applies them; force: recompute reusable results;
    dataset: the data set of model files given in place of run folders (eval.target.Target);
    trust_model: load SavedModels among them without eval.model_scan's check;
    verbose: 0 quiet, 1 a progress bar per attack, 2 a line per finished attack;
    subsets: (attack, at most this many samples) pairs, a scale's cut (a mapping is taken too);
    draw: attack the first n of this seeded draw of the test set (eval.batches.draw_order), the same
    for every run at one seed (None: the first n, the paper's protocol).
    """

    attacks: Optional[tuple[str, ...]] = None
    n_samples: Optional[int] = None
    batch_size: int = 500
    seed: int = 0
    eps: Optional[float] = None
    eps_iter: Optional[float] = None
    nb_iter: Optional[int] = None
    mul_nb_iter: Optional[int] = None
    force: bool = False
    sanity: bool = True
    dataset: Optional[str] = None
    trust_model: bool = False
    verbose: int = 1
    subsets: tuple[tuple[str, int], ...] = ()
    draw: Optional[int] = None   # the test images' draw (eval.batches.draw_order); None: the first n

    def __post_init__(self):
        # A study job's options come as JSON gives them back: lists and a mapping.
        if self.attacks is not None:
            object.__setattr__(self, "attacks", tuple(self.attacks))
        if isinstance(self.subsets, Mapping):
            object.__setattr__(self, "subsets", tuple(sorted(self.subsets.items())))

    @classmethod
    def from_flags(cls, fv) -> "SuiteOptions":
        """The options of eval.analyses.attack_suite's parsed flags ``fv``."""
        return cls(attacks=None if fv.attacks is None else tuple(a.strip() for a in fv.attacks),
                   n_samples=fv.n_samples, batch_size=fv.batch_size, seed=fv.seed,
                   eps=fv.eps, eps_iter=fv.eps_iter, nb_iter=fv.nb_iter, mul_nb_iter=fv.mul_nb_iter,
                   force=fv.force, sanity=fv.sanity, dataset=fv.dataset, trust_model=fv.trust_model,
                   verbose=fv.verbose)

    def attack_names(self) -> list[str]:
        """The checked attack names, repeats dropped. Raises UsageError on any bad setting (the
        CLI's flags are checked as they are parsed; this checks the library's callers too)."""
        for flag in ("n_samples", "batch_size", "nb_iter", "mul_nb_iter"):
            value = getattr(self, flag)
            if value is not None and value < 1:
                raise UsageError(f"--{flag} must be >= 1, got {value}")
        for flag in ("eps", "eps_iter"):
            check_radius(getattr(self, flag), f"--{flag}")
        names = list(DEFAULT_ATTACKS) if self.attacks is None else list(self.attacks)
        if not names or not all(names):
            raise UsageError(f"--attacks is empty: choose from {', '.join(ATTACK_NAMES)}")
        unknown = [a for a in names if a not in ATTACK_NAMES]
        if unknown:
            raise UsageError(f"unknown attack {unknown[0]!r}: choose from {', '.join(ATTACK_NAMES)}")
        return list(dict.fromkeys(names))


@dataclasses.dataclass
class RunPlan:
    """One run folder and everything to do on it."""

    target: Target                    # a run folder or a model file, its config read once
    header: str                       # the table column, e.g. "CCE-RM_2"
    attacks: dict[str, tuple[dict, int]]  # name -> (params, n_samples)
    sanity_params: dict               # PGD's params, for the sanity checks
    sanity_n: int
    existing: dict                    # the run's attack_suite.json so far ({} if none)
    model: Any = None                 # the loaded Ensemble

    @property
    def run_dir(self) -> str:
        return self.target.path

    @property
    def config(self) -> dict:
        return self.target.config


def attack_params(name: str, dataset: str, arch: str, opts: SuiteOptions) -> dict:
    """The registry's paper params for ``name`` with the options' overrides. Raises UsageError if η
    ends up above ε."""
    try:
        params = default_params(name, dataset, arch, eps=opts.eps, eps_iter=opts.eps_iter,
                                nb_iter=opts.nb_iter, mul_nb_iter=opts.mul_nb_iter)
    except ValueError as e:  # a data set or arch the paper's settings do not cover
        raise UsageError(str(e)) from None
    if "eps_iter" in params and params["eps_iter"] > params["eps"]:
        raise UsageError(f"{name}: step size eps_iter={params['eps_iter']:g} exceeds eps={params['eps']:g} (--eps_iter must be <= --eps)")
    return reuse.canonical(params)


def attack_samples(name: str, n_test: int, opts: SuiteOptions) -> int:
    """How many of the first test samples attack ``name`` runs on: the paper's count for it
    (attacks.registry.default_n_samples; None is the whole test set), capped by --n_samples and by
    the options' subset for that attack."""
    return min(n_test, opts.n_samples or n_test, dict(opts.subsets).get(name, n_test),
               default_n_samples(name) or n_test)


def run_attacks(names: list[str], config: dict, n_test: int, opts: SuiteOptions) -> dict[str, tuple[dict, int]]:
    """attack name -> (params, n_samples) on a run with ``config`` and a test set of ``n_test``."""
    return {name: (attack_params(name, config["dataset"], config["arch"], opts), attack_samples(name, n_test, opts))
            for name in names}


def reuse_settings(params: dict, n_samples: int, seed: int, draw: Optional[int] = None) -> dict:
    """What a stored attack result must match to be reused (with the weights, eval.reuse); the draw
    only where there is one, so results on the first n stay as they were."""
    return {"params": params, "n_samples": n_samples, "seed": seed, **batches.draw_setting(draw)}


def reuse_decisions(existing: dict, fp: str, attacks: dict[str, tuple[dict, int]],
                    opts: SuiteOptions) -> dict[str, reuse.Decision]:
    """Per attack: may its finished entry in ``existing`` (a results file's dict) stand? Only when
    it was computed on weights ``fp`` with the same params, n_samples and seed, and not --force."""
    finished = {n: e for n, e in existing.get("attacks", {}).items()
                if isinstance(e, dict) and "robust_accuracy" in e}
    return {name: reuse.decide(finished.get(name), fp, reuse_settings(params, n, opts.seed, opts.draw), opts.force)
            for name, (params, n) in attacks.items()}


def plan_runs(run_dirs: list, opts: SuiteOptions
              ) -> tuple[list[RunPlan], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check the options and every run folder and load the test sets, before anything runs or is
    written.

    :param run_dirs: run folders or model files, or eval.target.Target (a model in memory too).
    :return: (one RunPlan per run folder, {dataset: (x_test, y_test)}).
    """
    names = opts.attack_names()  # bad options fail here, before TensorFlow starts
    from cce_tf import data
    from eval import sanity

    if not run_dirs:
        raise UsageError("--run_dir is required (a run folder written by python -m cce_tf.train)")
    plans, test_sets = [], {}
    for run_dir in run_dirs:
        if isinstance(run_dir, Target):
            target, run_dir = run_dir, run_dir.path
        else:
            run_dir = os.path.normpath(run_dir)
            target = Target(run_dir, opts.dataset, opts.trust_model)
        model = target.load()
        dataset = target.config["dataset"]
        if dataset not in test_sets:
            try:
                x_test, y_test = data.load(dataset, "test")
                order = batches.draw_order(len(x_test), opts.draw)
                test_sets[dataset] = (x_test[order], y_test[order])
            except ValueError as e:  # DataError is a ValueError, as is an unknown name
                raise UsageError(f"--run_dir {run_dir}: {e}") from None
        n_test = len(test_sets[dataset][0])
        plans.append(RunPlan(target=target, header="", attacks=run_attacks(names, target.config, n_test, opts),
                             sanity_params=attack_params("pgd", dataset, target.config["arch"], opts),
                             sanity_n=min(sanity.SUBSET, n_test, opts.n_samples or n_test),
                             existing=read_results(run_dir), model=model))
    headers = run_labels([p.run_dir for p in plans], [p.config for p in plans], members=True)
    for p, header in zip(plans, headers):
        p.header = header
    return plans, test_sets


# --------------------------------------------------------------------------------------------------
# Shards: one attack's samples split across processes (studies.ray_executor)
# --------------------------------------------------------------------------------------------------


def shard_bounds(n: int, batch_size: int, slots: int, shard_size: Optional[int] = None
                 ) -> list[tuple[int, int]]:
    """[start, stop) of each shard of n samples: ``shard_size`` (rounded up to whole batches;
    default whole batches for at least SHARDS_PER_SLOT shards per slot where there are enough
    batches, so the slots finish close together).

    >>> shard_bounds(1000, 100, 2)
    [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    """
    if shard_size is None:
        batches = math.ceil(n / batch_size)
        size = max(1, batches // (SHARDS_PER_SLOT * max(1, slots))) * batch_size
    else:
        size = max(1, math.ceil(shard_size / batch_size)) * batch_size
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def plan_shards(run_dir: str, opts: SuiteOptions, slots: int, shard_size: Optional[int] = None
                ) -> list[tuple[str, int, int]]:
    """(attack, start, stop) of every shard of the suite on one run folder, without loading the
    model: the run's config.json, its results so far and its weights' fingerprint. Attacks whose
    stored result the suite will reuse (``reuse_decisions``) get no shard; the sample counts are
    ``plan_runs``'.

    :raises UsageError: the run folder is not a readable run.
    """
    from cce_tf import data

    target = Target(run_dir, opts.dataset, opts.trust_model)
    attacks = run_attacks(opts.attack_names(), target.config, data.TEST_SIZES[target.config["dataset"]], opts)
    decisions = reuse_decisions(read_results(run_dir), target.fingerprint, attacks, opts)
    return [(name, start, stop) for name, (_, n) in attacks.items() if not decisions[name].reuse
            for start, stop in shard_bounds(n, opts.batch_size, slots, shard_size)]
