"""The attack suite on a run, top to bottom: natural accuracy, then per attack reuse its stored
result, or take the flags merged from shards, or attack; record it and write the files; then the
sanity checks. The library entry point is ``evaluate`` (studies call it; eval.analyses.attack_suite wraps it).

Usage::

    from eval.analyses.attack_suite.plan import SuiteOptions
    from eval.analyses.attack_suite.run import evaluate, shard_mask
    columns = evaluate(["runs/cce_rm"], SuiteOptions(attacks=("pgd", "mim"), n_samples=1000))
    flags = shard_mask("runs/cce_rm", opts, "pgd", 0, 500)    # one shard's robust flags
    evaluate(["runs/cce_rm"], opts, merged={"pgd": (flags_of_all_shards, 61.2)})

Results already in the file are reused when eval.reuse allows (same weights, same settings); those
computed on other weights are dropped from the file after a copy is kept in RUN/eval/stale/, so the
file only ever describes the weights the run holds (eval.analyses.attack_suite.store).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Optional

import numpy as np

from cce_tf.cli_flags import UsageError
from eval import reuse
from eval.batches import predict_labels
from eval.progress import Progress
from eval.analyses.attack_suite import checks, store
from eval.analyses.attack_suite.engine import robust_mask
from eval.analyses.attack_suite.plan import RunPlan, SuiteOptions, plan_runs, reuse_decisions, reuse_settings
from eval.analyses.attack_suite.report import Outcome

Merged = dict[str, tuple[np.ndarray, float]]   # attack -> (flags merged from shards, their seconds)


def evaluate(run_dirs: list[str], opts: SuiteOptions = SuiteOptions(),
             merged: Optional[Merged] = None) -> list[tuple[str, dict]]:
    """The attack suite on every run: (table header, evaluate_run's summary) per run, results
    written to RUN/eval/. ``merged`` (one run only): per attack, the flags merged from its shards
    (``shard_mask``) and the seconds they took, recorded instead of attacking again.

    :raises UsageError: bad options or a folder that is not a readable run (before any work).
    :raises BoundsError: an attack returned x_adv outside its bounds (earlier results are kept).
    """
    plans, test_sets = plan_runs(list(run_dirs), opts)
    return [(p.header, evaluate_run(p, *test_sets[p.config["dataset"]], opts, merged)) for p in plans]


def evaluate_run(plan: RunPlan, x: np.ndarray, y: np.ndarray, opts: SuiteOptions,
                 merged: Optional[Merged] = None) -> dict:
    """Natural accuracy, every attack, the sanity report of one run; writes the results as they
    come. ``merged``: the flags of some attacks already computed by ``shard_mask``.

    :return: {"natural_accuracy", "attacks": {name: Outcome}, "params": {name: params},
        "n_samples": {name: n}, "any_attack", "warnings": [...], "sanity_ran": bool} for the table.
    """
    from attacks.errors import AttackUnavailable

    merged, model, fp, seed = merged or {}, plan.model, plan.target.fingerprint, opts.seed
    print(f"== {plan.header}: {plan.run_dir} ({plan.config['dataset']}, {plan.config['arch']})", flush=True)
    t0 = time.time()
    correct = predict_labels(model, x, opts.batch_size) == y
    print(f"  natural accuracy {np.mean(correct):.4f} on {len(x)} test samples ({time.time() - t0:.1f}s)", flush=True)

    decisions = reuse_decisions(plan.existing, fp, plan.attacks, opts)
    for line in reuse.explain(os.path.join(plan.target.results_dir, store.RESULTS_FILE), decisions):
        print(f"  {line}", flush=True)
    files = store.SuiteFiles(plan.target, seed, correct, plan.existing,
                             functools.partial(checks.summarise, plan.config))
    files.save()

    outcomes: dict[str, Outcome] = {}
    for name, (params, n) in plan.attacks.items():
        settings, keep, batches = reuse_settings(params, n, seed, opts.draw), None, None
        if name in merged:  # merged from shards (shard_mask): the same flags, computed elsewhere
            mask, seconds = np.asarray(merged[name][0], bool), float(merged[name][1])
            if mask.shape != (n,):
                raise UsageError(f"{name}: {mask.shape[0]} merged flags for {n} samples")
            how = "merged from shards"
        elif decisions[name].reuse:
            entry = plan.existing["attacks"][name]
            outcomes[name] = entry["robust_accuracy"]
            print(f"  {name}: reused, robust accuracy {entry['robust_accuracy']:.4f} on {n} samples "
                  f"({entry['seconds']:.1f}s when run; --force to re-run)", flush=True)
            continue
        else:
            print(f"  {name}: {n} samples, {params}", flush=True)
            t0, keep = time.time(), ({} if name in store.SAVE_ADV else None)
            # Their x_adv are kept, so the attacks of SAVE_ADV start over; the others resume at a batch.
            batches = None if keep is not None else store.Batches(
                plan.target, name, dict(settings, batch_size=opts.batch_size), fp, opts.force)
            if batches is not None and batches.done:
                print(f"  {name}: {len(batches.done)} finished batch(es) read back from {batches.path}", flush=True)
            try:
                mask = robust_mask(model, name, x[:n], y[:n], params, opts.batch_size,
                                   bar=Progress(n, opts.verbose), seed=seed, keep=keep,
                                   **(dict(done=batches.done, on_batch=batches.add) if batches is not None else {}))
            except AttackUnavailable as e:
                print(f"  {name}: skipped: {e}", flush=True)
                outcomes[name] = "skipped"
                if files.record_skip(name, str(e)):
                    files.save()
                continue
            seconds = round(time.time() - t0 + (batches.seconds_before if batches is not None else 0.0), 3)
            how = f"{seconds:.1f}s"
        entry = {"robust_accuracy": float(mask.mean()), "params": params, "n_samples": n, "seconds": seconds,
                 **reuse.stamp(settings, fp)}
        if keep is not None:
            entry.update(_kept_adversarial(plan.run_dir, name, y[:n], mask, keep, settings, fp))
        files.record(name, entry, mask, settings)
        files.save()
        if batches is not None:
            batches.discard()
        outcomes[name] = entry["robust_accuracy"]
        print(f"  {name}: robust accuracy {outcomes[name]:.4f} ({how})", flush=True)

    if opts.sanity:
        files.record_sanity(checks.run_sanity(model, plan, x, y, files, opts))
    files.save()
    return _summary(plan, files.results, outcomes, opts.sanity)


def _summary(plan: RunPlan, results: dict, outcomes: dict[str, Outcome], sanity_ran: bool) -> dict:
    """evaluate_run's summary of one run, a column of eval.analyses.attack_suite.report.paper_table."""
    return {"run_dir": plan.run_dir, "natural_accuracy": results["natural_accuracy"], "n_test": results["n_test"],
            "attacks": outcomes, "params": {k: p for k, (p, _) in plan.attacks.items()},
            "n_samples": {k: n for k, (_, n) in plan.attacks.items()}, "any_attack": results.get("any_attack"),
            "stages": {k: e["stages"] for k, e in results["attacks"].items() if "stages" in e},
            "warnings": list(results["sanity"].get("warnings", [])), "sanity_ran": sanity_ran}


def _kept_adversarial(run_dir: str, name: str, y: np.ndarray, robust: np.ndarray, keep: dict,
                      settings: dict, fp: str) -> dict:
    """What the entry of an attack of store.SAVE_ADV gains: the file of its x_adv
    (store.write_adversarial), and for AutoAttack the robust accuracy after each sub-attack
    ("stages", ``attacks.autoattack.robust_after_each``)."""
    from attacks import autoattack

    entry = {"adversarial_examples": store.write_adversarial(run_dir, name, y, robust, keep, settings, fp)}
    if "broken_by" in keep:
        entry["stages"] = autoattack.robust_after_each(keep["broken_by"])
        print(f"  {name}: robust after " + ", ".join(f"{a} {v:.4f}" for a, v in entry["stages"].items()),
              flush=True)
    return entry


def shard_mask(run_dir: str, opts: SuiteOptions, name: str, start: int, stop: int) -> np.ndarray:
    """The robust flags of attack ``name`` on test samples [start, stop) of a run, as
    ``evaluate_run`` computes them (``start`` on a batch boundary): the work of one shard when the
    samples are split across processes or Ray tasks. Merge the shards by sample index and pass them
    to ``evaluate`` in ``merged``."""
    if start % opts.batch_size:
        raise UsageError(f"a shard must start on a batch boundary ({opts.batch_size}), got {start}")
    plans, test_sets = plan_runs([run_dir], dataclasses.replace(opts, attacks=(name,)))
    x, y = test_sets[plans[0].config["dataset"]]
    params, n = plans[0].attacks[name]
    stop = min(stop, n)
    return robust_mask(plans[0].model, name, x[start:stop], y[start:stop], params, opts.batch_size,
                       seed=opts.seed, first_index=start)
