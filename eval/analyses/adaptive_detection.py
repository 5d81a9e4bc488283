"""Detection by entropy against attackers who know the detector: the detection-aware robust accuracy.

Usage::

    python -m eval.analyses.adaptive_detection --run_dir runs/cce_dm [--n_samples 1000] [--nb_iter 20]

    from eval.analyses.adaptive_detection import evaluate
    r = evaluate("runs/cce_dm", n_samples=1000)
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

import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from eval import batches, reuse
from eval.analyses import detection
from eval.flags import analysis_flags
from eval.labels import run_label, run_labels
from eval.output import markdown_table, pct, read_json, write_json
from eval.progress import Progress, estimate_line, quiet_tf
from eval.target import eval_path, open_target, target_config

JSON_NAME = "adaptive_detection.json"
BETAS = (0.1, 0.5, 1.0)
FPR = 0.05


def threshold_at_fpr(h_clean: np.ndarray, fpr: float = FPR) -> float:
    """The entropy above which ``fpr`` of the clean (correctly classified) inputs lie."""
    return float(np.quantile(np.asarray(h_clean, np.float64), 1.0 - fpr))


def _craft(fn, ens, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, bar: Progress,
           **params) -> np.ndarray:
    import keras

    from eval.analyses.attack_suite.engine import batch_seed

    out = []
    for start in range(0, len(x), batch_size):
        keras.utils.set_random_seed(batch_seed(seed, start))  # a batch's result: its samples and the seed
        out.append(fn(ens, x[start:start + batch_size], y[start:start + batch_size], **params))
        bar.add(len(out[-1]))
    return np.concatenate(out) if out else x.copy()


def evaluate(run_dir: str, n_samples: Optional[int] = 1000, batch_size: int = 500, seed: int = 0,
             eps: Optional[float] = None, eps_iter: Optional[float] = None, nb_iter: int = 20,
             betas: Sequence[float] = BETAS, force: bool = False, verbose: int = 1,
             dataset: Optional[str] = None, trust_model: bool = False) -> dict:
    """Every detector-aware attack on the first ``n_samples`` test images; writes and returns
    RUN/eval/adaptive_detection.json's dict. ``run_dir`` may be a model file of any classifier
    (eval.target.Target; its data set ``dataset``; ``trust_model``: a SavedModel loaded unscanned),
    whose results go to PATH.eval/."""
    from attacks import detector_aware, gradient

    cfg, load = open_target(run_dir, dataset, trust_model)
    p = detection.attack_params(cfg["dataset"], eps, eps_iter, nb_iter)
    fp = reuse.fingerprint(run_dir)
    path = eval_path(run_dir, JSON_NAME)
    settings = dict(n_samples=n_samples or None, seed=seed, eps=p["eps"], eps_iter=p["eps_iter"],
                    nb_iter=p["nb_iter"], betas=list(betas), fpr=FPR)
    old = read_json(path)
    decision = reuse.decide(old, fp, settings, force)
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
    if old and old.get(reuse.KEY) != fp:
        reuse.keep_stale(path, old.get(reuse.KEY))
    write_json(path, result)
    log(f"detection-aware robust accuracy {pct(result['detection_aware_robust_accuracy'])}% "
        f"(threshold H > {thr:.3f} flags {100 * FPR:g}% of clean images); wrote {path}")
    return result


def table(rows: Sequence[tuple[str, dict]]) -> str:
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
    rows = [(label, evaluate(d, FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed, FLAGS.eps, FLAGS.eps_iter,
                             FLAGS.nb_iter, force=FLAGS.force, verbose=FLAGS.verbose, dataset=FLAGS.dataset,
                             trust_model=FLAGS.trust_model))
            for d, label in zip(FLAGS.run_dir, labels)]
    print("\nDetection by entropy against detector-aware attackers (threshold: 5% FPR on clean images); "
          "percentages\n")
    print(table(rows))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.adaptive_detection, console script cce-adaptive-detect)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
