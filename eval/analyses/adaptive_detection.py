"""Detection by entropy against attackers who know the detector: the detection-aware robust accuracy.

Usage::

    python -m eval.analyses.adaptive_detection --run_dir runs/cce_dm [--n_samples 1000] [--nb_iter 20] [--max_nb_iter 160]

    from eval.analyses.adaptive_detection import Options, evaluate
    r = evaluate("runs/cce_dm", Options(n_samples=1000))
    r["detection_aware_robust_accuracy"], r["attacks"]["mul_pgd_confident"]["auc"], r["k_check"]["nb_iter"]

The defender flags an input when the entropy of f^en exceeds the threshold that flags 5 % of the clean
test images the ensemble classifies correctly. The attacker knows this (attacks/detector_aware.py):
PGD on C − β·H for each β of ``BETAS`` (up to 10), targeted PGD towards each wrong class (the
lowest-entropy success kept), and a two-stage attack that lowers the entropy of the best untargeted
example; plain PGD (the paper's attacker) is run for reference. Per attack: the AUC as
eval.analyses.detection computes it, and the share of samples it turns into a misclassified input the
detector lets through. The headline, ``detection_aware_robust_accuracy``, is the share of test samples
the ensemble gets right and on which no attack, at any k run, produces such an input.

**k is measured on each run** (``k_ladder``), as PGD's is: every attack runs at k = ``nb_iter``, then
at 2k, 4k, … (at most ``max_nb_iter``) until doubling k moves the detection-aware robust accuracy by
less than a point; the measured k is the smallest such k. The per-attack rows are those of the last
(longest) attack; a run that reaches ``max_nb_iter`` still moving is flagged in ``warnings`` (at k = 20,
the paper's k for a plain attacker, the package overstated CCE-DM_2's detection-aware robust
accuracy by about 6 points: issue "The detector-aware attacker converges").

Writes RUN/eval/adaptive_detection.json with the weights' SHA-256 and its settings (reused by the rule
of eval.reuse; --force recomputes). Each finished k goes to RUN/eval/adaptive_detection.rungs.json
until the ladder ends (then it is removed): an evaluation killed at k = 160 resumes there, not at 20.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Optional, Sequence

import numpy as np
from absl import flags

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
RUNGS_NAME = "adaptive_detection.rungs.json"   # the finished rungs of an evaluation not yet written
BETAS = (0.1, 0.5, 1.0, 3.0, 10.0)
FPR = 0.05
CONVERGED = 0.01   # doubling k moves the detection-aware robust accuracy by less than this: converged
DOUBLINGS = 3      # max_nb_iter's default: nb_iter · 2^DOUBLINGS


def threshold_at_fpr(h_clean: np.ndarray, fpr: float = FPR) -> float:
    """The entropy above which ``fpr`` of the clean (correctly classified) inputs lie."""
    return float(np.quantile(np.asarray(h_clean, np.float64), 1.0 - fpr))


def _craft(fn, ens, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, bar: Progress,
           **params) -> np.ndarray:
    # a batch's result: its samples and the seed (eval.batches.batch_seed)
    return batches.craft(fn, ens, x, y, batch_size, bar, seed=seed, **params)


def k_ladder(evaded_at: Callable[[int], np.ndarray], correct: np.ndarray, nb_iter: int, max_nb_iter: int,
             tolerance: float = CONVERGED) -> tuple[dict, np.ndarray]:
    """Runs ``evaded_at(k)`` (the samples the attacks at k turn into undetected errors) for k = nb_iter,
    2·nb_iter, … ≤ max_nb_iter until doubling k moves the worst case over every k run so far (the
    share of ``correct`` samples no rung evades) by less than ``tolerance``. Returns the check
    ({"rungs": [{"nb_iter", "robust"}], "nb_iter": the measured k or None, "converged", "tolerance"})
    and the union of the evaded masks."""
    evaded = np.zeros(len(correct), bool)
    rungs = []
    k = int(nb_iter)
    while True:
        evaded |= evaded_at(k)
        rungs.append({"nb_iter": k, "robust": float(np.mean(correct & ~evaded))})
        if len(rungs) > 1 and rungs[-2]["robust"] - rungs[-1]["robust"] < tolerance:
            return {"rungs": rungs, "nb_iter": rungs[-2]["nb_iter"], "converged": True,
                    "tolerance": tolerance}, evaded
        if 2 * k > max_nb_iter:
            return {"rungs": rungs, "nb_iter": None, "converged": False, "tolerance": tolerance}, evaded
        k *= 2


def ladder_ks(nb_iter: int, max_nb_iter: int) -> list[int]:
    """Every k ``k_ladder`` may run: nb_iter, 2·nb_iter, … ≤ max_nb_iter (the estimate and the cost)."""
    ks = [int(nb_iter)]
    while 2 * ks[-1] <= max_nb_iter:
        ks.append(2 * ks[-1])
    return ks


def k_warnings(check: dict) -> list[str]:
    """The masking-style warning of an attacker that had not converged at its longest k."""
    r = check["rungs"]
    if check["converged"]:
        return []
    if len(r) < 2:
        return [f"the detector-aware attacks ran at k = {r[0]['nb_iter']} only: max_nb_iter leaves no room to "
                "double k, so their convergence is unchecked"]
    return [f"the detector-aware attacks have not converged: doubling k from {r[-2]['nb_iter']} to "
            f"{r[-1]['nb_iter']} lowered the detection-aware robust accuracy by "
            f"{100 * (r[-2]['robust'] - r[-1]['robust']):.1f} points (>= {100 * check['tolerance']:g})"]


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
    max_nb_iter: Optional[int] = None   # None: nb_iter · 2^DOUBLINGS
    draw: Optional[int] = None   # the test images' draw (eval.batches.draw_order); None: the first n


def evaluate(target, options: Options = Options()) -> dict:
    """Every detector-aware attack on the first ``n_samples`` test images, k measured by ``k_ladder``
    from ``nb_iter`` up to ``max_nb_iter``; writes and returns RUN/eval/adaptive_detection.json's
    dict. ``target``: an eval.target.Target, or a run folder or model file of any classifier (its
    data set ``dataset``; ``trust_model``: a SavedModel loaded unscanned), whose results go to
    PATH.eval/. ``eps_iter`` None: each k gets the detection setting's η for it
    (eval.analyses.detection.attack_params)."""
    from attacks import detector_aware, gradient

    o = options
    n_samples, batch_size, seed, betas, force, verbose = o.n_samples, o.batch_size, o.seed, o.betas, o.force, o.verbose
    target = target if isinstance(target, Target) else Target(target, o.dataset, o.trust_model)
    run_dir, cfg, load = target.path, target.config, target.load
    max_nb_iter = int(o.max_nb_iter or o.nb_iter * 2 ** DOUBLINGS)
    if max_nb_iter < o.nb_iter:
        raise UsageError(f"--max_nb_iter must be >= --nb_iter ({o.nb_iter}), got {max_nb_iter}")
    p = detection.attack_params(cfg["dataset"], o.eps, o.eps_iter, o.nb_iter)
    fp = target.fingerprint
    path = target.results_path(JSON_NAME)
    settings = dict(n_samples=n_samples or None, seed=seed, eps=p["eps"], eps_iter=o.eps_iter,
                    nb_iter=p["nb_iter"], max_nb_iter=max_nb_iter, tolerance=CONVERGED, betas=list(betas), fpr=FPR,
                    **batches.draw_setting(o.draw))
    old, decision = results_file.decide(path, fp, settings, force)
    if decision.reuse:
        return old
    rungs_path = target.results_path(RUNGS_NAME)
    cached, rungs_decision = results_file.decide(rungs_path, fp, settings, force)
    done = dict(cached["rungs"]) if rungs_decision.reuse else {}   # str(k): that rung's evaded, attacks, seconds
    ens = load()
    log = (lambda msg: print(f"[{run_dir}] {msg}", flush=True)) if verbose else (lambda msg: None)
    for line in reuse.explain(path, {"adaptive detection": decision}):
        log(line)
    x, y = batches.test_samples(cfg["dataset"], n_samples or None, o.draw)
    t0 = time.time()
    logits = batches.logits(ens, x, batch_size)
    correct = logits.argmax(-1) == y
    h_clean = batches.entropy_of_logits(logits)
    thr = threshold_at_fpr(h_clean[correct])
    names = ["pgd", *(f"pgd_confident_beta{b:g}" for b in betas), "mul_pgd_confident", "two_stage"]
    steps = sum(ladder_ks(o.nb_iter, max_nb_iter))
    log(estimate_line(ens, x, steps * (1 + len(betas) + (int(cfg["num_classes"]) - 1) + 2), batch_size,
                      f"{', '.join(names)} at k = {o.nb_iter}, doubled until converged (at most {max_nb_iter}; "
                      "the estimate is for every doubling)"))
    results = {}

    def evaded_at(k: int) -> np.ndarray:
        """Every attack at k on every sample; their per-attack results replace the shorter k's. A rung
        finished before (``done``) is read back: the same seeds give the same examples."""
        if str(k) in done:
            results.update(done[str(k)]["attacks"])
            log(f"k = {k}: read back from {rungs_path}")
            return np.isin(np.arange(len(x)), done[str(k)]["evaded"])
        t_rung = time.time()
        q = detection.attack_params(cfg["dataset"], o.eps, o.eps_iter, k)
        kw = dict(eps=q["eps"], eps_iter=q["eps_iter"], nb_iter=k)
        attacks = {"pgd": (gradient.pgd, kw)}
        attacks.update({f"pgd_confident_beta{b:g}": (detector_aware.pgd_confident, dict(kw, beta=b))
                        for b in betas})
        attacks["mul_pgd_confident"] = (detector_aware.mul_pgd_confident, kw)
        attacks["two_stage"] = (detector_aware.two_stage, kw)
        evaded_any = np.zeros(len(x), bool)
        bar = Progress(len(attacks) * len(x), verbose)
        for name, (fn, params) in attacks.items():
            x_adv = _craft(fn, ens, x, y, batch_size, seed, bar, **params)
            if np.abs(x_adv - x).max(initial=0.0) > q["eps"] + 1e-6 or x_adv.min(initial=0) < 0 or x_adv.max(initial=1) > 1:
                raise RuntimeError(f"{name}: x_adv outside the ε-ball or [0, 1]")
            logits_adv = batches.logits(ens, x_adv, batch_size)
            fooled = logits_adv.argmax(-1) != y
            h_adv = batches.entropy_of_logits(logits_adv)
            evaded = correct & fooled & (h_adv <= thr)
            evaded_any |= evaded
            m = detection.detection_metrics(h_clean[correct], h_adv[correct], fooled[correct])
            results[name] = dict(auc=m["auc"], tpr_at_5fpr=m["tpr_at_5fpr"], n_pos=m["n_pos"], n_neg=m["n_neg"],
                                 adv_accuracy=float(np.mean(~fooled)),
                                 evaded=float(evaded.mean()), robust=float(np.mean(correct & ~evaded)),
                                 params=params)
            log(f"k = {k}, {name}: AUC {pct(m['auc'])}, adversarial accuracy {pct(results[name]['adv_accuracy'])}%, "
                f"{pct(results[name]['evaded'])}% misclassified and not flagged")
        log(f"k = {k}: {pct(float(np.mean(correct & ~evaded_any)))}% detection-aware robust at this k alone")
        done[str(k)] = dict(evaded=np.flatnonzero(evaded_any).tolist(), attacks=dict(results),
                            seconds=round(time.time() - t_rung, 2))
        results_file.write(rungs_path, dict(rungs=done, **reuse.stamp(settings, fp)))
        return evaded_any

    read_back = sum(r["seconds"] for r in done.values())   # the time of this result includes its earlier rungs'
    check, evaded_any = k_ladder(evaded_at, correct, p["nb_iter"], max_nb_iter)
    warnings = k_warnings(check)
    result = dict(run_dir=os.path.abspath(run_dir), dataset=cfg["dataset"], label=run_label(cfg),
                  n_samples=int(len(x)), natural_accuracy=float(correct.mean()), threshold=thr, fpr=FPR,
                  attacks=results, detection_aware_robust_accuracy=float(np.mean(correct & ~evaded_any)),
                  k_check=check, warnings=warnings, seconds=round(time.time() - t0 + read_back, 2),
                  **reuse.stamp(settings, fp))
    results_file.write(path, result, fp)
    results_file.discard(rungs_path)
    ladder = ", ".join(f"k = {r['nb_iter']}: {pct(r['robust'])}%" for r in check["rungs"])
    log(f"detection-aware robust accuracy {pct(result['detection_aware_robust_accuracy'])}% "
        f"(threshold H > {thr:.3f} flags {100 * FPR:g}% of clean images; worst case over {ladder}; "
        + (f"measured k = {check['nb_iter']}" if check["converged"] else warnings[0]) + f"); wrote {path}")
    return result


def stored(target: Target) -> Optional[dict]:
    """RUN/eval/adaptive_detection.json when it was computed on the weights the run holds now."""
    r = read_json(target.results_path(JSON_NAME))
    return r if r and r.get(reuse.KEY) == target.fingerprint else None


def check_lines(result: dict) -> tuple[list[str], list[str]]:
    """The page's lines on this result's k-doubling (studies.results.check_lines): a flag where the
    attacker had not converged (its numbers are upper bounds), and the ladder it rests on. A result
    from before k was measured has none."""
    c = result.get("k_check")
    if c is None:
        return [], []
    ladder = ", ".join(f"{x['nb_iter']}: {100 * x['robust']:.1f}" for x in c["rungs"])
    how = f"measured k = {c['nb_iter']}" if c["converged"] else f"**{result['warnings'][0]}**"
    flags = [] if c["converged"] else [f"{result['warnings'][0]}; its detection-aware numbers are upper bounds"]
    return flags, [f"detection-aware robust accuracy at k = {ladder} (n = {result['n_samples']}); {how}"]


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows: per attack its AUC (adaptive_auc_NAME, where defined) and the share it
    leaves right and unflagged (evaded_robust_NAME); the detection-aware robust accuracy. Plain PGD's
    AUC is the detection analysis's (auc_pgd, the paper's protocol): one number for one attack."""
    out = []
    for name, m in result["attacks"].items():
        p = dict(m["params"])
        kw = dict(evaluation=NAME, attack=name, eps=p.get("eps"), eps_iter=p.get("eps_iter"),
                  nb_iter=p.get("nb_iter"), n=result["n_samples"])
        if m.get("auc") is not None and name != "pgd":   # n: the clean and adversarial images the AUC ranks (as detection's)
            out.append(dict(kw, metric="auc", value=m["auc"], key=f"adaptive_auc_{name}",
                            **({"n": m["n_pos"] + m["n_neg"], "n_pos": m["n_pos"]} if "n_pos" in m else {})))
        out.append(dict(kw, metric="robust_accuracy", value=m["robust"], key=f"evaded_robust_{name}"))
    out.append(dict(evaluation=NAME, attack="any", n=result["n_samples"], metric="robust_accuracy",
                    value=result["detection_aware_robust_accuracy"], key="detection_aware"))
    return out


def job_options(scale, part, seed: int, members: int, earlier: Optional[dict]) -> Optional[dict]:
    """The options of a study's job on one run (studies.plan)."""
    return dict(n_samples=scale.adaptive_n_samples or scale.n_samples, seed=seed, nb_iter=scale.analysis_nb_iter,
                max_nb_iter=scale.analysis_nb_iter * 2 ** scale.adaptive_doublings, **scale.draw(seed))


def cost(options: dict, run_config: dict) -> float:
    """Member forward-backward passes: PGD, PGD − βH per β, a targeted PGD per wrong class, the
    two stages, at every k of the doubling up to max_nb_iter (the most it can cost)."""
    from cce_tf import data

    n = batches.test_size(run_config["dataset"], options.get("n_samples"))
    classes = data.info(run_config["dataset"]).num_classes
    k = options["nb_iter"]
    ks = sum(ladder_ks(k, options.get("max_nb_iter", k)))
    return float((1 + len(BETAS) + classes - 1 + 2) * ks * n * run_config["members"])


def table(result: dict) -> str:
    """The attacks on one run, as ``comparison_table``."""
    return comparison_table([(result["label"], result)])


def comparison_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Per run and attack: its k, η and n, AUC, adversarial accuracy, share evading the detector, in
    percent; then the worst case with the k-doubling ladder it rests on."""
    body = []
    for label, r in rows:
        for name, m in r["attacks"].items():
            p = m["params"]
            body.append([label, name, f"k = {p['nb_iter']}, η = {p['eps_iter']:.4g}, n = {r['n_samples']}",
                         pct(m["auc"]), pct(m["adv_accuracy"]), pct(m["evaded"])])
        c = r["k_check"]
        ladder = ", ".join(f"{x['nb_iter']}: {pct(x['robust'])}" for x in c["rungs"])
        body.append([label, "**any (detection-aware robust accuracy)**",
                     f"worst over k = {ladder}; " + (f"measured k = {c['nb_iter']}" if c["converged"]
                                                     else "**not converged**"), "", "",
                     f"**{pct(r['detection_aware_robust_accuracy'])}** robust"])
    return markdown_table(["Model", "Attack", "Setting", "AUC", "adv. acc.", "fooled and not flagged"], body)


FLAGS = analysis_flags(model_files=True)
cli_flags.define_shared(FLAGS, "eps", "eps_iter", note={"eps": "Of eval.analyses.detection (CIFAR-10 8/255).",
                                                        "eps_iter": "The data set's detection η is ε/8 "
                                                                    "(at a k below its own, 2.5 ε / k)."})
flags.DEFINE_integer("max_nb_iter", None, "The longest k the attacks double to while the detection-aware robust "
                     f"accuracy still moves by a point or more (default --nb_iter x {2 ** DOUBLINGS}).",
                     lower_bound=1, flag_values=FLAGS)


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.run_dir:
        raise UsageError("give at least one --run_dir")
    configs = [target_config(d, FLAGS.dataset, FLAGS.trust_model) for d in FLAGS.run_dir]
    for cfg in configs:
        detection.attack_params(cfg["dataset"], FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter)
    if FLAGS.max_nb_iter is not None and FLAGS.max_nb_iter < FLAGS.nb_iter:
        raise UsageError(f"--max_nb_iter must be >= --nb_iter ({FLAGS.nb_iter}), got {FLAGS.max_nb_iter}")
    labels = run_labels(FLAGS.run_dir, configs, FLAGS.label)
    quiet_tf()
    results = [(label, evaluate(d, Options(FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed, FLAGS.eps, FLAGS.eps_iter,
                                           FLAGS.nb_iter, force=FLAGS.force, verbose=FLAGS.verbose,
                                           dataset=FLAGS.dataset, trust_model=FLAGS.trust_model,
                                           max_nb_iter=FLAGS.max_nb_iter)))
               for d, label in zip(FLAGS.run_dir, labels)]
    print("\nDetection by entropy against detector-aware attackers (threshold: 5% FPR on clean images); "
          "percentages\n")
    print(comparison_table(results))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.adaptive_detection, console script cce-adaptive-detect)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
