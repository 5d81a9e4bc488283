"""eval/sanity.py's checks as the attack suite runs them on a run: the gradient-masking checks
(PGD's ε sweep and doubled k, SPSA against PGD, the stronger attacks below PGD, the any-attack row
against a restarted margin PGD), and the two canaries and the any-attack row, which come from the
flags of the attacks run and so are brought up to date before every write of the results.

Usage::

    from eval.analyses.attack_suite import checks
    checks.summarise(config, results, masks)     # results["any_attack"] and the canaries, in place
    report = checks.run_sanity(model, plan, x, y, files, opts)   # the "sanity" entry of the results
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from attacks.settings import EPSILONS, RESTARTS
from eval import reuse, sanity
from eval.analyses.attack_suite.engine import any_attack, robust_mask, worst_case
from eval.analyses.attack_suite.plan import RunPlan, SuiteOptions, reuse_settings
from eval.analyses.attack_suite.store import MASKS_FILE, RESTARTS_MASK

if TYPE_CHECKING:
    from eval.analyses.attack_suite.store import SuiteFiles


def canary_checks(config: dict, attacks: dict, masks: dict) -> dict:
    """eval/sanity.py's canaries on the flags of the attacks run: single-step against iterative, and,
    for an undefended run (method NAT), PGD at the data set's ε must leave it below 10 %."""
    done = {n: masks[n] for n, e in attacks.items() if n in masks and "robust_accuracy" in e}
    pgd = attacks.get("pgd", {}).get("params")
    at_eps = pgd is not None and pgd["eps"] == EPSILONS[config["dataset"]]["eps"]
    return sanity.canaries(done, undefended=config.get("method") == "nat" and at_eps, pgd_params=pgd)


def summarise(config: dict, results: dict, masks: dict) -> None:
    """What depends on every attack of the file: the canaries in its sanity report and the
    any-attack row (the per-sample worst case over the attacks with flags)."""
    attacks = results["attacks"]
    results["sanity"] = sanity.with_canaries(results["sanity"], canary_checks(config, attacks, masks))
    worst = any_attack(attacks, {n: masks[n] for n in attacks if n in masks})
    results.pop("any_attack", None)
    if worst:
        results["any_attack"] = worst


def _any_vs_restarts(model: Callable, files: "SuiteFiles", x: np.ndarray, y: np.ndarray, params: dict,
                     m: int, opts: SuiteOptions) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(any-attack flags, restarted margin PGD's flags) on the first samples both cover, for sanity
    check 6. The restarted PGD's flags are reused from the files when they belong to these weights
    and settings, else computed and added to them."""
    worst = files.results.get("any_attack")
    if not worst:
        return None
    worst_mask = worst_case(files.masks, worst["attacks"], m)
    n = len(worst_mask)
    p = {**params, "restarts": RESTARTS}
    settings = reuse_settings(p, n, opts.seed, opts.draw)
    restarts = None if opts.force else files.flags_for(RESTARTS_MASK, settings)
    if restarts is None:
        t0 = time.time()
        restarts = robust_mask(model, "pgd_margin_restarts", x[:n], y[:n], p, opts.batch_size, seed=opts.seed)
        print(f"  sanity: margin-loss PGD, {RESTARTS} random starts, k={p['nb_iter']} on {n} samples: "
              f"robust {restarts.mean():.3f}, any attack {worst_mask.mean():.3f} ({time.time() - t0:.1f}s)",
              flush=True)
    files.set_flags(RESTARTS_MASK, restarts, settings)
    return worst_mask, restarts


def run_sanity(model: Callable, plan: RunPlan, x: np.ndarray, y: np.ndarray, files: "SuiteFiles",
               opts: SuiteOptions) -> dict:
    """eval/sanity.py's checks: PGD on the first ``plan.sanity_n`` samples (reused from the results
    file when eval.reuse allows), and SPSA against PGD on the samples both attacked."""
    params, m, seed = plan.sanity_params, plan.sanity_n, opts.seed
    settings = reuse_settings(params, m, seed, opts.draw)
    old = files.results.get("sanity", {})
    same = "eps_sweep" in old and reuse.decide(old, files.fp, settings, opts.force).reuse

    def pgd_robust(p: dict) -> np.ndarray:
        t0 = time.time()
        mask = robust_mask(model, "pgd", x[:m], y[:m], p, opts.batch_size, seed=seed)
        print(f"  sanity: PGD eps={p['eps']:.4g} eta={p['eps_iter']:.4g} k={p['nb_iter']} on {m} "
              f"samples: robust {mask.mean():.3f} ({time.time() - t0:.1f}s)", flush=True)
        return mask

    masks, attacks = files.masks, files.attacks
    pair = None
    if all("robust_accuracy" in attacks.get(a, {}) for a in ("spsa", "pgd")):
        got = [masks.get(a) for a in ("spsa", "pgd")]
        pair = None if any(g is None for g in got) else tuple(got)
    stronger = {a: masks[a] for a in sanity.STRONGER if a in masks and "robust_accuracy" in attacks.get(a, {})}
    t0 = time.time()
    report = sanity.report(pgd_robust, params, previous=old if same else None, spsa_vs_pgd=pair,
                           below_pgd=(stronger, masks["pgd"]) if stronger and "pgd" in masks else None,
                           any_vs_restarts=_any_vs_restarts(model, files, x, y, params, m, opts))
    if "spsa" in attacks and pair is None:
        report["spsa_vs_pgd"] = {"skipped": "needs finished spsa and pgd results with their "
                                            f"per-sample flags ({MASKS_FILE}); re-run them with --force"}
    report.update(n_samples=m, seed=seed, params=params,
                  seconds=old.get("seconds", 0.0) if same else round(time.time() - t0, 3),
                  **reuse.stamp(settings, fp=files.fp))
    status = "reused" if same else "done"
    print(f"  sanity checks {status}: {len(report['warnings'])} warning(s)", flush=True)
    return report
