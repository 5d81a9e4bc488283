"""CLI: which training budget has converged; the measurement behind the ``standard`` scale.

    python -m studies.convergence --budgets 10000x5,10000x10 --out_dir results/convergence --max_parallel 2

A budget is TRAIN_IMAGESxEPOCHS (or TRAIN_IMAGESxEPOCHSxK with K the training PGD's steps; default
the data set's, η by Madry's rule when K is shorter), trained with the paper's random shifts unless
--noaugment (then the budget's name ends in ``-noaug``). For every budget, every method of --methods
is trained at N = --members on Fashion-MNIST (seed --seed) and measured by the attack suite: natural
accuracy and PGD (k = --nb_iter, η by the same rule) on the first --n_samples test images, with the
suite's sanity report (k-doubling among its checks). The table gives, per method, natural and PGD
accuracy at each budget and the change from a budget to the listed budget with the same images and
twice its epochs. A budget passes when every method changes by less than ``TOLERANCE`` points on
both: doubling the epochs no longer buys accuracy. Each budget is a study of its own under
OUT_DIR/BUDGET (its runs, job markers and logs), so an interrupted measurement resumes.

--attack_k 10,20,40,80 then measures the attack's k on the first budget's models: PGD at each k (η by
Madry's rule) on the first ``K_SAMPLES`` test images, and the smallest k from which every measured
doubling moves every model by less than ``K_TOLERANCE`` points (eval/sanity.py check 2's threshold). Kept per run in
RUN/eval/attack_k.json, stamped with the weights' SHA-256.
"""
from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from cce_tf import cli_flags, run_lock
from cce_tf.cli_flags import UsageError
from eval.output import read_json, write_json
from eval.progress import quiet_tf

TOLERANCE = 1.5   # percentage points: the "doubling the epochs changes ... by less than 1.5"
K_TOLERANCE = 1.0  # points: eval/sanity.py's STEPS_TOLERANCE
K_SAMPLES = 500    # eval/sanity.py's SUBSET
N_SAMPLES = 2000   # test images the budgets' PGD is measured on
HEADLINE_METHODS = ("nat", "adv-en", "adp", "cce-base", "cce-rm", "cce-dm")
LABELS = {"nat": "NAT", "adv-en": "ADV-EN", "adp": "ADP", "cce-base": "CCE-Base", "cce-rm": "CCE-RM",
          "cce-dm": "CCE-DM", "adv": "ADV", "gal": "GAL", "dverge": "DVERGE", "trs": "TRS", "cce": "CCE"}

FLAGS = cli_flags.new_flags()
flags.DEFINE_list("budgets", ["10000x5", "10000x10"], "Budgets TRAIN_IMAGESxEPOCHS[xK] to train.",
                  flag_values=FLAGS)
flags.DEFINE_list("methods", list(HEADLINE_METHODS), "Methods (or CCE presets) to train at each budget.",
                  flag_values=FLAGS)
flags.DEFINE_bool("augment", True, "Train with the paper's random 10% shifts (cce_tf.train --augment).",
                  flag_values=FLAGS)
flags.DEFINE_integer("members", 2, "Ensemble size N.", lower_bound=1, upper_bound=16, flag_values=FLAGS)
cli_flags.define_shared(FLAGS, "seed", "nb_iter", "n_samples", nb_iter=20,
                        note={"seed": "Here the training seed.", "nb_iter": "Here the measuring PGD's (default 20).",
                              "n_samples": f"Here the images PGD is measured on (default {N_SAMPLES}; natural "
                                           "accuracy: the whole test set)."})
flags.DEFINE_string("out_dir", "results/convergence", "Output folder.", flag_values=FLAGS)
flags.DEFINE_integer("max_parallel", 1, "Jobs at a time (worker processes sharing the cores).",
                     lower_bound=1, upper_bound=64, flag_values=FLAGS)
flags.DEFINE_list("attack_k", [], "Also measure PGD at these k on the first budget's models, e.g. 5,10,20,40.",
                  flag_values=FLAGS)
flags.DEFINE_string("page", None, "Also write the Markdown table here.", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the plan and its estimated time, run nothing.", flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class Budget:
    train_subset: int
    epochs: int
    train_nb_iter: int | None = None    # None: the data set's
    augment: bool = True

    @property
    def name(self) -> str:
        k = "" if self.train_nb_iter is None else f"x{self.train_nb_iter}"
        return f"{self.train_subset}x{self.epochs}{k}" + ("" if self.augment else "-noaug")


def parse_budget(text: str, augment: bool = True) -> Budget:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise UsageError(f"--budgets: {text!r} is not TRAIN_IMAGESxEPOCHS[xK] with positive integers")
    return Budget(*parts, augment=augment)


def study(methods: list[str], members: int):
    """The runs measured: one per method at N = ``members``, scored by the attack suite's PGD."""
    from cce_tf import config
    from studies.spec import RunSpec, Study

    runs = []
    for m in methods:
        if m not in config.METHOD_CHOICES:
            raise UsageError(f"--methods: {m!r} is not one of {', '.join(config.METHOD_CHOICES)}")
        runs.append(RunSpec(label=f"{LABELS.get(m, m)}_{members}", method=m, members=members, arch="cnn"))
    return Study(name="convergence", title="Convergence of the training budget", source="", dataset="fashion_mnist",
                 arch="cnn", layout="attacks", evaluations=("attack_suite",), attacks=("pgd",), runs=tuple(runs),
                 paper={}, claims=(), full_evaluation=True)


def scale_of(budget: Budget, nb_iter: int, n_samples: int):
    from studies.scale import Scale

    return Scale(name=budget.name, dataset="fashion_mnist", archs=("cnn",), train_subset=budget.train_subset,
                 epochs=budget.epochs, train_nb_iter=budget.train_nb_iter, augment=budget.augment,
                 attacks=("pgd",), attack_nb_iter=nb_iter, n_samples=n_samples, sanity=True)


def table(measured: dict[str, dict[str, dict]], budgets: list[Budget], labels: list[str]) -> str:
    """Markdown: per run, natural / PGD per budget and the change at twice the epochs; then the verdict
    per budget. ``measured[budget][label]`` = {"natural": %, "pgd": %, "k_doubling": points}."""
    head = "| run | " + " | ".join(f"{b.name}: natural / PGD" for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * len(budgets)]
    for label in labels:
        cells = []
        for b in budgets:
            m = measured[b.name].get(label)
            cells.append("–" if m is None else f"{m['natural']:.1f} / {m['pgd']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out = ["\n".join(lines), ""]
    for b in budgets:
        twice = next((d for d in budgets if d == dataclasses.replace(b, epochs=2 * b.epochs)), None)
        if twice is None:
            continue
        changes, missing = [], []
        for label in labels:
            m, m2 = measured[b.name].get(label), measured[twice.name].get(label)
            if m is None or m2 is None:
                missing.append(label)
                continue
            changes.append((label, m2["natural"] - m["natural"], m2["pgd"] - m["pgd"]))
        worst = max((max(abs(n), abs(p)) for _, n, p in changes), default=float("nan"))
        verdict = ("not measured yet" if missing else
                   "passes" if worst < TOLERANCE else "does not pass")
        detail = ", ".join(f"{label} {n:+.1f} / {p:+.1f}" for label, n, p in changes)
        largest = "–" if worst != worst else f"{worst:.1f} points"   # nan: nothing to compare yet
        out.append(f"- {b.name} → {twice.name} (natural / PGD change): {detail or '–'}; largest "
                   f"{largest}: **{verdict}** (tolerance {TOLERANCE} points)")
    ks = [f"{label} at {b.name}: {m['k_doubling']:+.1f}" for b in budgets for label, m in measured[b.name].items()
          if m.get("k_doubling") is not None]
    if ks:
        out += ["", "PGD k → 2k (sanity check 2, 500 images), points: " + "; ".join(ks)]
    return "\n".join(out)


def measurements(plan) -> dict[str, dict]:
    """{label: {"natural", "pgd", "k_doubling"}} in percent, from the plan's finished results (the
    rows a study page reads, studies.results.collect, and its runs' sanity reports)."""
    from studies import results

    value = {(r["cell"], r["key"]): 100 * r["value"] for r in results.collect(plan)}
    out = {}
    for cell in plan.cells:
        label = cell.run.label
        if (label, "pgd") not in value:
            continue
        steps = (results.sanity_report(cell.run_dir) or {}).get("double_steps", {}).get("robust_accuracy")
        out[label] = {"natural": value[(label, "natural")], "pgd": value[(label, "pgd")],
                      "k_doubling": 100 * (steps[1] - steps[0]) if steps else None}
    return out


def _measured(stored: dict, fp: str) -> dict[int, float]:
    """{k: accuracy} of an attack_k.json's dict measured on weights ``fp`` ({} for other weights)."""
    from eval import reuse

    return {int(k): v for k, v in stored.get("accuracy", {}).items()} if stored.get(reuse.KEY) == fp else {}


def attack_k(run_dir: str, ks: list[int]) -> dict[int, float]:
    """{k: PGD robust accuracy in percent} on the run's first K_SAMPLES test images, each k with
    Madry's η (attacks.settings); reused from RUN/eval/attack_k.json on the same weights."""
    from attacks import settings
    from cce_tf import data
    from eval import reuse
    from eval.analyses.attack_suite import engine
    from eval.target import Target

    target = Target(run_dir)
    path, fp, cfg = os.path.join(target.results_dir, "attack_k.json"), target.fingerprint, target.config
    have = _measured(read_json(path) or {}, fp)
    todo = [k for k in ks if k not in have]
    if todo:
        model = target.load()
        x, y = data.load(cfg["dataset"], "test")
        for k in todo:
            params = settings.default_params("pgd", cfg["dataset"], cfg["arch"], nb_iter=k)
            mask = engine.robust_mask(model, "pgd", x[:K_SAMPLES], y[:K_SAMPLES], params, seed=0)
            have[k] = 100 * float(mask.mean())
            print(f"{os.path.basename(run_dir)}: PGD k={k} eta={params['eps_iter']:.4g}: {have[k]:.1f} %", flush=True)
        # Read again under the results folder's lock: the k another process measured since stay.
        with run_lock.hold(run_lock.lock_path(target.results_dir), wait=True):
            have = {**_measured(read_json(path) or {}, fp), **have}
            write_json(path, {reuse.KEY: fp, "n_samples": K_SAMPLES,
                              "accuracy": {str(k): v for k, v in sorted(have.items())}})
    return {k: have[k] for k in ks}


def k_table(measured: dict[str, dict[int, float]], ks: list[int]) -> str:
    """PGD accuracy per k and run, and the smallest k whose doubling moves every run < K_TOLERANCE."""
    lines = ["| run | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    lines += [f"| {label} | " + " | ".join(f"{acc[k]:.1f}" for k in ks) + " |" for label, acc in measured.items()]

    def passes(k: int) -> bool:
        return all(abs(a[2 * k] - a[k]) < K_TOLERANCE for a in measured.values())

    # From k on, every doubling measured must pass: one lucky pass below a failing doubling is noise.
    doubled = [k for k in ks if 2 * k in ks]
    passing = [k for i, k in enumerate(doubled) if all(passes(j) for j in doubled[i:])]
    verdict = (f"the smallest k from which every doubling moves every model by less than {K_TOLERANCE:g} point: "
               f"**{passing[0]}**" if passing else f"no k listed passes the doubling check (< {K_TOLERANCE:g} point)")
    return "\n".join(lines) + f"\n\nPGD on the first {K_SAMPLES} test images, η by Madry's rule; {verdict}."


def main(argv: list[str]) -> int:
    cli_flags.parse(FLAGS, argv)
    budgets = [parse_budget(b, FLAGS.augment) for b in FLAGS.budgets]
    try:
        ks = sorted({int(k) for k in FLAGS.attack_k})
    except ValueError:
        raise UsageError(f"--attack_k must be integers like 5,10,20,40, got {','.join(FLAGS.attack_k)!r}") from None
    if ks and min(ks) < 1:
        raise UsageError(f"--attack_k must be >= 1, got {min(ks)}")
    from studies import costs, executors, jobs, plan
    from studies.reproduce import describe

    quiet_tf()
    s = study(FLAGS.methods, FLAGS.members)
    plans = [plan.make(s, scale_of(b, FLAGS.nb_iter, FLAGS.n_samples or N_SAMPLES), (FLAGS.seed,),
                       os.path.join(FLAGS.out_dir, b.name)) for b in budgets]
    failed = 0
    for p in plans:
        done = {j.id for j in p.jobs if jobs.is_done(j, p.out_dir)}
        todo = [j for j in p.jobs if j.id not in done]
        model = costs.load(p.out_dir, threads=max(1, (os.cpu_count() or 1) // FLAGS.max_parallel))
        print(describe(p, done, todo, model, FLAGS.max_parallel, rows=[]), flush=True)
        if FLAGS.dry_run or not todo:
            continue
        os.makedirs(p.out_dir, exist_ok=True)
        pool = executors.make_pool("local", p.out_dir, FLAGS.max_parallel)
        outcomes = executors.execute(todo, p.out_dir, pool, FLAGS.max_parallel,
                                     eta=lambda left, m=model: m.total(left, FLAGS.max_parallel), done_before=done)
        for o in outcomes:
            if not o["ok"]:
                failed += 1
                print(f"failed: {o['id']}: {o['error']} (log: {o['log']})", file=sys.stderr)
    measured = {b.name: measurements(p) for b, p in zip(budgets, plans)}
    command = "python -m studies.convergence " + " ".join(argv[1:])
    md = (f"Generated by `{command}` (Fashion-MNIST, N = {FLAGS.members}, seed {FLAGS.seed}; natural accuracy on "
          f"the whole test set and PGD k = {FLAGS.nb_iter} on its first {FLAGS.n_samples or N_SAMPLES} images, percent).\n\n"
          + table(measured, budgets, [r.label for r in s.runs]))
    if ks and not FLAGS.dry_run:
        trained = [c for c in plans[0].cells if c.run.label in measured[budgets[0].name]]
        by_k = {c.run.label: attack_k(c.run_dir, ks) for c in trained}
        md += f"\n\nThe attack's k on the {budgets[0].name} models:\n\n" + k_table(by_k, ks)
    print(md)
    if FLAGS.page:
        with open(FLAGS.page, "w") as f:
            f.write(md + "\n")
    return 1 if failed else 0


def cli(argv: list[str] | None = None) -> int:
    """python -m studies.convergence: 0 done, 1 some job failed, 2 bad input."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
