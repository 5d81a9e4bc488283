"""Detection by entropy against attackers who know the detector: the detection-aware robust accuracy.

Usage::

    python -m eval.analyses.adaptive_detection --run_dir runs/cce_dm [--n_samples 1000] [--nb_iter 20]

    from eval.analyses.adaptive_detection import Options, evaluate
    r = evaluate("runs/cce_dm", Options(n_samples=1000))
    r["detection_aware_robust_accuracy"], r["attacks"]["mul_pgd_confident"]["auc"]

The defender flags an input when the entropy of f^en exceeds the threshold that flags 5 % of the clean
test images the ensemble classifies correctly. The attacker knows this (attacks/detector_aware.py):
PGD on C − β·H for each β of ``BETAS``, multi-targeted PGD towards confident wrong classes, and a
two-stage attack that lowers the entropy of the best untargeted example; plain PGD (the paper's
attacker) is run for reference. Per attack: the AUC as eval.analyses.detection computes it, and the share of
samples it turns into a misclassified input the detector lets through. The headline,
``detection_aware_robust_accuracy``, is the share of test samples the ensemble gets right and on which
no attack produces such an input.

Writes RUN/eval/adaptive_detection.json with the weights' SHA-256 and its settings (reused by the rule
of eval.reuse; --force recomputes).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from eval import batches, results_file, reuse
from eval.analyses import detection
from eval.flags import analysis_flags
from eval.labels import run_label, run_labels
from eval.output import markdown_table, pct, read_json
from eval.progress import Progress, estimate_line, quiet_tf
from eval.target import Target, target_config

NAME = "adaptive_detection"
SCOPE = "run"   # one job per run (studies.plan)

JSON_NAME = "adaptive_detection.json"
BETAS = (0.1, 0.5, 1.0)
FPR = 0.05


def threshold_at_fpr(h_clean: np.ndarray, fpr: float = FPR) -> float:
    """The entropy above which ``fpr`` of the clean (correctly classified) inputs lie."""
    return float(np.quantile(np.asarray(h_clean, np.float64), 1.0 - fpr))


def _craft(fn, ens, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, bar: Progress,
           **params) -> np.ndarray:
    # a batch's result: its samples and the seed (eval.batches.batch_seed)
    return batches.craft(fn, ens, x, y, batch_size, bar, seed=seed, **params)


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings of one evaluation (the CLI's flags of the same names)."""

    n_samples: Optional[int] = 1000
    batch_size: int = 500
    seed: int = 0
    eps: Optional[float] = None
    eps_iter: Optional[float] = None
    nb_iter: int = 20
    betas: tuple[float, ...] = BETAS
    force: bool = False
    verbose: int = 1
    dataset: Optional[str] = None
    trust_model: bool = False


def evaluate(target, options: Options = Options()) -> dict:
    """Every detector-aware attack on the first ``n_samples`` test images; writes and returns
    RUN/eval/adaptive_detection.json's dict. ``target``: an eval.target.Target, or a run folder or
    model file of any classifier (its data set ``dataset``; ``trust_model``: a SavedModel loaded
    unscanned), whose results go to PATH.eval/."""
    from attacks import detector_aware, gradient

    o = options
    n_samples, batch_size, seed, betas, force, verbose = o.n_samples, o.batch_size, o.seed, o.betas, o.force, o.verbose
    target = target if isinstance(target, Target) else Target(target, o.dataset, o.trust_model)
    run_dir, cfg, load = target.path, target.config, target.load
    p = detection.attack_params(cfg["dataset"], o.eps, o.eps_iter, o.nb_iter)
    fp = target.fingerprint
    path = target.results_path(JSON_NAME)
    settings = dict(n_samples=n_samples or None, seed=seed, eps=p["eps"], eps_iter=p["eps_iter"],
                    nb_iter=p["nb_iter"], betas=list(betas), fpr=FPR)
    old, decision = results_file.decide(path, fp, settings, force)
    if decision.reuse:
        return old
    ens = load()
    log = (lambda msg: print(f"[{run_dir}] {msg}", flush=True)) if verbose else (lambda msg: None)
    for line in reuse.explain(path, {"adaptive detection": decision}):
        log(line)
    x, y = batches.test_samples(cfg["dataset"], n_samples or None)
    t0 = time.time()
    logits = batches.logits(ens, x, batch_size)
    correct = logits.argmax(-1) == y
    h_clean = batches.entropy_of_logits(logits)
    thr = threshold_at_fpr(h_clean[correct])
    kw = dict(eps=p["eps"], eps_iter=p["eps_iter"], nb_iter=p["nb_iter"])
    attacks = {"pgd": (gradient.pgd, kw)}
    attacks.update({f"pgd_confident_beta{b:g}": (detector_aware.pgd_confident, dict(kw, beta=b)) for b in betas})
    attacks["mul_pgd_confident"] = (detector_aware.mul_pgd_confident, dict(kw, threshold=thr))
    attacks["two_stage"] = (detector_aware.two_stage, kw)
    steps = p["nb_iter"] * (1 + len(betas) + (int(cfg["num_classes"]) - 1) + 2)
    log(estimate_line(ens, x, steps, batch_size, f"{', '.join(attacks)} (k = {p['nb_iter']})"))

    evaded_any = np.zeros(len(x), bool)
    results = {}
    bar = Progress(len(attacks) * len(x), verbose)
    for name, (fn, params) in attacks.items():
        x_adv = _craft(fn, ens, x, y, batch_size, seed, bar, **params)
        if np.abs(x_adv - x).max(initial=0.0) > p["eps"] + 1e-6 or x_adv.min(initial=0) < 0 or x_adv.max(initial=1) > 1:
            raise RuntimeError(f"{name}: x_adv outside the ε-ball or [0, 1]")
        logits_adv = batches.logits(ens, x_adv, batch_size)
        fooled = logits_adv.argmax(-1) != y
        h_adv = batches.entropy_of_logits(logits_adv)
        evaded = correct & fooled & (h_adv <= thr)
        evaded_any |= evaded
        m = detection.detection_metrics(h_clean[correct], h_adv[correct], fooled[correct])
        results[name] = dict(auc=m["auc"], tpr_at_5fpr=m["tpr_at_5fpr"], adv_accuracy=float(np.mean(~fooled)),
                             evaded=float(evaded.mean()), robust=float(np.mean(correct & ~evaded)),
                             params={k: v for k, v in params.items() if k != "threshold"})
        log(f"{name}: AUC {pct(m['auc'])}, adversarial accuracy {pct(results[name]['adv_accuracy'])}%, "
            f"{pct(results[name]['evaded'])}% misclassified and not flagged")
    result = dict(run_dir=os.path.abspath(run_dir), dataset=cfg["dataset"], label=run_label(cfg),
                  n_samples=int(len(x)), natural_accuracy=float(correct.mean()), threshold=thr, fpr=FPR,
                  attacks=results, detection_aware_robust_accuracy=float(np.mean(correct & ~evaded_any)),
                  seconds=round(time.time() - t0, 2), **reuse.stamp(settings, fp))
    results_file.write(path, result, fp)
    log(f"detection-aware robust accuracy {pct(result['detection_aware_robust_accuracy'])}% "
        f"(threshold H > {thr:.3f} flags {100 * FPR:g}% of clean images); wrote {path}")
    return result


def stored(target: Target) -> Optional[dict]:
    """RUN/eval/adaptive_detection.json when it was computed on the weights the run holds now."""
    r = read_json(target.results_path(JSON_NAME))
    return r if r and r.get(reuse.KEY) == target.fingerprint else None


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows: per attack its AUC (adaptive_auc_NAME, where defined) and the share it
    leaves right and unflagged (evaded_robust_NAME); the detection-aware robust accuracy."""
    out = []
    for name, m in result["attacks"].items():
        p = dict(m["params"])
        kw = dict(evaluation=NAME, attack=name, eps=p.get("eps"), eps_iter=p.get("eps_iter"),
                  nb_iter=p.get("nb_iter"), n=result["n_samples"])
        if m.get("auc") is not None:
            out.append(dict(kw, metric="auc", value=m["auc"], key=f"adaptive_auc_{name}"))
        out.append(dict(kw, metric="robust_accuracy", value=m["robust"], key=f"evaded_robust_{name}"))
    out.append(dict(evaluation=NAME, attack="any", n=result["n_samples"], metric="robust_accuracy",
                    value=result["detection_aware_robust_accuracy"], key="detection_aware"))
    return out


def job_options(scale, part, seed: int, members: int, earlier: Optional[dict]) -> Optional[dict]:
    """The options of a study's job on one run (studies.plan)."""
    return dict(n_samples=scale.n_samples, seed=seed, nb_iter=scale.analysis_nb_iter)


def cost(options: dict, run_config: dict) -> float:
    """Member forward-backward passes: PGD, PGD − βH per β, a targeted PGD per wrong class, the
    two stages."""
    from cce_tf import data

    n = batches.test_size(run_config["dataset"], options.get("n_samples"))
    classes = data.info(run_config["dataset"]).num_classes
    return float((1 + len(BETAS) + classes - 1 + 2) * options["nb_iter"] * n * run_config["members"])


def table(result: dict) -> str:
    """The attacks on one run, as ``comparison_table``."""
    return comparison_table([(result["label"], result)])


def comparison_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Per run and attack: AUC, adversarial accuracy, share evading the detector, in percent."""
    body = []
    for label, r in rows:
        for name, m in r["attacks"].items():
            body.append([label, name, pct(m["auc"]), pct(m["adv_accuracy"]), pct(m["evaded"])])
        body.append([label, "**any (detection-aware robust accuracy)**", "", "",
                     f"**{pct(r['detection_aware_robust_accuracy'])}** robust"])
    return markdown_table(["Model", "Attack", "AUC", "adv. acc.", "fooled and not flagged"], body)


FLAGS = analysis_flags(model_files=True)
cli_flags.define_shared(FLAGS, "eps", "eps_iter", note={"eps": "Of eval.analyses.detection (CIFAR-10 8/255).",
                                                        "eps_iter": "The data set's detection η is ε/8."})


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.run_dir:
        raise UsageError("give at least one --run_dir")
    configs = [target_config(d, FLAGS.dataset, FLAGS.trust_model) for d in FLAGS.run_dir]
    for cfg in configs:
        detection.attack_params(cfg["dataset"], FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter)
    labels = run_labels(FLAGS.run_dir, configs, FLAGS.label)
    quiet_tf()
    results = [(label, evaluate(d, Options(FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed, FLAGS.eps, FLAGS.eps_iter,
                                           FLAGS.nb_iter, force=FLAGS.force, verbose=FLAGS.verbose,
                                           dataset=FLAGS.dataset, trust_model=FLAGS.trust_model)))
               for d, label in zip(FLAGS.run_dir, labels)]
    print("\nDetection by entropy against detector-aware attackers (threshold: 5% FPR on clean images); "
          "percentages\n")
    print(comparison_table(results))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.adaptive_detection, console script cce-adaptive-detect)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
