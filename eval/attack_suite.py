"""CLI: robust accuracy of trained runs under the paper's attacks (Tables 3-5).

    python -m eval.attack_suite --run_dir RUN                       # the paper's attacks, paper settings
    python -m eval.attack_suite --run_dir runs/adp --run_dir runs/cce   # side by side, one column each
    python -m eval.attack_suite --run_dir RUN --attacks pgd,spsa --n_samples 1000 --nb_iter 20

Per run: natural accuracy on the whole test set, then each attack on the first n test samples
(gradient attacks: all of them; SPSA, B&B and AutoAttack: the first 1000, as the paper), in
batches. A sample is robust if the ensemble is right on the clean AND the adversarial input.
Results go to RUN/eval/attack_suite.json (DESIGN.md, contract 7), rewritten atomically after every
finished attack; an attack already finished with the same params, n_samples and seed is reused
unless --force (the file holds one seed: another --seed replaces its results). The per-sample
robust flags go beside it (attack_suite_robust.npz), so the SPSA check can compare the same samples
in a later invocation. Prints a Markdown table shaped like the paper's, with the sanity checks of
eval/sanity.py (gradient masking) that failed as warnings under it.


Parts, top to bottom:

1. Flags, on a private ``FlagValues`` (see ``FLAGS``) and ``parse_flags``.
2. ``RunPlan`` and ``plan_runs``: flags + run folders -> what to run. Every bad input raises
   ``UsageError`` here, before anything is written.
3. ``check_bounds``: every x_adv inside the ε-ball and [0, 1]; a violation raises, never clipped.
4. ``predict``, ``robust_mask``: one attack over n samples, batch by batch, with progress.
5. The results files: ``read_results``, ``write_results``, the reuse rule ``reusable``.
6. ``evaluate_run``: one run, from natural accuracy to the sanity report.
7. ``attack_label``, ``markdown_table``: the paper's table.
8. ``main``, ``cli``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Optional, Union

import numpy as np
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of the progress

RESULTS_FILE = "attack_suite.json"
MASKS_FILE = "attack_suite_robust.npz"
TOLERANCE = 1e-6  # float32 slack of the bounds check
NAT_ROW = "Non-att (Nat. acc.)"

# --------------------------------------------------------------------------------------------------
# 1. Flags
# --------------------------------------------------------------------------------------------------

# A private FlagValues, not absl's global FLAGS: cce_tf.train defines --seed, --eps, ... too, and
# tests import both modules into one process. For the same reason main() parses argv itself
# instead of app.run (whose parse errors exit 1, not 2).
FLAGS = flags.FlagValues()
flags.DEFINE_multi_string("run_dir", None, "Run folder written by cce_tf.train; repeat to compare runs "
                          "side by side (one table column each).", flag_values=FLAGS)
flags.DEFINE_list("attacks", None, "Comma list of attacks (default: the paper's, "
                  "attacks.registry.PAPER_ATTACKS).", flag_values=FLAGS)
flags.DEFINE_integer("n_samples", None, "Attack at most the first N test samples (default: gradient "
                     "attacks all, SPSA / B&B / AutoAttack the first 1000, as the paper).",
                     flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 500, "Samples per attack batch.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Random seed, set before every attack.", flag_values=FLAGS)
flags.DEFINE_float("eps", None, "Override ε of every attack that has one (without --eps_iter, η keeps "
                   "the attack's default η/ε ratio, as in cce_tf.train).", flag_values=FLAGS)
flags.DEFINE_float("eps_iter", None, "Override the step size η of every attack that has one.",
                   flag_values=FLAGS)
flags.DEFINE_integer("nb_iter", None, "Override the steps k of every attack that has them.",
                     flag_values=FLAGS)
flags.DEFINE_bool("force", False, "Re-run attacks even if finished with the same settings.",
                  flag_values=FLAGS)
flags.DEFINE_bool("sanity", True, "Run the gradient-masking sanity checks (eval/sanity.py).",
                  flag_values=FLAGS)

_HELP = ("-h", "-?", "--help", "--helpshort", "--helpfull")


class UsageError(ValueError):
    """Bad input: printed as one line, exit code 2, nothing written."""


class BoundsError(ValueError):
    """An attack returned x_adv outside the ε-ball or [0, 1]: its result must not count."""


def parse_flags(argv: list[str]) -> None:
    """Parse ``argv`` (program name first) into ``FLAGS``, forgetting any earlier parse."""
    FLAGS.unparse_flags()
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r}")


# --------------------------------------------------------------------------------------------------
# 2. What to run
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunPlan:
    """One run folder and everything to do on it."""

    run_dir: str
    config: dict
    header: str                       # the table column, e.g. "CCE-RM_2"
    attacks: dict[str, tuple[dict, int]]  # name -> (params, n_samples)
    sanity_params: dict               # PGD's params, for the sanity checks
    sanity_n: int
    existing: dict                    # the run's attack_suite.json so far ({} if none)
    model: Any = None                 # the loaded Ensemble


def _jsonable(obj: Any) -> Any:
    """``obj`` as JSON gives it back (numpy scalars -> Python), so params compare equal after a
    round trip through the results file."""
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def attack_params(name: str, dataset: str, arch: str) -> dict:
    """The registry's paper params for ``name``, with --eps / --eps_iter / --nb_iter applied to
    the params it has. Raises UsageError if η ends up above ε."""
    from attacks import registry

    try:
        params = dict(registry.default_params(name, dataset, arch))
    except ValueError as e:  # a data set or arch the paper's settings do not cover
        raise UsageError(str(e)) from None
    if FLAGS.eps is not None and "eps" in params:
        if FLAGS.eps_iter is None and "eps_iter" in params:
            params["eps_iter"] = params["eps_iter"] * FLAGS.eps / params["eps"]
        params["eps"] = FLAGS.eps
    if FLAGS.eps_iter is not None and "eps_iter" in params:
        params["eps_iter"] = FLAGS.eps_iter
    if FLAGS.nb_iter is not None and "nb_iter" in params:
        params["nb_iter"] = FLAGS.nb_iter
    if "eps_iter" in params and params["eps_iter"] > params["eps"]:
        raise UsageError(f"{name}: step size eps_iter={params['eps_iter']:g} exceeds eps={params['eps']:g} (--eps_iter must be <= --eps)")
    return _jsonable(params)


def run_header(config: dict) -> str:
    """The paper's column name: method (or preset) and N, e.g. CCE-RM_2, ADV_1."""
    return f"{(config.get('preset') or config['method']).upper()}_{config['members']}"


def _check_flags() -> list[str]:
    """Validated flag values; returns the attack names."""
    from attacks import registry

    if not FLAGS.run_dir:
        raise UsageError("--run_dir is required (a run folder written by python -m cce_tf.train)")
    names = list(registry.PAPER_ATTACKS) if FLAGS.attacks is None else [a.strip() for a in FLAGS.attacks]
    if not names or not all(names):
        raise UsageError(f"--attacks is empty: choose from {', '.join(registry.ATTACKS)}")
    unknown = [a for a in names if a not in registry.ATTACKS]
    if unknown:
        raise UsageError(f"unknown attack {unknown[0]!r}: choose from {', '.join(registry.ATTACKS)}")
    for flag, low in (("n_samples", 1), ("batch_size", 1), ("nb_iter", 1)):
        value = getattr(FLAGS, flag)
        if value is not None and value < low:
            raise UsageError(f"--{flag} must be >= {low}, got {value}")
    for flag in ("eps", "eps_iter"):
        value = getattr(FLAGS, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{flag} must be > 0, got {value}")
    return list(dict.fromkeys(names))  # drop repeats, keep order


def read_results(run_dir: str) -> dict:
    """RUN/eval/attack_suite.json, or {} if there is none. Raises UsageError if unreadable."""
    path = os.path.join(run_dir, "eval", RESULTS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable ({e}): move it away to start afresh") from None
    if not isinstance(results, dict) or not isinstance(results.get("attacks", {}), dict):
        raise UsageError(f"{path} is not an attack-suite results file: move it away to start afresh")
    return results


def plan_runs() -> tuple[list[RunPlan], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check every flag and run folder and load the test sets, before anything runs or is written.

    :return: (one RunPlan per --run_dir, {dataset: (x_test, y_test)}).
    """
    from attacks import registry
    from cce_tf import data
    from cce_tf.ensemble import CONFIG_FILE, WEIGHTS_FILE, load_run, read_config
    from eval import sanity

    names = _check_flags()
    plans, test_sets = [], {}
    for run_dir in FLAGS.run_dir:
        run_dir = os.path.normpath(run_dir)
        for needed in (CONFIG_FILE, WEIGHTS_FILE):
            if not os.path.isfile(os.path.join(run_dir, needed)):
                raise UsageError(f"--run_dir {run_dir} is not a trained run: no {needed} "
                                 f"(write one with python -m cce_tf.train --out_dir {run_dir})")
        try:
            config = read_config(run_dir)
            dataset, arch = config["dataset"], config["arch"]
            config["method"], config["members"]  # noqa: B018 (the table header needs them)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--run_dir {run_dir}: bad {CONFIG_FILE} ({e!r})") from None
        if dataset not in test_sets:
            try:
                test_sets[dataset] = data.load(dataset, "test")
            except ValueError as e:  # DataError is a ValueError, as is an unknown name
                raise UsageError(f"--run_dir {run_dir}: {e}") from None
        n_test = len(test_sets[dataset][0])
        cap = min(n_test, FLAGS.n_samples or n_test)
        attacks = {}
        for name in names:
            n = registry.default_n_samples(name)
            attacks[name] = (attack_params(name, dataset, arch), min(cap, n or n_test))
        existing = read_results(run_dir)
        try:
            model = load_run(run_dir)
        except Exception as e:  # noqa: BLE001 - whatever a broken weights file raises, it is bad input
            raise UsageError(f"--run_dir {run_dir}: cannot load the ensemble ({type(e).__name__}: {e})") from None
        plans.append(RunPlan(run_dir=run_dir, config=config, header=run_header(config),
                             attacks=attacks, sanity_params=attack_params("pgd", dataset, arch),
                             sanity_n=min(sanity.SUBSET, cap), existing=existing, model=model))
    # Two runs with the same method and N: tell the columns apart by folder name.
    headers = [p.header for p in plans]
    for p in plans:
        if headers.count(p.header) > 1:
            p.header = f"{p.header} ({os.path.basename(p.run_dir)})"
    return plans, test_sets


# --------------------------------------------------------------------------------------------------
# 3. The bounds check
# --------------------------------------------------------------------------------------------------


def check_bounds(x: np.ndarray, x_adv: np.ndarray, eps: Optional[float], tol: float = TOLERANCE,
                 first_index: int = 0, what: str = "x_adv") -> None:
    """Raise BoundsError unless every x_adv is finite, within L∞ distance eps (+ tol) of x and in
    [0, 1] (± tol). Nothing is clipped: an attack that leaves the ball has a bug, and clipping would
    hide it while changing what was measured.

    :param first_index: test-set index of x[0], for the message.
    """
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv)
    if x_adv.shape != x.shape:
        raise BoundsError(f"{what} has shape {x_adv.shape}, x has {x.shape}")
    flat = x_adv.reshape(len(x_adv), -1).astype(np.float32)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise BoundsError(f"{what} of test sample {first_index + int(np.argmax(bad))} is not finite")
    if eps is not None:
        dist = np.abs(flat - x.reshape(len(x), -1)).max(axis=1, initial=0.0)
        worst = int(np.argmax(dist)) if len(dist) else 0
        if len(dist) and dist[worst] > eps + tol:
            raise BoundsError(f"{what} of test sample {first_index + worst} is {dist[worst]:.7g} from x "
                              f"in L∞, outside the ε-ball (eps={eps:.7g}, tolerance {tol:g})")
    lo, hi = flat.min(axis=1, initial=0.0), flat.max(axis=1, initial=1.0)
    out = (lo < -tol) | (hi > 1 + tol)
    if out.any():
        i = int(np.argmax(out))
        raise BoundsError(f"{what} of test sample {first_index + i} leaves [0, 1] "
                          f"(min {lo[i]:.7g}, max {hi[i]:.7g}, tolerance {tol:g})")


# --------------------------------------------------------------------------------------------------
# 4. Predictions and one attack
# --------------------------------------------------------------------------------------------------

def predict(model: Callable, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted labels, batch by batch (argmax of eval.common.predict's compiled logits)."""
    from eval import common

    return common.predict(model, x, batch_size).argmax(axis=-1)


def robust_mask(model: Callable, name: str, x: np.ndarray, y: np.ndarray, params: dict,
                batch_size: int = 500, progress: Optional[str] = None) -> np.ndarray:
    """Per sample: the model is right on x AND on the attack's x_adv. Only samples it gets right
    are attacked (the others cannot count as robust), as AutoAttack's own evaluation does.

    :param progress: a label to print a progress line per batch under, or None for silence.
    :raises BoundsError: some x_adv outside the ε-ball or [0, 1].
    :raises attacks.errors.AttackUnavailable: the attack's library is missing.
    """
    from attacks import registry

    robust = np.zeros(len(x), bool)
    t0 = time.time()
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        idx = np.flatnonzero(predict(model, xb, batch_size) == yb)
        if idx.size:
            x_adv = registry.run(name, model, xb[idx], yb[idx], **params)
            # Checked on the whole returned batch before any of it counts.
            check_bounds(xb[idx], x_adv, params.get("eps"), first_index=start, what=f"{name} x_adv")
            robust[start + idx] = predict(model, np.asarray(x_adv, np.float32), batch_size) == yb[idx]
        if progress:
            done = min(start + batch_size, len(x))
            print(f"  {progress}: {done}/{len(x)} samples, robust so far "
                  f"{robust[:done].mean():.3f}, {time.time() - t0:.1f}s", flush=True)
    return robust


# --------------------------------------------------------------------------------------------------
# 5. The results files
# --------------------------------------------------------------------------------------------------


def _signature(params: dict, n_samples: int, seed: int) -> str:
    return json.dumps({"params": params, "n_samples": n_samples, "seed": seed}, sort_keys=True)


def reusable(entry: Optional[dict], params: dict, n_samples: int, same_seed: bool) -> bool:
    """A finished result of exactly these settings."""
    return (same_seed and isinstance(entry, dict) and "robust_accuracy" in entry
            and entry.get("params") == params and entry.get("n_samples") == n_samples)


def _replace(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
    tmp = path + ".tmp"
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)  # readers never see a half-written file


def write_results(run_dir: str, results: dict, masks: dict[str, np.ndarray]) -> None:
    """RUN/eval/attack_suite.json and the per-sample robust flags, each replaced atomically
    (flags first: a flag set names the settings it belongs to, see ``_signature``)."""
    out = os.path.join(run_dir, "eval")
    os.makedirs(out, exist_ok=True)
    _replace(os.path.join(out, MASKS_FILE), lambda f: np.savez(f, **masks), "wb")
    _replace(os.path.join(out, RESULTS_FILE), lambda f: json.dump(results, f, indent=2))


def read_masks(run_dir: str) -> dict[str, np.ndarray]:
    path = os.path.join(run_dir, "eval", MASKS_FILE)
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):  # missing or unreadable: only check 3 of the sanity report needs it
        return {}


def mask_for(masks: dict, name: str, params: dict, n_samples: int, seed: int) -> Optional[np.ndarray]:
    """The stored robust flags of attack ``name`` if they belong to these settings."""
    if name in masks and str(masks.get(name + "__key")) == _signature(params, n_samples, seed):
        return masks[name]
    return None


# --------------------------------------------------------------------------------------------------
# 6. One run
# --------------------------------------------------------------------------------------------------

Outcome = Union[float, str, None]  # robust accuracy, "skipped", or None (not available)


def evaluate_run(plan: RunPlan, x: np.ndarray, y: np.ndarray) -> dict:
    """Natural accuracy, every attack, the sanity report; writes the results as they come.

    :return: {"natural_accuracy", "attacks": {name: Outcome}, "params": {name: params},
        "warnings": [...], "sanity_ran": bool} for the table.
    """
    import keras
    from attacks.errors import AttackUnavailable

    seed, batch_size = FLAGS.seed, FLAGS.batch_size
    print(f"== {plan.header}: {plan.run_dir} ({plan.config['dataset']}, {plan.config['arch']})", flush=True)
    model = plan.model

    t0 = time.time()
    natural = float(np.mean(predict(model, x, batch_size) == y))
    print(f"  natural accuracy {natural:.4f} on {len(x)} test samples ({time.time() - t0:.1f}s)", flush=True)

    old = plan.existing
    same_seed = old.get("seed", seed) == seed
    attacks = dict(old.get("attacks", {})) if same_seed else {}
    masks = read_masks(plan.run_dir) if same_seed else {}
    if not same_seed and old.get("attacks"):
        print(f"  note: the results file holds seed {old['seed']}; its results are replaced by seed {seed}'s")
    results = {"run_dir": plan.run_dir, "dataset": plan.config["dataset"], "seed": seed,
               "natural_accuracy": natural, "n_test": int(len(x)), "attacks": attacks,
               "sanity": old.get("sanity", {"warnings": []}) if same_seed else {"warnings": []}}
    write_results(plan.run_dir, results, masks)

    outcomes: dict[str, Outcome] = {}
    for name, (params, n) in plan.attacks.items():
        entry = attacks.get(name)
        if not FLAGS.force and reusable(entry, params, n, same_seed):
            outcomes[name] = entry["robust_accuracy"]
            print(f"  {name}: reused, robust accuracy {entry['robust_accuracy']:.4f} on {n} samples "
                  f"({entry['seconds']:.1f}s when run; --force to re-run)", flush=True)
            continue
        print(f"  {name}: {n} samples, {params}", flush=True)
        keras.utils.set_random_seed(seed)  # per attack: its result does not depend on what ran before
        t0 = time.time()
        try:
            mask = robust_mask(model, name, x[:n], y[:n], params, batch_size, progress=name)
        except AttackUnavailable as e:
            print(f"  {name}: skipped: {e}", flush=True)
            outcomes[name] = "skipped"
            if "robust_accuracy" not in (entry or {}):  # a skip never overwrites a finished result
                attacks[name] = {"skipped": str(e)}
                write_results(plan.run_dir, results, masks)
            continue
        attacks[name] = {"robust_accuracy": float(mask.mean()), "params": params, "n_samples": n,
                         "seconds": round(time.time() - t0, 3)}
        masks[name], masks[name + "__key"] = mask, np.array(_signature(params, n, seed))
        write_results(plan.run_dir, results, masks)
        outcomes[name] = attacks[name]["robust_accuracy"]
        print(f"  {name}: robust accuracy {outcomes[name]:.4f} ({attacks[name]['seconds']:.1f}s)", flush=True)

    if FLAGS.sanity:
        results["sanity"] = run_sanity(model, plan, x, y, results, masks)
        write_results(plan.run_dir, results, masks)
    return {"natural_accuracy": natural, "attacks": outcomes,
            "params": {k: p for k, (p, _) in plan.attacks.items()},
            "warnings": list(results["sanity"].get("warnings", [])), "sanity_ran": FLAGS.sanity}


def run_sanity(model: Callable, plan: RunPlan, x: np.ndarray, y: np.ndarray, results: dict,
               masks: dict) -> dict:
    """eval/sanity.py's checks: PGD on the first ``plan.sanity_n`` samples (reused from the results
    file when its settings match), and SPSA against PGD on the samples both attacked."""
    import keras
    from eval import sanity

    params, m, seed = plan.sanity_params, plan.sanity_n, FLAGS.seed
    old = results.get("sanity", {})
    same = (not FLAGS.force and "eps_sweep" in old and old.get("params") == params
            and old.get("n_samples") == m and results.get("seed") == seed)

    def pgd_robust(p: dict) -> np.ndarray:
        keras.utils.set_random_seed(seed)
        t0 = time.time()
        mask = robust_mask(model, "pgd", x[:m], y[:m], p, FLAGS.batch_size)
        print(f"  sanity: PGD eps={p['eps']:.4g} eta={p['eps_iter']:.4g} k={p['nb_iter']} on {m} "
              f"samples: robust {mask.mean():.3f} ({time.time() - t0:.1f}s)", flush=True)
        return mask

    pair = None
    attacks = results["attacks"]
    if all("robust_accuracy" in attacks.get(a, {}) for a in ("spsa", "pgd")):
        got = [mask_for(masks, a, attacks[a]["params"], attacks[a]["n_samples"], seed)
               for a in ("spsa", "pgd")]
        pair = None if any(g is None for g in got) else tuple(got)
    t0 = time.time()
    report = sanity.report(pgd_robust, params, previous=old if same else None, spsa_vs_pgd=pair)
    if "spsa" in attacks and pair is None:
        report["spsa_vs_pgd"] = {"skipped": "needs finished spsa and pgd results with their "
                                            f"per-sample flags ({MASKS_FILE}); re-run them with --force"}
    report.update(n_samples=m, seed=seed, params=params,
                  seconds=old.get("seconds", 0.0) if same else round(time.time() - t0, 3))
    status = "reused" if same else "done"
    print(f"  sanity checks {status}: {len(report['warnings'])} warning(s)", flush=True)
    return report


# --------------------------------------------------------------------------------------------------
# 7. The table
# --------------------------------------------------------------------------------------------------

_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "bim": "BIM", "mim": "MIM", "mul_pgd": "mul-PGD",
           "mul_bim": "mul-BIM", "mul_mim": "mul-MIM", "spsa": "SPSA", "bb_pgd1": "B&B (wPGD1)",
           "bb_pgd2": "B&B (wPGD2)", "autoattack": "Auto-Attack"}
_WITH_K = ("pgd", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")


def attack_label(name: str, ks: list[int]) -> str:
    """The paper's row label, e.g. "PGD k = 100"; runs with different k show them all: "k = 100/250"."""
    label = _LABELS.get(name, name)
    if name in _WITH_K and ks:
        label += " k = " + "/".join(str(k) for k in sorted(set(ks)))
    return label


def _cell(value: Outcome) -> str:
    if isinstance(value, float):
        return f"{100 * value:.1f}"
    return value or "n/a"


def markdown_table(columns: list[tuple[str, dict]]) -> str:
    """Rows: natural accuracy, then each attack; one column per run; percentages, one decimal.

    :param columns: (header, evaluate_run's summary) per run.
    """
    names = list(dict.fromkeys(n for _, s in columns for n in s["attacks"]))
    lines = ["| Attack | " + " | ".join(h for h, _ in columns) + " |",
             "|---|" + "---:|" * len(columns),
             f"| {NAT_ROW} | " + " | ".join(_cell(s["natural_accuracy"]) for _, s in columns) + " |"]
    for name in names:
        ks = [s["params"][name]["nb_iter"] for _, s in columns
              if name in s["params"] and "nb_iter" in s["params"][name]]
        cells = [_cell(s["attacks"].get(name)) for _, s in columns]
        lines.append(f"| {attack_label(name, ks)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_report(plans: list[RunPlan], columns: list[tuple[str, dict]]) -> None:
    """The table, the settings under it, and the failed sanity checks as warnings beside it."""
    print()
    print(markdown_table(columns))
    print()
    for plan in plans:
        eps = sorted({p["eps"] for p, _ in plan.attacks.values() if "eps" in p})
        by_n: dict[int, list[str]] = {}
        for name, (_, n) in plan.attacks.items():
            by_n.setdefault(n, []).append(name)
        samples = "; ".join(f"{n} samples: {', '.join(names)}" for n, names in by_n.items())
        print(f"{plan.header}: {plan.run_dir}, eps {'/'.join(f'{e:.4g}' for e in eps)}, {samples}")
    for header, s in columns:
        for w in s["warnings"]:
            print(f"WARNING ({header}, sanity): {w}")
        if s["sanity_ran"] and not s["warnings"]:
            print(f"{header}: sanity checks passed")


# --------------------------------------------------------------------------------------------------
# 8. Entry points
# --------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """Parse ``argv`` (program name first), evaluate every run, print the table."""
    parse_flags(argv)
    plans, test_sets = plan_runs()
    columns = []
    for plan in plans:
        x, y = test_sets[plan.config["dataset"]]
        columns.append((plan.header, evaluate_run(plan, x, y)))
    print_report(plans, columns)


def cli(argv: Optional[list[str]] = None) -> int:
    """``main`` with exit codes: 0 done, 2 bad input (one line, nothing written), 1 an attack
    returned an x_adv outside its bounds (the results before it are kept)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in _HELP for a in argv[1:]):
        print(__doc__.split("\nParts")[0] + "\nFlags:\n" + FLAGS.get_help())
        return 0
    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BoundsError as e:
        print(f"error: {e}; this attack's result was not recorded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # the sanity sweep retraces PGD once per ε, on purpose
    sys.exit(cli())
