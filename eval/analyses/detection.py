"""Adversarial detection by the entropy of the ensemble prediction: the paper's "Adversarial
Detectability" (Figs 2-4).

Usage::

    python -m eval.analyses.detection --run_dir runs/cce_dm [--n_samples 1000] [--attacks pgd,bim,mim] [--nosweep]

    from eval.analyses.detection import Options, detection_metrics, evaluate
    m = detection_metrics(h_clean, h_adv, fooled)        # AUC, TPR at 5% FPR, ROC points
    result = evaluate("runs/cce_dm", Options(n_samples=1000))   # attacks, writes RUN/eval/detection.json

The detection score of an input is H(f^en(x)), the entropy (natural log) of the ensemble's
prediction: higher means "adversarial". Following Pang et al. (2018), the negatives are the clean
test images the ensemble classifies correctly and the positives their adversarial counterparts that
fool it; ``auc_all`` instead counts every adversarial counterpart of those images as a positive,
fooled or not. ROC and AUC come from scikit-learn (``roc_curve``, ``roc_auc_score``).

Attacks, all against the whole ensemble with the true labels, k = 20 (``attacks.registry``):

* Fig 3: PGD, BIM, MIM at the data set's ε with η = the detection step (CIFAR-10: ε = 8/255,
  η = 1/255; elsewhere η = ε/8);
* Fig 4: PGD over the ε sweep ε_dataset × {1, 2, 4, 8, 12, 16, 20, 24}/8 (CIFAR-10: 1/255 ... 24/255)
  at the same η (η = min(η, ε), since cleverhans' PGD needs η <= ε).

Every test sample is attacked (the histogram of Fig 2 shows all clean images and all their
adversarial examples); the metrics use the clean-correct ones.

Writes RUN/eval/detection.json: per attack (``attacks``) and per sweep ε (``eps_sweep``): auc,
auc_all, tpr_at_5fpr, threshold_at_5fpr, n_pos, n_neg, adv_accuracy, eps, eps_iter, nb_iter and
the ROC points fpr / tpr (at most 200); and RUN/eval/detection_entropy.npz with the entropies
(``clean``, ``correct``, ``adv_NAME``, ``fooled_NAME``, ``adv_sweepI``, ``fooled_sweepI``,
``sweep_eps``) for the histogram. Every entry records the weights' SHA-256 and its settings; a new
evaluation reuses the entries computed on the same weights with the same settings (samples, seed, ε,
η, k; eval.reuse, the rule of every tool; ``--force`` recomputes) and computes only what is
missing, so attacks, the sweep and the figures that need them can come in any order.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
from absl import flags

from cce_tf import cli_flags
from cce_tf.config import converging_step, scaled_step
from cce_tf.cli_flags import UsageError
from eval import batches, results_file, reuse
from eval.flags import analysis_flags, check_pgd, check_radius, dataset_settings
from eval.labels import format_eps, run_label, run_labels
from eval.output import markdown_table, pct, read_json
from eval.progress import Progress, estimate_line, quiet_tf
from eval.target import Target, eval_path, target_config

NAME = "detection"
SCOPE = "run"   # one job per run (studies.plan)

JSON_NAME = "detection.json"
NPZ_NAME = "detection_entropy.npz"
ATTACKS = ("pgd", "bim", "mim")
MAX_ROC_POINTS = 200
FPR_TARGET = 0.05


# --------------------------------------------------------------------------------------------------
# The metrics, from scores
# --------------------------------------------------------------------------------------------------


def _downsample(fpr: np.ndarray, tpr: np.ndarray, max_points: int) -> tuple[list, list]:
    """At most max_points ROC points, evenly spaced along the curve, both ends kept."""
    if len(fpr) <= max_points:
        return fpr.tolist(), tpr.tolist()
    idx = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(int))
    return fpr[idx].tolist(), tpr[idx].tolist()


def detection_metrics(scores_clean: np.ndarray, scores_adv: np.ndarray,
                      fooled: Optional[np.ndarray] = None,
                      max_points: int = MAX_ROC_POINTS) -> dict:
    """ROC metrics of a detector that flags high scores as adversarial.

    :param scores_clean: [M] scores of the negatives (clean images the model gets right).
    :param scores_adv: [K] scores of their adversarial counterparts.
    :param fooled: [K] bool, which counterparts fool the model (the positives); None: all.
    :return: dict with auc (positives = fooled counterparts), auc_all (positives = every
        counterpart), tpr_at_5fpr and threshold_at_5fpr (the best TPR at a threshold whose FPR is
        at most 5%), n_pos, n_neg, n_adv, and fpr / tpr (the ROC of ``auc``, at most max_points
        points). Values that need both classes are None when one is empty.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    neg = np.asarray(scores_clean, np.float64).reshape(-1)
    adv = np.asarray(scores_adv, np.float64).reshape(-1)
    fooled = np.ones(len(adv), bool) if fooled is None else np.asarray(fooled, bool).reshape(-1)
    if fooled.shape != adv.shape:
        raise ValueError(f"fooled has shape {fooled.shape}, scores_adv {adv.shape}")
    pos = adv[fooled]
    out = dict(auc=None, auc_all=None, tpr_at_5fpr=None, threshold_at_5fpr=None,
               n_pos=int(len(pos)), n_neg=int(len(neg)), n_adv=int(len(adv)), fpr=[], tpr=[])
    if len(neg) == 0:
        return out

    def labelled(p):
        return np.r_[np.zeros(len(neg)), np.ones(len(p))], np.r_[neg, p]

    if len(adv):
        out["auc_all"] = float(roc_auc_score(*labelled(adv)))
    if len(pos):
        labels, scores = labelled(pos)
        out["auc"] = float(roc_auc_score(labels, scores))
        fpr, tpr, thresholds = roc_curve(labels, scores)
        ok = np.flatnonzero(fpr <= FPR_TARGET + 1e-12)
        best = ok[np.argmax(tpr[ok])]
        out["tpr_at_5fpr"] = float(tpr[best])
        out["threshold_at_5fpr"] = float(thresholds[best]) if np.isfinite(thresholds[best]) else None
        out["fpr"], out["tpr"] = _downsample(fpr, tpr, max_points)
    return out


# --------------------------------------------------------------------------------------------------
# Attacking a run
# --------------------------------------------------------------------------------------------------


def attack_params(dataset: str, eps: Optional[float] = None, eps_iter: Optional[float] = None,
                    nb_iter: int = 20, sweep_eps: Optional[Sequence[float]] = None) -> dict:
    """{eps, eps_iter, nb_iter, sweep_eps}: the data set's detection setting unless overridden.
    The default sweep scales with ``eps``."""
    s = dataset_settings(dataset)
    eps = s.eps if eps is None else float(eps)
    eps_iter = (converging_step(eps, scaled_step(eps, s.eps, s.detection_eps_iter), int(nb_iter), s.nb_iter)
                if eps_iter is None else float(eps_iter))
    check_pgd([eps], eps_iter, nb_iter)
    sweep = [eps * f for f in s.sweep_factors] if not sweep_eps else [float(e) for e in sweep_eps]
    for e in sweep:
        check_radius(e, "--sweep_eps")
    return dict(eps=eps, eps_iter=eps_iter, nb_iter=int(nb_iter), sweep_eps=sweep)


def _entry_settings(n_samples: Optional[int], seed: int, attack: str, eps: float, eps_iter: float,
                    nb_iter: int, draw: Optional[int] = None) -> dict:
    """What a stored detection entry must match to be reused (with the weights, eval.reuse); the
    test images' draw only where there is one (eval.batches.draw_order)."""
    return dict(n_samples=n_samples, seed=seed, attack=attack, eps=eps, eps_iter=eps_iter,
                nb_iter=nb_iter, **batches.draw_setting(draw))


def _load_npz(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError):
        return {}


def _reusable(old: dict, old_arrays: dict, fp: str, p: dict, n_samples: Optional[int], seed: int,
              force: bool, draw: Optional[int] = None) -> tuple[dict, dict, list, dict[str, reuse.Decision]]:
    """What a detection.json's dict ``old`` and its entropies ``old_arrays`` hold that eval.reuse
    lets an evaluation on weights ``fp`` with settings ``p``, ``n_samples``, ``seed`` keep:
    (entries by attack, their entropy arrays, the ε sweep (all of it or []), the decision for each
    attack of ATTACKS and for "eps sweep")."""
    if str(old_arrays.get(reuse.KEY, "")) != fp:
        old_arrays = {}  # entropies of other weights: no entry may take its arrays from there

    def decide(entry: Optional[dict], key: str, settings: dict) -> reuse.Decision:
        d = reuse.decide(entry, fp, settings, force)
        if d.reuse and f"adv_{key}" not in old_arrays:  # the JSON without its entropies
            return reuse.Decision(False, reuse.NEW)
        return d

    def take(key: str) -> None:
        for kind in ("adv", "fooled"):
            arrays[f"{kind}_{key}"] = old_arrays[f"{kind}_{key}"]

    entries, arrays, decisions = {}, {}, {}
    stored = old.get("attacks") or {}
    for name in ATTACKS:
        decisions[name] = decide(stored.get(name), name, _entry_settings(n_samples, seed, name, p["eps"],
                                                                        min(p["eps_iter"], p["eps"]), p["nb_iter"],
                                                                        draw))
        if decisions[name].reuse:
            entries[name] = stored[name]
            take(name)
    old_sweep = old.get("eps_sweep") or []
    sweep_decisions = [decide(m, f"sweep{i}", _entry_settings(n_samples, seed, "pgd", e, min(p["eps_iter"], e),
                                                             p["nb_iter"], draw))
                       for i, (m, e) in enumerate(zip(old_sweep, p["sweep_eps"]))]
    sweep = []
    if old_sweep and len(old_sweep) == len(p["sweep_eps"]) and all(d.reuse for d in sweep_decisions):
        sweep = list(old_sweep)
        for i in range(len(old_sweep)):
            take(f"sweep{i}")
    decisions["eps sweep"] = next((d for d in sweep_decisions if not d.reuse), reuse.Decision(False, reuse.NEW))
    return entries, arrays, sweep, decisions


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings of one evaluation (the CLI's flags of the same names)."""

    attacks: tuple[str, ...] = ATTACKS
    sweep: bool = True
    n_samples: Optional[int] = None
    batch_size: int = 500
    seed: int = 0
    eps: Optional[float] = None
    eps_iter: Optional[float] = None
    nb_iter: int = 20
    sweep_eps: Optional[tuple[float, ...]] = None
    force: bool = False
    verbose: int = 1
    dataset: Optional[str] = None
    trust_model: bool = False
    draw: Optional[int] = None   # the test images' draw (eval.batches.draw_order); None: the first n


def evaluate(target, options: Options = Options()) -> dict:
    """Detection by entropy on one run: ``attacks`` at ε (Fig 3) and, with ``sweep``, PGD over the
    ε sweep (Fig 4). Entries already in RUN/eval/detection.json are reused when eval.reuse allows
    (same weights, same settings) and kept beside the new ones; entries of other weights leave the
    file (a copy goes to RUN/eval/stale/). Writes detection.json and detection_entropy.npz and
    returns the JSON's dict. ``target``: an eval.target.Target, or a run folder or model file of
    any classifier (its data set ``dataset``; ``trust_model``: a SavedModel loaded unscanned), whose
    results go to PATH.eval/."""
    o = options
    attacks, sweep, n_samples, batch_size, seed = o.attacks, o.sweep, o.n_samples, o.batch_size, o.seed
    force, verbose = o.force, o.verbose
    for name in attacks:
        if name not in ATTACKS:
            raise UsageError(f"--attacks: unknown attack {name!r}, choose from {', '.join(ATTACKS)}")
    n_samples = n_samples or None
    target = target if isinstance(target, Target) else Target(target, o.dataset, o.trust_model)
    run_dir, ens, cfg = target.path, target.load(), target.config
    p = attack_params(cfg["dataset"], o.eps, o.eps_iter, o.nb_iter, o.sweep_eps)
    fp = target.fingerprint
    label = run_label(cfg)
    x, y = batches.test_samples(cfg["dataset"], n_samples, o.draw)

    def log(msg):
        if verbose:
            print(f"[{label} {run_dir}] {msg}", flush=True)

    json_path, npz_path = target.results_path(JSON_NAME), target.results_path(NPZ_NAME)
    old = read_json(json_path) or {}
    kept, kept_arrays, kept_sweep, decisions = _reusable(old, _load_npz(npz_path), fp, p, n_samples, seed, force, o.draw)
    todo: dict[str, tuple[str, float]] = {n: (n, p["eps"]) for n in attacks if n not in kept}  # array key -> (attack, eps)
    shown = {n: decisions[n] for n in todo}
    if sweep and not kept_sweep:
        todo.update({f"sweep{i}": ("pgd", e) for i, e in enumerate(p["sweep_eps"])})
        shown["eps sweep"] = decisions["eps sweep"]
    for line in reuse.explain(json_path, shown):
        log(line)
    results_file.keep_stale(json_path, old, fp, (npz_path,))

    params = dict(eps=p["eps"], eps_iter=p["eps_iter"], nb_iter=p["nb_iter"], seed=seed,
                  score="entropy of the ensemble prediction H(f^en(x))")
    result = dict(run_dir=os.path.abspath(run_dir), dataset=cfg["dataset"], label=label,
                  members=len(getattr(ens, "members", [ens])), params=params, n_samples_requested=n_samples,
                  attacks={}, eps_sweep=[], entropy_file=NPZ_NAME, **{reuse.KEY: fp})
    if todo:
        log(estimate_line(ens, x, len(todo) * p["nb_iter"], batch_size,
                                 f"{', '.join(todo)} (k = {p['nb_iter']})"))

    t0 = time.time()
    bar = Progress(len(todo) * len(x), verbose)
    batches.seed_everything(seed)
    logits = batches.logits(ens, x, batch_size)
    correct = logits.argmax(-1) == y
    h_clean = batches.entropy_of_logits(logits)
    result.update(n_samples=int(len(x)), natural_accuracy=float(correct.mean()),
                  n_clean_correct=int(correct.sum()))
    arrays = dict(clean=h_clean, correct=correct)   # what this invocation computes
    arrays[reuse.KEY] = np.array(fp)
    log(f"{len(x)} test samples, natural accuracy {pct(result['natural_accuracy'])}%, "
        f"mean clean entropy {h_clean.mean():.3f}")

    for key, (name, eps_) in todo.items():
        eta = min(p["eps_iter"], eps_)
        settings = _entry_settings(n_samples, seed, name, eps_, eta, p["nb_iter"], o.draw)
        m, arrays[f"adv_{key}"], arrays[f"fooled_{key}"] = _attack(ens, x, y, h_clean, correct, settings,
                                                                   batch_size, bar, fp)
        log(f"{name.upper()} eps={eps_:.4g} eta={eta:.4g}: adversarial accuracy "
            f"{pct(m['adv_accuracy'])}%, AUC {_fmt_auc(m['auc'])} "
            f"(all adversarial: {_fmt_auc(m['auc_all'])}), {m['n_pos']} positives / {m['n_neg']} negatives")
        if key.startswith("sweep"):
            result["eps_sweep"].append(m)
        else:
            result["attacks"][key] = m
    result["seconds"] = round(time.time() - t0, 2)
    _save(json_path, npz_path, result, arrays, (kept, kept_arrays, kept_sweep), fp, p, n_samples, seed, force, o.draw)
    log(f"done in {result['seconds']:.0f} s; wrote {json_path} and {npz_path}")
    return result


def _attack(ens, x: np.ndarray, y: np.ndarray, h_clean: np.ndarray, correct: np.ndarray, settings: dict,
            batch_size: int, bar: Progress, fp: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """One attack (``settings``: _entry_settings) on every sample: its detection entry (the
    metrics on the clean-correct samples, stamped with the weights and settings), the adversarial
    entropies and which examples fool the ensemble."""
    name, eps, eta, k = settings["attack"], settings["eps"], settings["eps_iter"], settings["nb_iter"]
    batches.seed_everything(settings["seed"])  # per attack: its result does not depend on what ran before
    x_adv = batches.craft(name, ens, x, y, batch_size, bar, eps=eps, eps_iter=eta, nb_iter=k)
    logits_adv = batches.logits(ens, x_adv, batch_size)
    h_adv = batches.entropy_of_logits(logits_adv)
    fooled = logits_adv.argmax(-1) != y
    m = detection_metrics(h_clean[correct], h_adv[correct], fooled[correct])
    m.update(attack=name, eps=eps, eps_iter=eta, nb_iter=k, adv_accuracy=float(np.mean(~fooled)),
             **reuse.stamp(settings, fp))
    return m, h_adv, fooled


def _save(json_path: str, npz_path: str, result: dict, arrays: dict, kept: tuple[dict, dict, list], fp: str, p: dict,
          n_samples: Optional[int], seed: int, force: bool, draw: Optional[int] = None) -> None:
    """Writes this evaluation's ``result`` and ``arrays`` with the entries ``kept`` from the file it
    read (_reusable's entries, arrays, sweep). Under the results folder's lock the files are read
    again just before they are written: the entries another process wrote since (other attacks of
    this run) are kept beside this one's."""
    kept_entries, kept_arrays, kept_sweep = kept
    merged: dict = {}

    def merge(latest: dict) -> dict:
        theirs, their_arrays, their_sweep, _ = _reusable(latest, _load_npz(npz_path), fp, p, n_samples, seed, force, draw)
        result["attacks"] = {**kept_entries, **theirs, **result["attacks"]}
        result["eps_sweep"] = result["eps_sweep"] or their_sweep or kept_sweep
        merged.update({**kept_arrays, **their_arrays, **arrays})
        if result["eps_sweep"]:
            merged["sweep_eps"] = np.asarray([m["eps"] for m in result["eps_sweep"]], np.float64)
        return result

    # The entropies first: detection.json names the weights its arrays belong to.
    results_file.write(json_path, merge, fp, arrays=lambda: {npz_path: (merged, True)}, companions=(npz_path,))


def load_entropies(run_dir: str) -> dict:
    """The entropy arrays of RUN/eval/detection_entropy.npz ({} when missing)."""
    return _load_npz(eval_path(run_dir, NPZ_NAME))


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def stored(target: Target) -> Optional[dict]:
    """RUN/eval/detection.json when it was computed on the weights the run holds now."""
    r = read_json(target.results_path(JSON_NAME))
    return r if r and r.get(reuse.KEY) == target.fingerprint else None


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows: the AUC of every attack (auc_NAME) and sweep radius (auc_sweepI)."""
    entries = [(f"auc_{n}", m) for n, m in result.get("attacks", {}).items()]
    entries += [(f"auc_sweep{i}", m) for i, m in enumerate(result.get("eps_sweep", []))]
    return [dict(evaluation=NAME, attack=m["attack"], eps=m["eps"], eps_iter=m["eps_iter"], nb_iter=m["nb_iter"],
                 n=m["n_pos"] + m["n_neg"], n_pos=m["n_pos"], metric="auc", value=m["auc"], key=key)
            for key, m in entries if m.get("auc") is not None]


# Drawn after a study's detection job, from its results (figures/: eval/ does not draw them).
FIGURES = ("entropy_histogram", "roc_attacks", "roc_eps")


def job_options(scale, part, seed: int, members: int, earlier: Optional[dict]) -> Optional[dict]:
    """The options of a study's job on one run (studies.plan); ``figures``: the figures drawn after it."""
    return dict(n_samples=scale.n_samples, seed=seed, nb_iter=scale.analysis_nb_iter, figures=list(FIGURES),
                **scale.draw(seed))


def cost(options: dict, run_config: dict) -> float:
    """Member forward-backward passes: 3 attacks and 8 sweep radii, k steps each."""
    n = batches.test_size(run_config["dataset"], options.get("n_samples"))
    return float(11 * options["nb_iter"] * n * run_config["members"])


def _fmt_auc(v: Optional[float]) -> str:
    return pct(v)


def table(result: dict) -> str:
    """AUCs (in percent) per attack and per sweep ε of one run."""
    ds = result["dataset"]
    rows = []
    entries = [(n.upper(), m) for n, m in result.get("attacks", {}).items()]
    entries += [("PGD (ε sweep)", m) for m in result.get("eps_sweep", [])]
    for name, m in entries:
        rows.append([name, format_eps(m["eps"], ds), format_eps(m["eps_iter"], ds),
                     m["nb_iter"], pct(m["adv_accuracy"]), m["n_neg"], m["n_pos"],
                     pct(m["auc"]), pct(m["auc_all"]), pct(m["tpr_at_5fpr"])])
    return markdown_table(
        ["Attack", "ε", "η", "k", "adv. acc.", "#neg", "#pos", "AUC", "AUC (all adv.)",
         "TPR @ 5% FPR"], rows)


def comparison_table(rows: Sequence[tuple[str, dict]]) -> str:
    """AUC (in percent) of several runs side by side: one column per attack and sweep ε."""
    cols: list[tuple[str, str, Optional[float]]] = []
    for _, r in rows:
        for n in r.get("attacks", {}):
            if ("attack", n, None) not in cols:
                cols.append(("attack", n, None))
        for m in r.get("eps_sweep", []):
            if ("sweep", "pgd", m["eps"]) not in cols:
                cols.append(("sweep", "pgd", m["eps"]))
    ds = rows[0][1]["dataset"]
    headers = ["Model"] + [n.upper() if kind == "attack" else f"PGD ε={format_eps(e, ds)}"
                           for kind, n, e in cols]
    body = []
    for label, r in rows:
        sweep = {round(m["eps"], 10): m for m in r.get("eps_sweep", [])}
        cells = []
        for kind, n, e in cols:
            m = r["attacks"].get(n) if kind == "attack" else sweep.get(round(e, 10))
            cells.append(pct(m["auc"]) if m else "–")
        body.append([label, *cells])
    return markdown_table(headers, body)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

FLAGS = analysis_flags("Where the side-by-side AUC table of several runs goes.", model_files=True)
cli_flags.define_shared(FLAGS, "eps", "eps_iter", note={"eps": "Of Fig 3 (CIFAR-10 8/255).",
                                                        "eps_iter": "The data set's detection η is ε/8 "
                                                                    "(CIFAR-10 1/255)."})
cli_flags.define_choice_list(FLAGS, "attacks", list(ATTACKS), ATTACKS, "Attacks of Fig 3; empty for none.")
flags.DEFINE_bool("sweep", True, "Also the PGD ε sweep of Fig 4.", flag_values=FLAGS)
cli_flags.define_fraction(FLAGS, "sweep_eps", [], "A radius of the sweep, e.g. 4/255; repeat for several "
                          "(default: the data set's ε × {1,2,4,8,12,16,20,24}/8).", multi=True)


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.run_dir:
        raise UsageError("give at least one --run_dir")
    attacks = list(dict.fromkeys(FLAGS.attacks))
    if not attacks and not FLAGS.sweep:
        raise UsageError("nothing to do: --attacks is empty and --nosweep is set")
    eps, eps_iter, sweep_eps = FLAGS.eps, FLAGS.eps_iter, FLAGS.sweep_eps
    configs = [target_config(d, FLAGS.dataset, FLAGS.trust_model) for d in FLAGS.run_dir]
    for cfg in configs:
        attack_params(cfg["dataset"], eps, eps_iter, FLAGS.nb_iter, sweep_eps)
    labels = run_labels(FLAGS.run_dir, configs, FLAGS.label)
    quiet_tf()

    rows = []
    for run_dir, label in zip(FLAGS.run_dir, labels):
        r = evaluate(run_dir, Options(tuple(attacks), FLAGS.sweep, FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed,
                                      eps, eps_iter, FLAGS.nb_iter, tuple(sweep_eps) or None, force=FLAGS.force,
                                      verbose=FLAGS.verbose, dataset=FLAGS.dataset, trust_model=FLAGS.trust_model))
        rows.append((label, r))
        print(f"\nDetection by the entropy of the ensemble prediction: {label} ({r['dataset']}, "
              f"n = {r['n_samples']}, {r['n_clean_correct']} clean-correct); percentages\n")
        print(table(r))
    if len(rows) > 1:
        text = ["AUC of detection by entropy (positives: adversarial examples that fool the "
                "ensemble); percentages", "", comparison_table(rows), ""]
        print("\n" + "\n".join(text))
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        path = os.path.join(FLAGS.out_dir, "detection.md")
        print(f"wrote {results_file.write_markdown(path, chr(10).join(text))}")


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.detection, console script cce-detect)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
