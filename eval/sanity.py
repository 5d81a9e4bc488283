"""Checks for gradient masking that a careful robustness evaluation runs beside its table.

Usage::

    from eval import sanity
    report = sanity.report(pgd_robust, pgd_params, spsa_vs_pgd=(spsa_mask, pgd_mask))
    report["warnings"]            # [] when every check passes

``pgd_robust(params) -> bool mask`` runs PGD with ``params`` on a fixed subset of the test set and
returns, per sample, whether the model is right on both the clean and the adversarial input
(eval.analyses.attack_suite builds it). The checks are the usual signs that a model hides its gradients
rather than being robust (Athalye et al. 2018, "Obfuscated gradients"; Carlini et al. 2019, "On
evaluating adversarial robustness"):

1. ``eps_sweep``: robust accuracy under PGD falls toward 0 as ε grows, ε × {1, 2, 4, ...} up to
   ``EPS_MAX``; at ``EPS_MAX`` every image can be turned into a grey one, so accuracy above
   ``SWEEP_MAX_ACCURACY`` means PGD is not finding the way (masked or shattered gradients).
2. ``double_steps``: doubling PGD's steps k changes robust accuracy by less than
   ``STEPS_TOLERANCE``; if it does not, the reported k had not converged.
3. ``spsa_vs_pgd``: the gradient-free SPSA does not beat PGD by more than ``SPSA_MARGIN`` on the
   same samples; a gradient-free attack doing better means the gradients mislead PGD.
4. ``sweep_monotone``: robust accuracy does not rise with ε in the sweep of check 1 (by more than
   ``STEPS_TOLERANCE``); a larger ball contains the smaller one, so a rise means PGD got lost.
5. ``below_pgd``: no multi-targeted attack, AutoAttack or PGD on the margin loss is more than
   ``ATTACK_MARGIN`` below cross-entropy PGD on the same samples: the untargeted cross-entropy
   number would overstate robustness (Carlini et al. 2019, "On evaluating adversarial robustness",
   sections 4.3 and 5.2: try other losses and targeted attacks), and the stronger attack's number
   (or the any-attack row) is the one to trust.
6. ``any_vs_restarts``: the any-attack row (per-sample worst case over the suite's attacks) is not
   more than ``ATTACK_MARGIN`` above an independent attack it does not include, PGD on the margin
   loss from ``attacks.registry.RESTARTS`` random starts, on the same samples: a worst case that a
   restarted PGD beats was built from too weak a set of attacks.

Two canaries and check 9 cost no extra attack, so the suite runs them on every evaluation, sanity
sweep or not (``canaries``): an evaluation that fails them cannot rank defences.

7. ``single_step``: single-step FGSM does not find more adversarial examples than its iterative
   counterpart (PGD, else BIM) beyond the sampling noise: the paired 95 % interval of
   (iterative − FGSM) robust accuracy on the same samples must not lie wholly above 0. An
   iterative attack is a superset of FGSM's search; losing to it means k or η is too small, or the
   gradients are masked.
8. ``undefended``: an undefended (naturally trained) model falls below ``UNDEFENDED_MAX_ACCURACY``
   under white-box PGD at the data set's ε. The paper's NAT_2 keeps 9.2 % under its own PGD on
   CIFAR-10 (Table 12's diagonal; 13.0 % on CIFAR-100 at its small ε = 0.01, Table 13); an
   undefended model that keeps more says the attack is too weak to tell defences apart.

9. ``beyond_cascade``: the masking checks (SPSA, B&B, AutoAttack with its FAB-T and Square) break
   no more images that the white-box cascade (attacks/cascade.py) left robust, on the same images,
   than the sampling noise allows: the lower end of the 95 % Wilson interval of that share must not
   exceed ``MASKING_TOLERANCE``. Where it does, the gradients mislead the cascade and its worst case
   is not to be trusted.

Each check returns its numbers and ``passed``; ``report`` gathers them with one warning string per
failed check.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from cce_tf.config import madry_step

EPS_MAX = 0.5
SWEEP_MAX_ACCURACY = 0.05
STEPS_TOLERANCE = 0.01
SPSA_MARGIN = 0.02
ATTACK_MARGIN = 0.02
STRONGER = ("pgd_margin", "mul_pgd", "mul_bim", "mul_mim", "autoattack")  # what check 5 compares
SUBSET = 500  # samples the PGD checks run on (the first ones of the attacked set)
SINGLE_STEP = {"fgsm": ("pgd", "bim")}   # a single-step attack -> its iterative counterparts, first found
UNDEFENDED_MAX_ACCURACY = 0.10
MASKING_CHECKS = ("spsa", "bb_pgd1", "bb_pgd2", "autoattack")   # check 9: gradient-free or not only gradients
MASKING_TOLERANCE = 0.01

RobustFn = Callable[[dict], np.ndarray]


def sweep_eps(eps: float, eps_max: float = EPS_MAX) -> list[float]:
    """ε, 2ε, 4ε, ... below ``eps_max``, then ``eps_max`` itself."""
    values = []
    e = float(eps)
    while e < eps_max:
        values.append(e)
        e *= 2
    return values + [float(eps_max)]


def sweep_params(params: dict, eps: float) -> dict:
    """PGD ``params`` at radius ``eps``: η keeps its ratio to ε, but at least 2.5 ε / k so that k
    steps can cross the ball (Madry et al. 2018's rule), and at most ε (cleverhans asserts η <= ε)."""
    eta = madry_step(eps, params["eps_iter"] * eps / params["eps"], int(params["nb_iter"]))
    return dict(params, eps=float(eps), eps_iter=float(eta))


def check_eps_sweep(pgd_robust: RobustFn, params: dict,
                    max_accuracy: float = SWEEP_MAX_ACCURACY) -> tuple[dict, np.ndarray]:
    """Check 1. Returns (result, the robust mask at the base ε, for reuse by check 2)."""
    eps_values = sweep_eps(params["eps"])
    masks = [pgd_robust(sweep_params(params, e) if i else dict(params))
             for i, e in enumerate(eps_values)]
    acc = [float(m.mean()) for m in masks]
    result = {"eps": eps_values, "robust_accuracy": acc, "max_accuracy": max_accuracy,
              "passed": acc[-1] <= max_accuracy}
    return result, masks[0]


def check_double_steps(pgd_robust: RobustFn, params: dict, base_mask: Optional[np.ndarray] = None,
                       tolerance: float = STEPS_TOLERANCE) -> dict:
    """Check 2: PGD with k and 2k steps; ``base_mask`` is the k-step result if already computed."""
    k = int(params["nb_iter"])
    base = pgd_robust(dict(params)) if base_mask is None else base_mask
    doubled = pgd_robust(dict(params, nb_iter=2 * k))
    acc = [float(base.mean()), float(doubled.mean())]
    return {"nb_iter": [k, 2 * k], "robust_accuracy": acc, "tolerance": tolerance,
            "passed": abs(acc[1] - acc[0]) < tolerance}


def check_spsa_vs_pgd(spsa_mask: np.ndarray, pgd_mask: np.ndarray,
                      margin: float = SPSA_MARGIN) -> dict:
    """Check 3 on the first min(len) samples, which both attacks saw (the suite attacks prefixes)."""
    n = min(len(spsa_mask), len(pgd_mask))
    spsa_acc, pgd_acc = float(spsa_mask[:n].mean()), float(pgd_mask[:n].mean())
    return {"n_samples": n, "spsa": spsa_acc, "pgd": pgd_acc, "margin": margin,
            "passed": not spsa_acc < pgd_acc - margin - 1e-9}  # exactly the margin passes


def check_sweep_monotone(sweep: dict, tolerance: float = STEPS_TOLERANCE) -> dict:
    """Check 4 on check 1's numbers: the largest rise of robust accuracy from one ε to the next."""
    acc = sweep["robust_accuracy"]
    rise = max([b - a for a, b in zip(acc, acc[1:])], default=0.0)
    return {"eps": sweep["eps"], "largest_rise": float(rise), "tolerance": tolerance,
            "passed": rise <= tolerance + 1e-9}


def check_below_pgd(masks: dict[str, np.ndarray], pgd_mask: np.ndarray,
                    margin: float = ATTACK_MARGIN) -> dict:
    """Check 5: each attack of ``masks`` against PGD on the first min(len) samples both attacked."""
    out = {}
    for name, mask in masks.items():
        n = min(len(mask), len(pgd_mask))
        acc, pgd_acc = float(mask[:n].mean()), float(pgd_mask[:n].mean())
        out[name] = {"n_samples": n, "robust_accuracy": acc, "pgd": pgd_acc, "margin": margin,
                     "passed": not acc < pgd_acc - margin - 1e-9}
    return out


def check_any_vs_restarts(any_mask: np.ndarray, restarts_mask: np.ndarray,
                          margin: float = ATTACK_MARGIN) -> dict:
    """Check 6: the any-attack flags against restarted margin PGD's on the first min(len) samples."""
    n = min(len(any_mask), len(restarts_mask))
    acc, restarts = float(np.mean(any_mask[:n])), float(np.mean(restarts_mask[:n]))
    return {"n_samples": n, "any_attack": acc, "pgd_margin_restarts": restarts, "margin": margin,
            "passed": not acc > restarts + margin + 1e-9}


def check_single_step(masks: dict[str, np.ndarray]) -> dict:
    """Check 7 for every single-step attack of ``masks`` whose iterative counterpart is there too."""
    from eval import stats

    out = {}
    for single, iterative in SINGLE_STEP.items():
        other = next((a for a in iterative if a in masks), None)
        if single not in masks or other is None:
            continue
        n = min(len(masks[single]), len(masks[other]))
        d = stats.paired_difference(masks[other][:n], masks[single][:n])
        out[single] = {"iterative": other, "n_samples": n, "single_accuracy": float(np.mean(masks[single][:n])),
                       "iterative_accuracy": float(np.mean(masks[other][:n])), "ci": [d["ci_low"], d["ci_high"]],
                       "passed": not d["ci_low"] > 0}
    return out


def check_beyond_cascade(masks: dict[str, np.ndarray], tolerance: float = MASKING_TOLERANCE) -> dict:
    """Check 9 for every attack of ``MASKING_CHECKS`` in ``masks`` beside ``masks["cascade"]``, each on
    the first min(len) samples both attacked."""
    from eval import stats

    out = {}
    for name in (a for a in MASKING_CHECKS if a in masks and "cascade" in masks):
        n = min(len(masks[name]), len(masks["cascade"]))
        beyond = int(np.sum(~np.asarray(masks[name][:n], bool) & np.asarray(masks["cascade"][:n], bool)))
        low, high = stats.wilson_interval(beyond, n)
        out[name] = {"n_samples": n, "beyond_cascade": beyond, "ci": [low, high], "tolerance": tolerance,
                     "passed": not low > tolerance}
    return out


def check_undefended(pgd_mask: np.ndarray, params: dict,
                     max_accuracy: float = UNDEFENDED_MAX_ACCURACY) -> dict:
    """Check 8 on an undefended model's PGD flags (``params``: that PGD's settings)."""
    acc = float(np.mean(pgd_mask))
    return {"robust_accuracy": acc, "n_samples": int(len(pgd_mask)), "params": dict(params),
            "max_accuracy": max_accuracy, "passed": acc < max_accuracy}


def canaries(masks: dict[str, np.ndarray], undefended: bool, pgd_params: Optional[dict]) -> dict:
    """Checks 7 and 8 from the suite's per-sample flags: ``undefended`` says the model was trained
    without any defence (method NAT), ``pgd_params`` the settings of ``masks["pgd"]``."""
    out = {"single_step": check_single_step(masks), "beyond_cascade": check_beyond_cascade(masks)}
    if undefended and "pgd" in masks and pgd_params is not None:
        out["undefended"] = check_undefended(masks["pgd"], pgd_params)
    return out


def with_canaries(report: dict, checks: dict) -> dict:
    """``report`` with the canaries ``checks`` put in (replacing older ones) and its warnings redone."""
    merged = {k: v for k, v in report.items() if k not in ("single_step", "undefended", "beyond_cascade")}
    merged.update(checks)
    merged["warnings"] = warnings_for(merged)
    return merged


def warnings_for(checks: dict) -> list[str]:
    """One line per failed check, saying what it suggests."""
    out = []
    c = checks.get("eps_sweep", {})
    if c.get("passed") is False:
        out.append(f"eps sweep: robust accuracy {c['robust_accuracy'][-1]:.3f} under PGD at "
                   f"eps={c['eps'][-1]:g} (> {c['max_accuracy']:g}); PGD fails where any image can "
                   f"be turned grey: gradients may be masked")
    c = checks.get("double_steps", {})
    if c.get("passed") is False:
        k, k2 = c["nb_iter"]
        a, a2 = c["robust_accuracy"]
        out.append(f"doubling PGD's steps ({k} -> {k2}) changed robust accuracy by {a2 - a:+.3f} "
                   f"(tolerance {c['tolerance']:g}); PGD has not converged")
    c = checks.get("spsa_vs_pgd", {})
    if c.get("passed") is False:
        out.append(f"gradient-free SPSA ({c['spsa']:.3f}) beats PGD ({c['pgd']:.3f}) by more than "
                   f"{c['margin']:g} on the same {c['n_samples']} samples; gradients mislead PGD")
    c = checks.get("sweep_monotone", {})
    if c.get("passed") is False:
        out.append(f"eps sweep: robust accuracy rises by {c['largest_rise']:.3f} as eps grows (tolerance "
                   f"{c['tolerance']:g}); a larger ball cannot be safer: PGD got lost, gradients may be masked")
    for name, c in checks.get("below_pgd", {}).items():
        if c.get("passed") is False:
            out.append(f"{name} ({c['robust_accuracy']:.3f}) is {c['pgd'] - c['robust_accuracy']:.3f} below "
                       f"cross-entropy PGD ({c['pgd']:.3f}) on the same {c['n_samples']} samples (threshold "
                       f"{c['margin']:g}): PGD overstates robustness here; trust {name} or the any-attack "
                       f"row (Carlini et al. 2019)")
    for name, c in checks.get("single_step", {}).items():
        if c.get("passed") is False:
            out.append(f"canary: single-step {name} ({c['single_accuracy']:.3f}) finds more adversarial examples "
                       f"than {c['iterative']} ({c['iterative_accuracy']:.3f}) on the same {c['n_samples']} samples, "
                       f"beyond the sampling noise (95 % interval of the gap [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]): "
                       f"{c['iterative']} has too few or too small steps here, or the gradients are masked")
    for name, c in checks.get("beyond_cascade", {}).items():
        if c.get("passed") is False:
            out.append(f"masking: {name} breaks {c['beyond_cascade']} of {c['n_samples']} images that the white-box "
                       f"cascade left robust (95 % interval of the share [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}], "
                       f"above {c['tolerance']:g}): the gradients mislead the cascade; its worst case is not to "
                       "be trusted")
    c = checks.get("undefended", {})
    if c.get("passed") is False:
        p = c["params"]
        out.append(f"canary: an undefended model keeps {c['robust_accuracy']:.3f} under PGD (eps={p.get('eps', 0):.4g}, "
                   f"eta={p.get('eps_iter', 0):.4g}, k={p.get('nb_iter')}) on {c['n_samples']} samples "
                   f"(must be < {c['max_accuracy']:g}): this attack is too weak to rank defences")
    c = checks.get("any_vs_restarts", {})
    if c.get("passed") is False:
        out.append(f"any attack ({c['any_attack']:.3f}) is {c['any_attack'] - c['pgd_margin_restarts']:.3f} above "
                   f"margin-loss PGD with random restarts ({c['pgd_margin_restarts']:.3f}) on the same "
                   f"{c['n_samples']} samples (threshold {c['margin']:g}): the suite's attacks are too weak "
                   f"here; trust pgd_margin_restarts")
    return out


def report(pgd_robust: Optional[RobustFn], params: dict, previous: Optional[dict] = None,
           spsa_vs_pgd: Optional[tuple[np.ndarray, np.ndarray]] = None,
           below_pgd: Optional[tuple[dict[str, np.ndarray], np.ndarray]] = None,
           any_vs_restarts: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
    """All checks. ``previous``: checks 1 and 2 from an earlier report with the same settings,
    reused instead of re-running PGD (``pgd_robust`` may then be None). ``spsa_vs_pgd``: the
    (SPSA, PGD) robust masks for check 3, or None if SPSA was not run. ``below_pgd``: ({attack:
    mask} of the ``STRONGER`` attacks that ran, PGD's mask) for check 5. ``any_vs_restarts``: (the
    any-attack flags, restarted margin PGD's) for check 6."""
    if previous is not None:
        checks = {k: previous[k] for k in ("eps_sweep", "double_steps")}
    else:
        sweep, base = check_eps_sweep(pgd_robust, params)
        checks = {"eps_sweep": sweep, "double_steps": check_double_steps(pgd_robust, params, base)}
    checks["spsa_vs_pgd"] = (check_spsa_vs_pgd(*spsa_vs_pgd) if spsa_vs_pgd is not None
                             else {"skipped": "spsa was not run"})
    checks["sweep_monotone"] = check_sweep_monotone(checks["eps_sweep"])
    checks["below_pgd"] = check_below_pgd(*below_pgd) if below_pgd else {}
    if any_vs_restarts is not None:
        checks["any_vs_restarts"] = check_any_vs_restarts(*any_vs_restarts)
    return {"warnings": warnings_for(checks), **checks}
