"""Transferability among ensemble members: the paper's Table 6 ("Transferability among Ensemble
Members").

Usage::

    python -m eval.analyses.transferability --run_dir runs/cce_rm --run_dir runs/adv_en [--n_samples 1000]

    from eval.analyses.transferability import Options, evaluate, transferability_metrics
    m = transferability_metrics(y, pred_en, pred_members_en, pred_cross)   # pure numpy
    result = evaluate("runs/cce_rm", Options(n_samples=1000))             # attacks, writes JSON

Every adversarial example is PGD (k = 20, the data set's ε and η; CIFAR-10: ε = 8/255,
η = 2/255), crafted with the TRUE labels, through ``attacks.registry``:

* x_a^en against the whole ensemble (its logits are log f^en: the adaptive attack);
* x_a^i against member i alone, for every i.

Symbols (all fractions of the attacked test samples; an accuracy here is the share of the
adversarial inputs a model classifies correctly, so that the paper's identities hold exactly):

    a_en_en        accuracy of f^en on x_a^en
    a[i][j]        accuracy of member j on x_a^i (rows = member attacked, columns = member tested)
    S11,S01,S10,S00  (N = 2) shares of x_a^en by which members are right: S_ab, a = 1 where f^1 is
                   right, b = 1 where f^2 is right (S01: f^1 wrong, f^2 right); they sum to 1
    T              Σ_i Σ_{j≠i} (a[i][j] − a[i][i]); for N = 2 the paper's
                   a(1,2) − a(1,1) + a(2,1) − a(2,2). Smaller T: more transferable x_a^i
    nT             1 − a_en_en − |all members fooled|; N = 2: 1 − a(en,en) − |S00|, the x_a^en that
                   fool f^en without fooling both members
    a_single       a_en_en − |all members right|; N = 2: a(en,en) − |S11|, the x_a^en that f^en
                   still gets right although not every member does
    fooled_by_k    (every N, reported for N > 2) share of x_a^en that fool exactly k members, k = 0..N

Writes RUN/eval/transferability.json per run; with several runs also OUT_DIR/transferability.md
and OUT_DIR/transferability.json (the side-by-side table). The paper's numbers are shown by
python -m studies.reproduce --study table6 (they live in studies/specs/, their one home).
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
from cce_tf.config import converging_step, scaled_step
from eval import batches, results_file, reuse
from eval.flags import analysis_flags, check_pgd, dataset_settings
from eval.labels import run_label, run_labels
from eval.output import markdown_table, pct, read_json
from eval.progress import Progress, estimate_line, quiet_tf
from eval.target import Target, is_model_file, read_run_config

NAME = "transferability"
SCOPE = "run"   # one job per run (studies.plan)

JSON_NAME = "transferability.json"


# --------------------------------------------------------------------------------------------------
# The metrics, from predictions
# --------------------------------------------------------------------------------------------------


def transferability_metrics(y: np.ndarray, pred_en: np.ndarray, pred_members_en: np.ndarray,
                            pred_cross: np.ndarray) -> dict:
    """Table 6's metrics from predicted labels.

    :param y: [B] true labels.
    :param pred_en: [B] f^en's labels on x_a^en.
    :param pred_members_en: [N, B] each member's labels on x_a^en.
    :param pred_cross: [N, N, B]; entry [i, j] is member j's labels on x_a^i.
    :return: dict with a_en_en, a (N×N list), S11, S01, S10, S00 (None unless N = 2), T, nT,
        a_single, fooled_by_k (N + 1 shares), member_accuracy_on_x_en (N), n_samples.
    """
    y = np.asarray(y).reshape(-1)
    pred_en = np.asarray(pred_en).reshape(-1)
    pred_members_en = np.asarray(pred_members_en)
    pred_cross = np.asarray(pred_cross)
    n_members = pred_members_en.shape[0] if pred_members_en.ndim == 2 else -1
    b = len(y)
    if (pred_en.shape != (b,) or pred_members_en.shape != (n_members, b)
            or pred_cross.shape != (n_members, n_members, b)):
        raise ValueError(f"shapes must be y [B], pred_en [B], pred_members_en [N, B], pred_cross "
                         f"[N, N, B]; got {y.shape}, {pred_en.shape}, {pred_members_en.shape}, "
                         f"{pred_cross.shape}")
    if b == 0:
        raise ValueError("no samples")

    right = pred_members_en == y[None]                      # [N, B]
    n_fooled = n_members - right.sum(axis=0)                # [B]
    fooled_by_k = [float(np.mean(n_fooled == k)) for k in range(n_members + 1)]
    a_en_en = float(np.mean(pred_en == y))
    a = (pred_cross == y[None, None]).mean(axis=2)          # [N, N]
    diag = np.diag(a)
    T = float(sum(a[i, j] - diag[i] for i in range(n_members) for j in range(n_members) if j != i))
    out = dict(
        a_en_en=a_en_en,
        a=a.tolist(),
        S11=None, S01=None, S10=None, S00=None,
        T=T,
        nT=1.0 - a_en_en - fooled_by_k[n_members],
        a_single=a_en_en - fooled_by_k[0],
        fooled_by_k=fooled_by_k,
        member_accuracy_on_x_en=right.mean(axis=1).tolist(),
        n_samples=int(b),
    )
    if n_members == 2:
        r1, r2 = right
        out.update(S11=float(np.mean(r1 & r2)), S01=float(np.mean(~r1 & r2)),
                   S10=float(np.mean(r1 & ~r2)), S00=float(np.mean(~r1 & ~r2)))
    return out


# --------------------------------------------------------------------------------------------------
# Attacking a run
# --------------------------------------------------------------------------------------------------


def attack_params(dataset: str, eps: Optional[float] = None, eps_iter: Optional[float] = None,
                  nb_iter: int = 20) -> dict:
    """PGD's {eps, eps_iter, nb_iter}: the data set's Table 6 setting unless overridden (an ε
    without η keeps the data set's η/ε ratio)."""
    s = dataset_settings(dataset)
    eps = s.eps if eps is None else float(eps)
    eps_iter = (converging_step(eps, scaled_step(eps, s.eps, s.eps_iter), int(nb_iter), s.nb_iter)
                if eps_iter is None else float(eps_iter))
    params = dict(eps=eps, eps_iter=eps_iter, nb_iter=int(nb_iter))
    check_pgd([params["eps"]], params["eps_iter"], params["nb_iter"])
    return params


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings of one evaluation (the CLI's flags of the same names)."""

    n_samples: Optional[int] = None
    batch_size: int = 500
    seed: int = 0
    eps: Optional[float] = None
    eps_iter: Optional[float] = None
    nb_iter: int = 20
    force: bool = False
    verbose: int = 1
    draw: Optional[int] = None   # the test images' draw (eval.batches.draw_order); None: the first n


def evaluate(target, options: Options = Options()) -> dict:
    """Attacks one run (``target``: an eval.target.Target or a run folder; an ensemble of N >= 2
    members) as Table 6 does and writes RUN/eval/transferability.json; returns its dict.
    ``verbose``: 0 quiet, 1 log lines and a progress bar, 2 log lines.

    An existing JSON computed on the same weights with the same settings and sample count is
    returned instead (eval.reuse), unless ``force``.
    """
    target = target if isinstance(target, Target) else Target(target)
    run_dir, cfg, o = target.path, target.config, options
    n_samples, batch_size, seed, verbose = o.n_samples or None, o.batch_size, o.seed, o.verbose
    params = attack_params(cfg["dataset"], o.eps, o.eps_iter, o.nb_iter)
    path = target.results_path(JSON_NAME)
    if cfg.get("members", 0) < 2:
        raise UsageError(f"{run_dir}: transferability needs an ensemble of N >= 2 members, "
                                f"this run has N = {cfg.get('members')}")
    fp = target.fingerprint
    settings = dict(params, attack="pgd", seed=seed, n_samples=n_samples, **batches.draw_setting(o.draw))
    old, decision = results_file.decide(path, fp, settings, o.force)
    if decision.reuse:
        if verbose:
            print(f"[{run_dir}] reusing {path} (same weights and settings; --force to recompute)", flush=True)
        return old
    for line in reuse.explain(path, {"transferability": decision}):
        print(f"[{run_dir}] {line}", flush=True)

    ens = target.load()
    x, y = batches.test_samples(cfg["dataset"], n_samples, o.draw)
    n = len(ens.members)
    label = run_label(cfg)

    def log(msg):
        if verbose:
            print(f"[{label} {run_dir}] {msg}", flush=True)

    batches.seed_everything(seed)
    t0 = time.time()
    natural_accuracy = float(np.mean(batches.predict_labels(ens, x, batch_size) == y))
    log(f"{len(x)} test samples, natural accuracy {pct(natural_accuracy)}%; "
        f"PGD eps={params['eps']:.4g} eps_iter={params['eps_iter']:.4g} k={params['nb_iter']}")
    # Each member attack costs about 1/N of the ensemble attack: 2 k ensemble steps in all.
    log(estimate_line(ens, x, 2 * params["nb_iter"], batch_size,
                             f"PGD (k = {params['nb_iter']}) against the ensemble and each member"))
    bar = Progress((n + 1) * len(x), verbose)
    log("PGD against the ensemble (x_a^en), then each member")
    x_en = batches.craft("pgd", ens, x, y, batch_size, bar, **params)
    pred_en = batches.predict_labels(ens, x_en, batch_size)
    pred_members_en = batches.member_logits(ens, x_en, batch_size).argmax(-1)
    pred_cross = np.zeros((n, n, len(x)), np.int64)
    for i, member in enumerate(ens.members):
        x_i = batches.craft("pgd", member, x, y, batch_size, bar, **params)
        pred_cross[i] = batches.member_logits(ens, x_i, batch_size).argmax(-1)

    result = dict(
        run_dir=os.path.abspath(run_dir), dataset=cfg["dataset"], label=label, members=n,
        **transferability_metrics(y, pred_en, pred_members_en, pred_cross),
        natural_accuracy=natural_accuracy,
        params=dict(params, attack="pgd", seed=seed),
        n_samples_requested=n_samples,
        seconds=round(time.time() - t0, 2),
        **reuse.stamp(settings, fp),
    )
    results_file.write(path, result, fp)
    log(f"done in {result['seconds']:.0f} s: a(en,en) = {pct(result['a_en_en'])}%, "
        f"T = {pct(result['T'])}%; wrote {path}")
    return result


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def stored(target: Target) -> Optional[dict]:
    """RUN/eval/transferability.json when it was computed on the weights the run holds now."""
    r = read_json(target.results_path(JSON_NAME))
    return r if r and r.get(reuse.KEY) == target.fingerprint else None


METRICS = ("a_en_en", "a11", "a22", "S11", "S01", "S10", "S00", "T", "nT", "a_single")


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows of one result (studies.results adds the run's columns): every symbol of
    Table 6 it holds (a11, a22: a(1,1), a(2,2))."""
    p = result["params"]
    vals = dict(result, a11=result["a"][0][0], a22=result["a"][1][1])
    return [dict(evaluation=NAME, attack="pgd", eps=p["eps"], eps_iter=p["eps_iter"], nb_iter=p["nb_iter"],
                 n=result["n_samples"], metric=m, value=vals[m], key=m)
            for m in METRICS if vals.get(m) is not None]


def job_options(scale, part, seed: int, members: int, earlier: Optional[dict]) -> Optional[dict]:
    """The options of a study's job on one run (studies.plan), None where it does not apply (N < 2)."""
    if members < 2:
        return None
    return dict(n_samples=scale.n_samples, seed=seed, nb_iter=scale.analysis_nb_iter, **scale.draw(seed))


def cost(options: dict, run_config: dict) -> float:
    """Member forward-backward passes: PGD against the ensemble and against each member."""
    n = batches.test_size(run_config["dataset"], options.get("n_samples"))
    return float(2 * options["nb_iter"] * n * run_config["members"])


def table(result: dict) -> str:
    """Table 6's row of one result, in percentages."""
    return comparison_table([(result["label"], result)])


def comparison_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Table 6 in percentages, one row per (label, result); a(i,i) for every member."""
    max_n = max((len(r["a"]) for _, r in rows), default=2)
    headers = (["Model", "a(en,en)"] + [f"a({i},{i})" for i in range(1, max_n + 1)]
               + ["S11", "S01", "S10", "S00", "T", "nT", "a_single"])
    body = []
    for label, r in rows:
        diag = [r["a"][i][i] if i < len(r["a"]) else None for i in range(max_n)]
        body.append([label, pct(r["a_en_en"]), *map(pct, diag),
                     *(pct(r.get(k)) for k in ("S11", "S01", "S10", "S00", "T", "nT",
                                                      "a_single"))])
    return markdown_table(headers, body)


def matrix_table(label: str, result: dict) -> str:
    """The a(i,j) matrix of one run in percentages: rows = member attacked, columns = tested."""
    n = len(result["a"])
    return markdown_table(
        [f"{label}: x_a^i \\ f^j"] + [f"f^{j + 1}" for j in range(n)],
        [[f"x_a^{i + 1}", *(pct(v) for v in result["a"][i])] for i in range(n)])


def fooled_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Share of x_a^en fooling exactly k members, in percentages."""
    max_n = max(len(r["fooled_by_k"]) - 1 for _, r in rows)
    return markdown_table(
        ["Model"] + [f"fooled by {k}" for k in range(max_n + 1)],
        [[label] + [pct(r["fooled_by_k"][k]) if k < len(r["fooled_by_k"]) else "–"
                    for k in range(max_n + 1)] for label, r in rows])


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

FLAGS = analysis_flags("Where the side-by-side table of several runs goes.")
cli_flags.define_shared(FLAGS, "eps", "eps_iter", note={"eps": "Default: Table 6's (CIFAR-10 8/255)."})


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.run_dir:
        raise UsageError("give at least one --run_dir")
    for run_dir in FLAGS.run_dir:          # validate everything before the slow part
        if is_model_file(run_dir):
            raise UsageError(f"{run_dir}: transferability attacks the members one by one, and a "
                                    "model file is one classifier: give the run folder it came from")
        cfg = read_run_config(run_dir)
        if cfg.get("members", 0) < 2:
            raise UsageError(f"{run_dir}: transferability needs N >= 2 members, "
                                    f"this run has N = {cfg.get('members')}")
        attack_params(cfg["dataset"], FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter)
    configs = [read_run_config(d) for d in FLAGS.run_dir]
    labels = run_labels(FLAGS.run_dir, configs, FLAGS.label)
    quiet_tf()

    rows = []
    for run_dir, label in zip(FLAGS.run_dir, labels):
        r = evaluate(run_dir, Options(FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed, FLAGS.eps, FLAGS.eps_iter,
                                      FLAGS.nb_iter, force=FLAGS.force, verbose=FLAGS.verbose))
        rows.append((label, r))

    if rows:
        datasets = sorted({r["dataset"] for _, r in rows})
        text = [f"Transferability among ensemble members (Table 6), {', '.join(datasets)}, "
                f"PGD k={rows[0][1]['params']['nb_iter']}, n = {rows[0][1]['n_samples']}; "
                f"percentages", "", comparison_table(rows), ""]
        for label, r in rows:
            text += [matrix_table(label, r), ""]
        if any(len(r["a"]) > 2 for _, r in rows):
            text += ["Share of x_a^en fooling exactly k members", "", fooled_table(rows), ""]
        print("\n".join(text))
        if len(rows) > 1:
            os.makedirs(FLAGS.out_dir, exist_ok=True)
            md = os.path.join(FLAGS.out_dir, "transferability.md")
            results_file.write_markdown(md, "\n".join(text))
            results_file.write(os.path.join(FLAGS.out_dir, JSON_NAME),
                               {"runs": [dict(r, label=label) for label, r in rows]})
            print(f"wrote {md} and {os.path.join(FLAGS.out_dir, JSON_NAME)}")


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.transferability, console script cce-transfer)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
