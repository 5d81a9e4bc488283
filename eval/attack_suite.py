"""CLI: robust accuracy of trained runs under the paper's attacks (Tables 3-5).

    python -m eval.attack_suite --run_dir RUN                       # the paper's attacks, paper settings
    python -m eval.attack_suite --run_dir runs/adp --run_dir runs/cce   # side by side, one column each
    python -m eval.attack_suite --run_dir RUN --attacks pgd,spsa --n_samples 1000 --nb_iter 20
    python -m eval.attack_suite --run_dir my_model.keras --dataset fashion_mnist   # any classifier

--run_dir also takes a model file in place of a run folder: a .keras file or a TensorFlow
SavedModel folder of any classifier (logits out, [0, 1] NHWC float32 in; e.g. written by
python -m cce_tf.export). Its data set is --dataset, or the one data set its input shape and class
count fit; its results go to the sibling folder PATH.eval/, stamped with the file's SHA-256.

Per run: natural accuracy on the whole test set, then each attack on the first n test samples
(gradient attacks: all of them; SPSA, B&B and AutoAttack: the first 1000, as the paper), in
batches. A sample is robust if the ensemble is right on the clean AND the adversarial input.
Results go to RUN/eval/attack_suite.json (DESIGN.md, contract 7), rewritten atomically after every
finished attack, with the weights' SHA-256 on every entry. A finished attack is reused only when it
was computed on the weights the run holds now with the same params, n_samples and seed (eval.reuse,
the rule of every tool); --force recomputes it. The file only ever describes one set of weights and
one seed: results of others leave it (a copy goes to RUN/eval/stale/). The per-sample robust flags
go beside it (attack_suite_robust.npz): they give the "any attack" row, the per-sample worst case
over the attacks run, and let the SPSA check compare the same samples in a later invocation. Several
invocations may attack one run at once (e.g. --attacks pgd and --attacks mim): each writes under the
results folder's lock (cce_tf.run_lock), reading both files again first, so every finished attack
is kept. Prints a Markdown table shaped like the paper's, with the sanity checks of eval/sanity.py
(gradient masking) that failed as warnings under it.

    from eval.attack_suite import SuiteOptions, evaluate
    columns = evaluate(["runs/cce_rm"], SuiteOptions(attacks=("pgd", "mim"), n_samples=1000))


Parts, top to bottom:

1. Flags, on the tool's own ``FlagValues`` (cce_tf.cli_flags); ``SuiteOptions``, the same
   settings as one explicit argument.
2. ``RunPlan`` and ``plan_runs``: options + run folders -> what to run. Every bad input raises
   ``UsageError`` here, before anything is written.
3. ``check_bounds``: every x_adv inside the ε-ball and [0, 1]; a violation raises, never clipped.
4. ``robust_mask``: one attack over n samples, batch by batch, with progress.
5. The results files: ``read_results``, ``write_results``, ``mask_for``, ``adopt`` (what the files
   hold, merged into this invocation's results), ``any_attack``.
6. ``evaluate_run``: one run, from natural accuracy to the sanity report.
7. ``attack_label``, ``markdown_table``: the paper's table.
8. ``evaluate`` (the library entry point), ``main``, ``cli``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Union

import numpy as np
from absl import flags

from attacks.settings import ATTACK_NAMES, DEFAULT_ATTACKS, EPSILONS
from cce_tf import atomic, cli_flags, run_lock
from cce_tf.cli_flags import UsageError  # bad input: one line, exit code 2, nothing written
from eval import reuse
from eval.batches import predict_labels
from eval.flags import MODEL_FILE_NOTE, check_radius, define_dataset_flag
from eval.progress import Progress, quiet_tf
from eval.target import Target, results_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of the progress

RESULTS_FILE = "attack_suite.json"
MASKS_FILE = "attack_suite_robust.npz"
TOLERANCE = 1e-6  # float32 slack of the bounds check
NAT_ROW = "Non-att (Nat. acc.)"
ADVERSARIAL_DIR = "adversarial"   # RUN/eval/adversarial/NAME.npz: x_adv of the attacks in SAVE_ADV
# The attacks whose x_adv are kept: AutoAttack takes the longest to re-run, and its examples are
# what users re-check or transfer. The others recompute in seconds to minutes.
SAVE_ADV = ("autoattack",)
NATURAL = "natural"  # the key of the clean-correctness flags in MASKS_FILE
RESTARTS_MASK = "sanity_pgd_margin_restarts"   # sanity check 6's flags in MASKS_FILE (not a table row)

# --------------------------------------------------------------------------------------------------
# 1. Flags
# --------------------------------------------------------------------------------------------------

# The tool's own FlagValues (cce_tf.cli_flags): the flags only fill ``SuiteOptions``; every
# function below takes its settings as arguments.
FLAGS = cli_flags.new_flags()
cli_flags.define_shared(
    FLAGS, "run_dir", "n_samples", "batch_size", "seed", "eps", "eps_iter", "nb_iter", "force", "verbose",
    "trust_model",
    note={"run_dir": MODEL_FILE_NOTE + " One table column each.",
          "n_samples": "Default: gradient attacks all, SPSA / B&B / AutoAttack the first 1000, as the paper.",
          "eps": "Also moves every radius defined relative to ε (B&B's start radii).",
          "nb_iter": "Of PGD, BIM and MIM (default: the paper's k = 100 / 250; SPSA's 50 steps and the "
                     "multi-targeted k = 20 stay)."})
define_dataset_flag(FLAGS)
cli_flags.define_choice_list(FLAGS, "attacks", None, ATTACK_NAMES,
                             "Comma list of attacks (default: the paper's and PGD on the margin loss, "
                             "attacks.settings.DEFAULT_ATTACKS).")
flags.DEFINE_integer("mul_nb_iter", None, "Override the steps k of the multi-targeted attacks (the "
                     "paper's k = 20).", lower_bound=1, upper_bound=100_000, flag_values=FLAGS)
flags.DEFINE_bool("sanity", True, "Run the gradient-masking sanity checks (eval/sanity.py).",
                  flag_values=FLAGS)


class BoundsError(ValueError):
    """An attack returned x_adv outside the ε-ball or [0, 1]: its result must not count."""


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """What the suite runs on every run folder (the CLI's flags, as one explicit argument).

    attacks: names of ``attacks.registry.ATTACKS`` (None: the paper's list); n_samples: at most the
    first N test samples per attack (None: the paper's counts); eps / eps_iter / nb_iter: overrides
    as ``attacks.registry.default_params`` applies them; force: recompute reusable results;
    dataset: the data set of model files given in place of run folders (eval.target.Target);
    trust_model: load SavedModels among them without eval.model_scan's check;
    verbose: 0 quiet, 1 a progress bar per attack, 2 a line per finished attack.
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
    subsets: tuple[tuple[str, int], ...] = ()   # (attack, at most this many samples): a scale's cut

    @classmethod
    def from_flags(cls) -> "SuiteOptions":
        return cls(attacks=None if FLAGS.attacks is None else tuple(a.strip() for a in FLAGS.attacks),
                   n_samples=FLAGS.n_samples, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                   eps=FLAGS.eps, eps_iter=FLAGS.eps_iter, nb_iter=FLAGS.nb_iter,
                   mul_nb_iter=FLAGS.mul_nb_iter, force=FLAGS.force,
                   sanity=FLAGS.sanity, dataset=FLAGS.dataset, trust_model=FLAGS.trust_model,
                   verbose=FLAGS.verbose)

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


# --------------------------------------------------------------------------------------------------
# 2. What to run
# --------------------------------------------------------------------------------------------------


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
    from attacks import registry

    try:
        params = registry.default_params(name, dataset, arch, eps=opts.eps, eps_iter=opts.eps_iter,
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
    from attacks import registry

    return min(n_test, opts.n_samples or n_test, dict(opts.subsets).get(name, n_test),
               registry.default_n_samples(name) or n_test)


def run_header(config: dict) -> str:
    """The paper's column name: method (or preset) and N, e.g. CCE-RM_2, ADV_1; a model file's name."""
    if config.get("label"):
        return config["label"]
    return f"{(config.get('preset') or config['method']).upper()}_{config['members']}"


def read_results(run_dir: str) -> dict:
    """RUN/eval/attack_suite.json, or {} if there is none. Raises UsageError if unreadable."""
    path = os.path.join(results_dir(run_dir), RESULTS_FILE)
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


def plan_runs(run_dirs: list[str], opts: SuiteOptions
              ) -> tuple[list[RunPlan], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check the options and every run folder and load the test sets, before anything runs or is
    written.

    :return: (one RunPlan per run folder, {dataset: (x_test, y_test)}).
    """
    names = opts.attack_names()  # bad options fail here, before TensorFlow starts
    from cce_tf import data
    from eval import sanity

    if not run_dirs:
        raise UsageError("--run_dir is required (a run folder written by python -m cce_tf.train)")
    plans, test_sets = [], {}
    for run_dir in run_dirs:
        run_dir = os.path.normpath(run_dir)
        try:
            target = Target(run_dir, opts.dataset, opts.trust_model)
            model = target.load()
        except UsageError as e:
            raise UsageError(str(e)) from None
        config = target.config
        dataset, arch = config["dataset"], config["arch"]
        if dataset not in test_sets:
            try:
                test_sets[dataset] = data.load(dataset, "test")
            except ValueError as e:  # DataError is a ValueError, as is an unknown name
                raise UsageError(f"--run_dir {run_dir}: {e}") from None
        n_test = len(test_sets[dataset][0])
        attacks = {name: (attack_params(name, dataset, arch, opts), attack_samples(name, n_test, opts))
                   for name in names}
        plans.append(RunPlan(target=target, header=run_header(config),
                             attacks=attacks, sanity_params=attack_params("pgd", dataset, arch, opts),
                             sanity_n=min(sanity.SUBSET, n_test, opts.n_samples or n_test),
                             existing=read_results(run_dir),
                             model=model))
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
                 indices: Optional[np.ndarray] = None, what: str = "x_adv") -> None:
    """Raise BoundsError unless every x_adv is finite, within L∞ distance eps (+ tol) of x and in
    [0, 1] (± tol). Nothing is clipped: an attack that leaves the ball has a bug, and clipping would
    hide it while changing what was measured.

    :param indices: test-set index of each row of x, for the message (default 0, 1, ...).
    """
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv)
    if x_adv.shape != x.shape:
        raise BoundsError(f"{what} has shape {x_adv.shape}, x has {x.shape}")
    index = np.arange(len(x)) if indices is None else np.asarray(indices)
    flat = x_adv.reshape(len(x_adv), -1).astype(np.float32)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise BoundsError(f"{what} of test sample {index[int(np.argmax(bad))]} is not finite")
    if eps is not None:
        dist = np.abs(flat - x.reshape(len(x), -1)).max(axis=1, initial=0.0)
        worst = int(np.argmax(dist)) if len(dist) else 0
        if len(dist) and dist[worst] > eps + tol:
            raise BoundsError(f"{what} of test sample {index[worst]} is {dist[worst]:.7g} from x "
                              f"in L∞, outside the ε-ball (eps={eps:.7g}, tolerance {tol:g})")
    lo, hi = flat.min(axis=1, initial=0.0), flat.max(axis=1, initial=1.0)
    out = (lo < -tol) | (hi > 1 + tol)
    if out.any():
        i = int(np.argmax(out))
        raise BoundsError(f"{what} of test sample {index[i]} leaves [0, 1] "
                          f"(min {lo[i]:.7g}, max {hi[i]:.7g}, tolerance {tol:g})")


# --------------------------------------------------------------------------------------------------
# 4. Predictions and one attack
# --------------------------------------------------------------------------------------------------

def batch_seed(seed: int, index: int) -> int:
    """The random seed of the attack batch that starts at test sample ``index``: a batch's result
    depends on its samples and the suite's seed only, so the samples can be split into shards (on
    batch boundaries) across processes and merged into exactly the result of one process."""
    return (int(seed) * 1_000_003 + int(index)) % 2 ** 31


def robust_mask(model: Callable, name: str, x: np.ndarray, y: np.ndarray, params: dict,
                batch_size: int = 500, bar: Optional[Progress] = None, seed: Optional[int] = None,
                first_index: int = 0, keep: Optional[dict[str, np.ndarray]] = None) -> np.ndarray:
    """Per sample: the model is right on x AND on the attack's x_adv. Only samples it gets right
    are attacked (the others cannot count as robust), as AutoAttack's own evaluation does.

    :param bar: advanced by every batch (Progress, in samples), or None for silence.
    :param seed: if set, every batch is seeded with ``batch_seed(seed, its first test index)``.
    :param first_index: test-set index of x[0] (for the seeds and the error messages).
    :param keep: if given, filled with "x_adv" (x where a sample was not attacked) and the attack's
        per-sample details (``attacks.registry.run_detailed``; 0 where not attacked).
    :raises BoundsError: some x_adv outside the ε-ball or [0, 1].
    :raises attacks.errors.AttackUnavailable: the attack's library is missing.
    """
    import keras
    from attacks import registry

    robust = np.zeros(len(x), bool)
    if keep is not None:
        keep["x_adv"] = np.array(x, np.float32)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        idx = np.flatnonzero(predict_labels(model, xb, batch_size) == yb)
        if idx.size:
            if seed is not None:
                keras.utils.set_random_seed(batch_seed(seed, first_index + start))
            x_adv, details = registry.run_detailed(name, model, xb[idx], yb[idx], **params)
            # Checked on the whole returned batch before any of it counts.
            check_bounds(xb[idx], x_adv, params.get("eps"), indices=first_index + start + idx,
                         what=f"{name} x_adv")
            robust[start + idx] = predict_labels(model, np.asarray(x_adv, np.float32), batch_size) == yb[idx]
            if keep is not None:
                keep["x_adv"][start + idx] = x_adv
                for key, value in details.items():
                    keep.setdefault(key, np.zeros(len(x), value.dtype))[start + idx] = value
        if bar is not None:
            bar.add(len(xb))
    return robust


def shard_mask(run_dir: str, opts: SuiteOptions, name: str, start: int, stop: int) -> np.ndarray:
    """The robust flags of attack ``name`` on test samples [start, stop) of a run, as
    ``evaluate_run`` computes them (``start`` on a batch boundary): the work of one shard when the
    samples are split across processes or Ray tasks. Merge the shards by sample index and pass them
    to ``evaluate`` as ``precomputed``."""
    if start % opts.batch_size:
        raise UsageError(f"a shard must start on a batch boundary ({opts.batch_size}), got {start}")
    plans, test_sets = plan_runs([run_dir], SuiteOptions(**{**dataclasses.asdict(opts), "attacks": (name,)}))
    x, y = test_sets[plans[0].config["dataset"]]
    params, n = plans[0].attacks[name]
    stop = min(stop, n)
    return robust_mask(plans[0].model, name, x[start:stop], y[start:stop], params, opts.batch_size,
                       seed=opts.seed, first_index=start)


# --------------------------------------------------------------------------------------------------
# 5. The results files
# --------------------------------------------------------------------------------------------------


def attack_settings(params: dict, n_samples: int, seed: int) -> dict:
    """What a stored attack result must match to be reused (with the weights, eval.reuse)."""
    return {"params": params, "n_samples": n_samples, "seed": seed}


def _signature(settings: dict, fp: str) -> str:
    return json.dumps(reuse.stamp(settings, fp), sort_keys=True)


def write_results(run_dir: str, results: dict, masks: dict[str, np.ndarray]) -> None:
    """RUN/eval/attack_suite.json and the per-sample robust flags, each replaced atomically
    (flags first: a flag set names the weights and settings it belongs to, see ``_signature``)."""
    out = results_dir(run_dir)
    atomic.write_file(os.path.join(out, MASKS_FILE), lambda f: np.savez(f, **masks), "wb")
    atomic.write_json(os.path.join(out, RESULTS_FILE), results)


def read_masks(run_dir: str) -> dict[str, np.ndarray]:
    path = os.path.join(results_dir(run_dir), MASKS_FILE)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):  # missing or unreadable: the masks are recomputed with their attacks
        return {}


def save_adversarial(run_dir: str, name: str, y: np.ndarray, robust: np.ndarray, keep: dict,
                     settings: dict, fp: str) -> dict:
    """RUN/eval/adversarial/NAME.npz (PATH.eval/adversarial/ for a model file): the x_adv of the
    first len(y) test samples (x itself where the model was already wrong), their test-set indices,
    clean labels, robust flags, the attack's per-sample details and the weights and settings they
    belong to, so they can be re-checked or transferred without re-running the attack.

    :return: what the attack's results entry gains: the file, and for AutoAttack the robust
        accuracy after each sub-attack ("stages", ``attacks.autoattack.robust_after_each``).
    """
    from attacks import autoattack

    path = os.path.join(results_dir(run_dir), ADVERSARIAL_DIR, f"{name}.npz")
    arrays = {"indices": np.arange(len(y)), "labels": np.asarray(y), "robust": robust, **keep,
              "key": np.array(_signature(settings, fp))}
    atomic.write_file(path, lambda f: np.savez_compressed(f, **arrays), "wb")
    entry = {"adversarial_examples": os.path.abspath(path)}
    if "broken_by" in keep:
        entry["stages"] = autoattack.robust_after_each(keep["broken_by"])
        print(f"  {name}: robust after " + ", ".join(f"{a} {v:.4f}" for a, v in entry["stages"].items()),
              flush=True)
    return entry


def mask_for(masks: dict, name: str, settings: dict, fp: str) -> Optional[np.ndarray]:
    """The stored robust flags of attack ``name`` if they belong to these settings and weights."""
    if name in masks and str(masks.get(name + "__key")) == _signature(settings, fp):
        return masks[name]
    return None


def entries_on(attacks: dict, fp: str, seed: int) -> dict[str, dict]:
    """The finished entries of a results file's ``attacks`` computed on weights ``fp`` with
    ``seed``: the only ones that may share the file (and a table) with new results."""
    return {n: e for n, e in reuse.same_weights(attacks, fp).items() if e.get("settings", {}).get("seed") == seed}


def adopt(stored: dict, stored_masks: dict, results: dict, masks: dict[str, np.ndarray], fp: str,
          mine: set[str]) -> None:
    """Take into ``results`` and ``masks`` (this invocation's, with its seed) what the results files
    hold (``stored``, ``stored_masks``; read when the suite starts and again before each write):
    the entries on weights ``fp`` with that seed and their robust flags, but for the attacks in
    ``mine``, computed by this invocation; unless ``mine`` holds "sanity", also the sanity report on
    these weights and sanity check 6's flags (run_sanity matches them to its settings)."""
    for name, e in entries_on(stored.get("attacks", {}), fp, results["seed"]).items():
        if name in mine:
            continue
        results["attacks"][name] = e
        m = mask_for(stored_masks, name, e["settings"], fp)
        if m is None:  # an entry without its flags: the any-attack row leaves it out
            masks.pop(name, None)
            masks.pop(name + "__key", None)
        else:
            masks[name], masks[name + "__key"] = m, stored_masks[name + "__key"]
    if "sanity" in mine:
        return
    if stored.get(reuse.KEY) == fp and stored.get("sanity"):
        results["sanity"] = stored["sanity"]
    if RESTARTS_MASK in stored_masks:
        for key in (RESTARTS_MASK, RESTARTS_MASK + "__key"):
            masks[key] = stored_masks[key]


def any_attack(entries: dict[str, dict], masks: dict[str, np.ndarray]) -> Optional[dict]:
    """The per-sample worst case over the finished attacks that have robust flags: a sample counts
    only if it survives every one of them (DESIGN.md, contract 7). The attacks ran on the first
    n_samples test samples each, so the shared set is the first min(n_samples).

    :param entries: attack name -> its attack_suite.json entry (only finished ones count).
    :param masks: attack name -> its per-sample robust flags, already matched to the entry.
    :return: {robust_accuracy, n_samples, attacks}, or None when no attack has flags.
    """
    names = [n for n, e in entries.items() if "robust_accuracy" in e and n in masks]
    if not names:
        return None
    robust = worst_case(masks, names)
    return {"robust_accuracy": float(robust.mean()) if len(robust) else 0.0, "n_samples": len(robust),
            "attacks": names}


def worst_case(masks: dict[str, np.ndarray], names: list[str], n: Optional[int] = None) -> np.ndarray:
    """Per sample of the first min(n, every mask's length): robust under every attack of ``names``."""
    n = min([len(masks[a]) for a in names] + ([n] if n is not None else []))
    return np.logical_and.reduce([np.asarray(masks[a][:n], bool) for a in names])


# --------------------------------------------------------------------------------------------------
# 6. One run
# --------------------------------------------------------------------------------------------------

Outcome = Union[float, str, None]  # robust accuracy, "skipped", or None (not available)


def evaluate_run(plan: RunPlan, x: np.ndarray, y: np.ndarray, opts: SuiteOptions,
                 precomputed: Optional[dict[str, np.ndarray]] = None,
                 precomputed_seconds: Optional[dict[str, float]] = None) -> dict:
    """Natural accuracy, every attack, the sanity report; writes the results as they come.
    ``precomputed``: robust flags of some attacks already computed by ``shard_mask`` (merged by
    sample index), recorded instead of attacking again.

    Results already in the file are reused when eval.reuse allows (same weights, same settings);
    those computed on other weights are dropped from the file after a copy is kept in
    RUN/eval/stale/, so the file only ever describes the weights the run holds.

    :return: {"natural_accuracy", "attacks": {name: Outcome}, "params": {name: params},
        "n_samples": {name: n}, "any_attack", "warnings": [...], "sanity_ran": bool} for the table.
    """
    from attacks.errors import AttackUnavailable
    from eval import sanity

    precomputed, precomputed_seconds = precomputed or {}, precomputed_seconds or {}
    seed, batch_size = opts.seed, opts.batch_size
    print(f"== {plan.header}: {plan.run_dir} ({plan.config['dataset']}, {plan.config['arch']})", flush=True)
    model = plan.model
    fp = plan.target.fingerprint
    path = os.path.join(plan.target.results_dir, RESULTS_FILE)

    t0 = time.time()
    correct = predict_labels(model, x, batch_size) == y
    natural = float(np.mean(correct))
    print(f"  natural accuracy {natural:.4f} on {len(x)} test samples ({time.time() - t0:.1f}s)", flush=True)

    old = plan.existing
    old_attacks = {n: e for n, e in old.get("attacks", {}).items() if isinstance(e, dict)}
    decisions = {name: reuse.decide(old_attacks.get(name) if "robust_accuracy" in old_attacks.get(name, {})
                                    else None, fp, attack_settings(p, n, seed), opts.force)
                 for name, (p, n) in plan.attacks.items()}
    for line in reuse.explain(path, decisions):
        print(f"  {line}", flush=True)
    kept = entries_on(old_attacks, fp, seed)
    if old and (old.get(reuse.KEY) != fp or len(kept) < len(old_attacks)):
        copy = reuse.keep_stale(path, old.get(reuse.KEY))
        dropped = sorted(set(old_attacks) - set(kept))
        if dropped:
            print(f"  results of other weights or another seed ({', '.join(dropped)}) leave the file; "
                  f"a copy is kept in {copy}", flush=True)
    results = {"run_dir": plan.run_dir, "dataset": plan.config["dataset"], "seed": seed,
               reuse.KEY: fp, "natural_accuracy": natural, "n_test": int(len(x)), "attacks": {},
               "sanity": {"warnings": []}}
    attacks = results["attacks"]
    masks: dict[str, np.ndarray] = {}
    mine: set[str] = set()  # the attacks (and "sanity") this invocation computes: its own entries
    adopt(old, read_masks(plan.run_dir), results, masks, fp, mine)
    # Per-sample clean correctness: paired comparisons of natural accuracy between runs need it.
    masks[NATURAL], masks[NATURAL + "__key"] = correct, np.array(_signature({"n_test": len(x)}, fp))

    def save() -> None:
        # Under the results folder's lock, the files are read again just before they are written:
        # what another process wrote since (another attack on this run) is merged in, not lost.
        with run_lock.hold(run_lock.lock_path(plan.target.results_dir), wait=True):
            latest = read_results(plan.run_dir)
            if latest.get(reuse.KEY) not in (None, fp):  # written meanwhile for other weights
                reuse.keep_stale(path, latest[reuse.KEY])
            adopt(latest, read_masks(plan.run_dir), results, masks, fp, mine)
            results["sanity"] = sanity.with_canaries(results["sanity"], canary_checks(plan, attacks, masks))
            worst = any_attack(attacks, {n: masks[n] for n in attacks if n in masks})
            results.pop("any_attack", None)
            if worst:
                results["any_attack"] = worst
            write_results(plan.run_dir, results, masks)

    save()
    outcomes: dict[str, Outcome] = {}
    for name, (params, n) in plan.attacks.items():
        settings = attack_settings(params, n, seed)
        if decisions[name].reuse and name not in precomputed:
            entry = old_attacks[name]
            outcomes[name] = entry["robust_accuracy"]
            print(f"  {name}: reused, robust accuracy {entry['robust_accuracy']:.4f} on {n} samples "
                  f"({entry['seconds']:.1f}s when run; --force to re-run)", flush=True)
            continue
        if name in precomputed:  # merged from shards (shard_mask): the same flags, computed elsewhere
            mask = np.asarray(precomputed[name], bool)
            if mask.shape != (n,):
                raise UsageError(f"{name}: {mask.shape[0]} merged flags for {n} samples")
            seconds, how = float(precomputed_seconds.get(name, 0.0)), "merged from shards"
        else:
            print(f"  {name}: {n} samples, {params}", flush=True)
            t0 = time.time()
            keep: Optional[dict] = {} if name in SAVE_ADV else None
            try:
                mask = robust_mask(model, name, x[:n], y[:n], params, batch_size,
                                   bar=Progress(n, opts.verbose), seed=seed, keep=keep)
            except AttackUnavailable as e:
                print(f"  {name}: skipped: {e}", flush=True)
                outcomes[name] = "skipped"
                if "robust_accuracy" not in attacks.get(name, {}):  # a skip never overwrites a result
                    attacks[name] = {"skipped": str(e)}
                    save()
                continue
            seconds = round(time.time() - t0, 3)
            how = f"{seconds:.1f}s"
        mine.add(name)
        attacks[name] = {"robust_accuracy": float(mask.mean()), "params": params, "n_samples": n,
                         "seconds": seconds, **reuse.stamp(settings, fp)}
        if name in SAVE_ADV and name not in precomputed:
            attacks[name].update(save_adversarial(plan.run_dir, name, y[:n], mask, keep, settings, fp))
        masks[name], masks[name + "__key"] = mask, np.array(_signature(settings, fp))
        save()
        outcomes[name] = attacks[name]["robust_accuracy"]
        print(f"  {name}: robust accuracy {outcomes[name]:.4f} ({how})", flush=True)

    if opts.sanity:
        mine.add("sanity")
        results["sanity"] = run_sanity(model, plan, x, y, results, masks, opts, fp)
    save()
    return {"run_dir": plan.run_dir, "natural_accuracy": natural, "n_test": int(len(x)), "attacks": outcomes,
            "params": {k: p for k, (p, _) in plan.attacks.items()},
            "n_samples": {k: n for k, (_, n) in plan.attacks.items()},
            "any_attack": results.get("any_attack"),
            "stages": {k: e["stages"] for k, e in attacks.items() if "stages" in e},
            "warnings": list(results["sanity"].get("warnings", [])), "sanity_ran": opts.sanity}


def canary_checks(plan: RunPlan, attacks: dict, masks: dict) -> dict:
    """eval/sanity.py's canaries on the flags of the attacks run: single-step against iterative, and,
    for an undefended run (method NAT), PGD at the data set's ε must leave it below 10 %."""
    from eval import sanity

    done = {n: masks[n] for n, e in attacks.items() if n in masks and "robust_accuracy" in e}
    pgd = attacks.get("pgd", {}).get("params")
    at_eps = pgd is not None and pgd["eps"] == EPSILONS[plan.config["dataset"]]["eps"]
    return sanity.canaries(done, undefended=plan.config.get("method") == "nat" and at_eps, pgd_params=pgd)


def _any_vs_restarts(model: Callable, worst: Optional[dict], masks: dict, x: np.ndarray,
                     y: np.ndarray, params: dict, m: int, opts: SuiteOptions, fp: str
                     ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(any-attack flags, restarted margin PGD's flags) on the first samples both cover, for sanity
    check 6. The restarted PGD's flags are reused from ``masks`` (read from MASKS_FILE) when they
    belong to these weights and settings, else computed and added to it."""
    from attacks import registry

    if not worst:
        return None
    worst_mask = worst_case(masks, worst["attacks"], m)
    n = len(worst_mask)
    p = {**params, "restarts": registry.RESTARTS}
    settings = attack_settings(p, n, opts.seed)
    restarts = None if opts.force else mask_for(masks, RESTARTS_MASK, settings, fp)
    if restarts is None:
        t0 = time.time()
        restarts = robust_mask(model, "pgd_margin_restarts", x[:n], y[:n], p, opts.batch_size, seed=opts.seed)
        print(f"  sanity: margin-loss PGD, {registry.RESTARTS} random starts, k={p['nb_iter']} on {n} samples: "
              f"robust {restarts.mean():.3f}, any attack {worst_mask.mean():.3f} ({time.time() - t0:.1f}s)",
              flush=True)
    masks[RESTARTS_MASK], masks[RESTARTS_MASK + "__key"] = restarts, np.array(_signature(settings, fp))
    return worst_mask, restarts


def run_sanity(model: Callable, plan: RunPlan, x: np.ndarray, y: np.ndarray, results: dict,
               masks: dict, opts: SuiteOptions, fp: str) -> dict:
    """eval/sanity.py's checks: PGD on the first ``plan.sanity_n`` samples (reused from the results
    file when eval.reuse allows), and SPSA against PGD on the samples both attacked."""
    from eval import sanity

    params, m, seed = plan.sanity_params, plan.sanity_n, opts.seed
    settings = {"params": params, "n_samples": m, "seed": seed}
    old = results.get("sanity", {})
    same = "eps_sweep" in old and reuse.decide(old, fp, settings, opts.force).reuse

    def pgd_robust(p: dict) -> np.ndarray:
        t0 = time.time()
        mask = robust_mask(model, "pgd", x[:m], y[:m], p, opts.batch_size, seed=seed)
        print(f"  sanity: PGD eps={p['eps']:.4g} eta={p['eps_iter']:.4g} k={p['nb_iter']} on {m} "
              f"samples: robust {mask.mean():.3f} ({time.time() - t0:.1f}s)", flush=True)
        return mask

    pair = None
    attacks = results["attacks"]
    if all("robust_accuracy" in attacks.get(a, {}) for a in ("spsa", "pgd")):
        got = [masks.get(a) for a in ("spsa", "pgd")]
        pair = None if any(g is None for g in got) else tuple(got)
    stronger = {a: masks[a] for a in sanity.STRONGER if a in masks and "robust_accuracy" in attacks.get(a, {})}
    t0 = time.time()
    report = sanity.report(pgd_robust, params, previous=old if same else None, spsa_vs_pgd=pair,
                           below_pgd=(stronger, masks["pgd"]) if stronger and "pgd" in masks else None,
                           any_vs_restarts=_any_vs_restarts(model, results.get("any_attack"), masks,
                                                            x, y, params, m, opts, fp))
    if "spsa" in attacks and pair is None:
        report["spsa_vs_pgd"] = {"skipped": "needs finished spsa and pgd results with their "
                                            f"per-sample flags ({MASKS_FILE}); re-run them with --force"}
    report.update(n_samples=m, seed=seed, params=params,
                  seconds=old.get("seconds", 0.0) if same else round(time.time() - t0, 3),
                  **reuse.stamp(settings, fp))
    status = "reused" if same else "done"
    print(f"  sanity checks {status}: {len(report['warnings'])} warning(s)", flush=True)
    return report


# --------------------------------------------------------------------------------------------------
# 7. The table
# --------------------------------------------------------------------------------------------------

_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "pgd_margin": "PGD (CW margin loss)",
           "pgd_margin_restarts": "PGD (CW margin loss, random restarts)", "bim": "BIM", "mim": "MIM", "mul_pgd": "mul-PGD",
           "mul_bim": "mul-BIM", "mul_mim": "mul-MIM", "spsa": "SPSA", "bb_pgd1": "B&B (wPGD1)",
           "bb_pgd2": "B&B (wPGD2)", "autoattack": "Auto-Attack"}
_WITH_K = ("pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")
ANY_ROW = "Any attack (per-sample worst case)"


def attack_label(name: str, ks: list[int]) -> str:
    """The paper's row label, e.g. "PGD k = 100"; runs with different k show them all: "k = 100/250"."""
    label = _LABELS.get(name, name)
    if name in _WITH_K and ks:
        label += " k = " + "/".join(str(k) for k in sorted(set(ks)))
    return label


def _cell(value: Outcome, n: Optional[int] = None) -> str:
    """A percentage, with its 95 % Wilson interval when the sample count n is known."""
    from eval import stats

    if isinstance(value, float):
        if not n:
            return f"{100 * value:.1f}"
        lo, hi = stats.wilson_interval(round(value * n), n)
        return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    return value or "n/a"


def markdown_table(columns: list[tuple[str, dict]]) -> str:
    """Rows: natural accuracy, each attack, then the worst case over the attacks; one column per
    run; percentages, one decimal, each with its 95 % Wilson interval over the samples it counts.

    :param columns: (header, evaluate_run's summary) per run.
    """
    names = list(dict.fromkeys(n for _, s in columns for n in s["attacks"]))
    lines = ["| Attack | " + " | ".join(h for h, _ in columns) + " |",
             "|---|" + "---:|" * len(columns),
             f"| {NAT_ROW} | " + " | ".join(_cell(s["natural_accuracy"], s.get("n_test")) for _, s in columns)
             + " |"]
    for name in names:
        ks = [s["params"][name]["nb_iter"] for _, s in columns
              if name in s["params"] and "nb_iter" in s["params"][name]]
        cells = [_cell(s["attacks"].get(name), s.get("n_samples", {}).get(name)) for _, s in columns]
        lines.append(f"| {attack_label(name, ks)} | " + " | ".join(cells) + " |")
        subs = list(dict.fromkeys(a for _, s in columns for a in s.get("stages", {}).get(name, {})))
        for sub in subs:  # AutoAttack's robust accuracy after each of its sub-attacks
            cells = [_cell(s.get("stages", {}).get(name, {}).get(sub), s.get("n_samples", {}).get(name))
                     for _, s in columns]
            lines.append(f"| &nbsp;&nbsp;after {sub.upper()} | " + " | ".join(cells) + " |")
    if any(s.get("any_attack") for _, s in columns):
        cells = [f"{_cell(s['any_attack']['robust_accuracy'], s['any_attack']['n_samples'])} "
                 f"(n = {s['any_attack']['n_samples']})"
                 if s.get("any_attack") else "n/a" for _, s in columns]
        lines.append(f"| **{ANY_ROW}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_report(columns: list[tuple[str, dict]]) -> None:
    """The table, the settings under it, and the failed sanity checks as warnings beside it."""
    print()
    print(markdown_table(columns))
    print()
    for header, s in columns:
        eps = sorted({p["eps"] for p in s["params"].values() if "eps" in p})
        by_n: dict[int, list[str]] = {}
        for name, n in s["n_samples"].items():
            by_n.setdefault(n, []).append(name)
        samples = "; ".join(f"{n} samples: {', '.join(names)}" for n, names in by_n.items())
        print(f"{header}: {s['run_dir']}, eps {'/'.join(f'{e:.4g}' for e in eps)}, {samples}")
    for header, s in columns:
        if s.get("any_attack"):
            print(f"{header}: any attack = per-sample worst case over "
                  f"{', '.join(s['any_attack']['attacks'])} on the first {s['any_attack']['n_samples']} samples")
        for w in s["warnings"]:
            print(f"WARNING ({header}, sanity): {w}")
        if s["sanity_ran"] and not s["warnings"]:
            print(f"{header}: sanity checks passed")


# --------------------------------------------------------------------------------------------------
# 8. Entry points
# --------------------------------------------------------------------------------------------------


def evaluate(run_dirs: list[str], opts: SuiteOptions = SuiteOptions(),
             precomputed: Optional[dict[str, np.ndarray]] = None,
             precomputed_seconds: Optional[dict[str, float]] = None) -> list[tuple[str, dict]]:
    """The attack suite on every run: (table header, evaluate_run's summary) per run, results
    written to RUN/eval/. The library entry point (studies call it; the CLI wraps it).
    ``precomputed`` (one run only): merged shard flags per attack, see ``shard_mask``.

    :raises UsageError: bad options or a folder that is not a readable run (before any work).
    :raises BoundsError: an attack returned x_adv outside its bounds (earlier results are kept).
    """
    plans, test_sets = plan_runs(list(run_dirs), opts)
    return [(p.header, evaluate_run(p, *test_sets[p.config["dataset"]], opts, precomputed, precomputed_seconds))
            for p in plans]


def main(argv: list[str]) -> None:
    """Parse ``argv`` (program name first), evaluate every run, print the table."""
    cli_flags.parse(FLAGS, argv)
    quiet_tf()  # the sanity sweep retraces PGD once per ε, on purpose
    try:
        print_report(evaluate(FLAGS.run_dir, SuiteOptions.from_flags()))
    except BoundsError as e:
        raise BoundsError(f"{e}; this attack's result was not recorded") from None


def cli(argv: Optional[list[str]] = None) -> int:
    """``main`` with exit codes: 0 done, 2 bad input (one line, nothing written), 1 an attack
    returned an x_adv outside its bounds (its result is not recorded; the results before it are)."""
    return cli_flags.run(main, FLAGS, argv, doc=__doc__.split("\nParts")[0], failures=(BoundsError,))


if __name__ == "__main__":
    sys.exit(cli())
