"""The attack suite (Tables 3-5): robust accuracy of a run under the paper's attacks, an analysis of
eval.analyses.ANALYSES (this module: its NAME, Options, evaluate, stored, rows, job options, cost
and table). Its CLI is eval/attack_suite.py; one concept per module, in the order a run
goes through them:

    plan     SuiteOptions and their checks; per run, the attacks' params and sample counts, which
             stored results are reused; the shards of an attack (the Ray executor's)
    engine   one attack over n samples in seeded batches: bounds checks, robust flags, worst case
    store    attack_suite.json, its robust-flags npz, the adversarial examples, stale/ copies:
             the only code that reads or writes them, merging under the results folder's lock
    checks   eval/sanity.py's checks and canaries on the suite's flags
    run      evaluate / evaluate_run: the flat loop over the attacks; shard_mask
    report   the paper-shaped Markdown table and the lines under it

Usage::

    from eval.analyses import attack_suite
    r = attack_suite.evaluate("runs/cce_rm", attack_suite.Options(attacks=("pgd", "mim"), n_samples=1000))
    r["attacks"]["pgd"]["robust_accuracy"], r["any_attack"], r["flags"]["pgd"]   # per-sample, numpy
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from eval.analyses.attack_suite.plan import SuiteOptions
from eval.target import Target

NAME = "attack_suite"
SCOPE = "run"          # one job per run (studies.plan)
Options = SuiteOptions

# What one sample of SPSA and of AutoAttack costs, in PGD steps, measured side by side in one job
# (results/headline/logs/attack_suite__fashion_mnist_cnn_adv-en_n2_s0.log, N = 2 CNN): PGD k = 40 on
# 500 samples took 23.9 s, SPSA (50 iterations of 128 perturbations) on 50 samples 98.3 s, standard
# AutoAttack on 100 samples 1085.6 s. Counting model calls misses both ways: SPSA's forward-only
# batches cost a quarter of a step each, and AutoAttack's calls through the PyTorch bridge (with
# FAB-T's and Square's) four times its 2,250 counted steps.
SPSA_STEPS_PER_ITER = 33      # 98.3 / 23.9 x (40 x 500) / 50 samples / 50 iterations
AUTOATTACK_STEPS = 9100       # 1085.6 / 23.9 x (40 x 500) / 100 samples
# The cascade (attacks/cascade.py): after cross-entropy PGD about 0.65 of the images of a standard
# run are left (headline ADV-EN_2, ADP_2, CCE-RM_2: PGD-40 at 62-68 %); APGD-CE's 100 and APGD-T's
# 9 x 100 iterations run on what is left of those.
CASCADE_SURVIVORS = 0.7
APGD_STEPS = 1000
# The gradient attacks a study's undefended canary gets (eval/sanity.py check 8; studies.plan.CANARY).
CANARY_ATTACKS = ("fgsm", "pgd", "pgd_margin", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")


def evaluate(target, options: SuiteOptions = SuiteOptions(), merged: Optional[dict] = None) -> dict:
    """The suite on one run (``target``: an eval.target.Target, a run folder or a model file),
    written to its results folder; returns ``stored(target)``: attack_suite.json's dict and
    ``flags`` (attack -> per-sample robust flags). ``merged``: eval.analyses.attack_suite.run's."""
    from eval.analyses.attack_suite import run

    target = target if isinstance(target, Target) else Target(target, options.dataset, options.trust_model)
    run.evaluate([target], options, merged=merged)
    return stored(target)


def stored(target: Target) -> Optional[dict]:
    """attack_suite.json's dict on the weights the run holds now, with ``flags``: the per-sample
    robust flags of its attacks (and ``natural``: clean correctness); None where there is none."""
    from eval.analyses.attack_suite import store

    fp = target.fingerprint
    r = store.results_on(target.path, fp)
    return dict(r, flags=store.masks_on(target.path, fp)) if r else None


def sample_flags(result: dict, key: str) -> Optional[np.ndarray]:
    """The per-sample robust flags behind row ``key`` of ``rows(result)`` (an attack, or any_attack),
    for the observed-disagreement floor of a claim between two runs (studies.results); None where
    there are none."""
    from eval import reuse
    from eval.analyses.attack_suite.engine import any_attack_flags

    masks = result.get("flags", {})
    if key != "any_attack":
        return masks.get(key)
    found = any_attack_flags(reuse.same_weights(result.get("attacks", {}), result[reuse.KEY]), masks)
    return None if found is None else found[1]


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows: natural accuracy, every attack on file (``attacks`` first, in their
    order: a run's worst case is one number wherever the run appears, and an attack another study ran
    on it is shown too) and the per-sample worst case over them (any_attack)."""
    from eval import reuse
    from eval.analyses.attack_suite.engine import any_attack

    out = [dict(evaluation=NAME, attack="natural", n=result["n_test"], metric="natural_accuracy",
                value=result["natural_accuracy"], key="natural")]
    entries = reuse.same_weights(result.get("attacks", {}), result[reuse.KEY])
    on_file = [a for a in [*attacks, *entries] if "robust_accuracy" in entries.get(a, {})]
    for name in dict.fromkeys(on_file):
        e, p = entries[name], entries[name]["params"]
        steps = dict(eps_iter=p.get("eps_iter"), nb_iter=p.get("nb_iter"))
        if name == "cascade":   # a k and η per stage: its row names them (studies.results)
            from attacks.cascade import stage_ks
            steps = dict(over=",".join(f"{s}:{k}" for s, k in stage_ks(p["nb_iter"], p["mul_nb_iter"]).items()))
        out.append(dict(evaluation=NAME, attack=name, eps=p.get("eps"), **steps, n=e["n_samples"],
                        metric="robust_accuracy", value=e["robust_accuracy"], key=name))
    worst = any_attack({a: entries[a] for a in on_file}, result.get("flags", {}))
    if worst:
        out.append(dict(evaluation=NAME, attack="any_attack", n=worst["n_samples"], metric="robust_accuracy",
                        value=worst["robust_accuracy"], key="any_attack", over=",".join(worst["attacks"])))
    return out


def job_options(scale, part, seed: int, members: int, earlier: Optional[dict]) -> dict:
    """The options of a study's job on one run (studies.plan): the attacks of every part that
    evaluates it, in first-seen order (``earlier``: the options of the parts before), the sanity
    checks where the scale or a full evaluation asks for them, the scale's subsets of those attacks."""
    names = list((earlier or {}).get("attacks", []))
    names += [a for a in scale.attacks_for(part.attacks, part.full_evaluation) if a not in names]
    sanity = bool((earlier or {}).get("sanity")) or scale.sanity or part.full_evaluation
    return _options(scale, seed, names, sanity)


def canary_options(scale, seed: int, runs: Sequence[dict], earlier: Optional[dict]) -> Optional[dict]:
    """The options of a study's undefended canary (studies.plan.CANARY) of one data set and arch,
    from those of the ``runs`` the suite attacks there: their gradient attacks (CANARY_ATTACKS), None
    without PGD among them. ``earlier``: the options the canary's run folder has from its own part."""
    names = [a for o in runs for a in o["attacks"] if a in CANARY_ATTACKS]
    if "pgd" not in names:
        return None
    have = list((earlier or {}).get("attacks", []))
    have += [a for a in dict.fromkeys(names) if a not in have]
    return _options(scale, seed, have, bool((earlier or {}).get("sanity")) or scale.sanity)


def _options(scale, seed: int, names: list[str], sanity: bool) -> dict:
    subsets = {a: n for a, n in scale.subsets if a in names}
    return dict(attacks=names, n_samples=scale.n_samples, seed=seed, nb_iter=scale.attack_nb_iter,
                mul_nb_iter=scale.mul_nb_iter, sanity=sanity, **({"subsets": subsets} if subsets else {}),
                **scale.draw(seed))


def cost(options: dict, run_config: dict) -> float:
    """Member forward-backward passes: attack steps × samples × members (each ensemble step runs
    every member), from the attacks' settings (attacks.registry); with the sanity checks, PGD at
    each radius of the sweep, at 2k, and restarted margin PGD."""
    from attacks import registry
    from eval import batches, sanity

    n_members, ds, arch = run_config["members"], run_config["dataset"], run_config["arch"]
    n_test = batches.test_size(ds, options.get("n_samples"))
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
        if name == "cascade":  # PGD on all; the later stages on the survivors (APGD-T: 9 targets)
            k = p["nb_iter"] + CASCADE_SURVIVORS * (p["nb_iter"] + 9 * p["mul_nb_iter"] + APGD_STEPS)
        steps += k * min(n_test, options.get("subsets", {}).get(name, 10 ** 9),
                         registry.default_n_samples(name) or 10 ** 9)
    if options.get("sanity"):
        k = registry.default_params("pgd", ds, arch, nb_iter=options.get("nb_iter"))["nb_iter"]
        eps = registry.EPSILONS[ds]["eps"]
        steps += (len(sanity.sweep_eps(eps)) + 2 + registry.RESTARTS) * k * min(n_test, sanity.SUBSET)
    return float(steps * n_members)


def sanity(result: dict) -> dict:
    """The sanity report of a result (eval/sanity.py's checks, the canaries): the masking checks a
    study's page shows beside its tables (studies.results)."""
    return result.get("sanity", {})


def plan_shards(run_dir: str, options: SuiteOptions, slots: int, shard_size: Optional[int] = None) -> list:
    """(attack, start, stop) of every shard of a job (studies.ray_executor): plan.plan_shards."""
    from eval.analyses.attack_suite import plan

    return plan.plan_shards(run_dir, options, slots, shard_size)


def shard(run_dir: str, options: SuiteOptions, name: str, start: int, stop: int):
    """The robust flags of one shard: run.shard_mask; merged, they go to ``evaluate``'s ``merged``."""
    from eval.analyses.attack_suite import run

    return run.shard_mask(run_dir, options, name, start, stop)


def table(result: dict) -> str:
    """The paper-shaped table of one run (Tables 3-5), from ``stored``'s dict."""
    from eval.analyses.attack_suite import report

    summary = {"run_dir": result["run_dir"], "natural_accuracy": result["natural_accuracy"],
               "n_test": result["n_test"],
               "attacks": {n: e.get("robust_accuracy", "skipped") for n, e in result["attacks"].items()},
               "params": {n: e.get("params", {}) for n, e in result["attacks"].items()},
               "n_samples": {n: e.get("n_samples") for n, e in result["attacks"].items()},
               "any_attack": result.get("any_attack"),
               "stages": {n: e["stages"] for n, e in result["attacks"].items() if "stages" in e},
               "warnings": list(result.get("sanity", {}).get("warnings", [])), "sanity_ran": True}
    return report.paper_table([(result.get("label") or result["run_dir"], summary)])
