"""CLI: reproduce a paper table or figure with one command: plan, train, evaluate, aggregate.

    python -m studies.reproduce --study table4 --dry_run                  # the paper-scale plan (CIFAR-10)
    python -m studies.reproduce --study paper --scale small --seeds 0,1,2 # every table, Fashion-MNIST, CPU
    python -m studies.reproduce --study headline --scale standard --seeds 0,1,2,3,4   # the main claims, standard scale
    python -m studies.reproduce --study table4 --executor ray --ray_address auto --max_parallel 8

Writes under --out_dir (default results/STUDY): runs/ (one run folder per settings and seed, with
their eval/ results and per-sample flags), jobs/ (a marker per finished job), logs/ (one log per
job), results.jsonl (one row per run, seed, evaluation and metric), results.md and results.csv (the
tables with the paper's numbers and the claims' verdicts). Re-running does only what is missing; a
failed job is reported with its log path, the others go on, the exit code is 1, and the next
invocation retries it. Two invocations on one --out_dir at the same time share the work: each job
runs under its lock (OUT_DIR/jobs/ID.lock), and an invocation that reaches a job the other is
running waits for it and does not run it again. With --executor ray, --out_dir must be storage every node sees (checked at
start by a task that writes there).
"""
from __future__ import annotations

import os
import sys

from absl import flags

from cce_tf import cli_flags, run_lock
from cce_tf.data import DATASETS
from cce_tf.cli_flags import UsageError
from eval.progress import quiet_tf
from studies import spec
from studies.scale import SCALES

FLAGS = cli_flags.new_flags()
flags.DEFINE_string("study", None, "A study: " + ", ".join(spec.names()) + ", or the path of a study "
                    "file of your own (studies/spec.py gives the format).", flag_values=FLAGS)
flags.DEFINE_enum("dataset", None, DATASETS, "Data set of every run (default: the scale's, else the paper's).",
                  flag_values=FLAGS)
flags.DEFINE_enum("scale", "paper", list(SCALES), "paper: the paper's settings; standard: Fashion-MNIST "
                  "models trained near convergence (10 epochs) under the whole attack list; small: a quick CPU "
                  "budget, not converged; tiny: a smoke test of the pipeline (studies/scale.py).", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0"], "Training seeds, e.g. 0,1,2.", flag_values=FLAGS)
flags.DEFINE_string("out_dir", None, "Output folder (default results/STUDY).", flag_values=FLAGS)
flags.DEFINE_enum("executor", "local", ["local", "ray"], "Where jobs run.", flag_values=FLAGS)
flags.DEFINE_string("ray_address", None, "Ray cluster address (default: start a local instance).",
                    flag_values=FLAGS)
flags.DEFINE_integer("max_parallel", 1, "Jobs at a time (local: worker processes, sharing the cores).",
                     lower_bound=1, upper_bound=4096, flag_values=FLAGS)
flags.DEFINE_string("page", None, "Also write the Markdown page here (e.g. docs/results.md), with its "
                    "figures copied into a figures/ folder beside it.", flag_values=FLAGS)
flags.DEFINE_list("kinds", [], "Run only the jobs of these kinds (train, or an evaluation), e.g. train to "
                  "train now and evaluate later; the tables are still written from what is done.", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the plan, its estimated time and the smallest difference its "
                  "claims resolve (from the seed spread measured so far); run nothing.", flag_values=FLAGS)


def seeds() -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in FLAGS.seeds if s.strip())
    except ValueError:
        raise UsageError(f"--seeds must be integers like 0,1,2, got {','.join(FLAGS.seeds)!r}") from None
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise UsageError(f"--seeds must be distinct integers >= 0, got {','.join(FLAGS.seeds)!r}")
    return out


def main(argv: list[str]) -> int:
    """Returns the exit code: 0 all done, 1 some job failed."""
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.study:
        raise UsageError(f"--study is required: one of {', '.join(spec.names())}")
    chosen_seeds = seeds()  # bad input fails here, before the slow imports below
    from studies import costs, executors, jobs, page, plan, results

    quiet_tf()
    try:
        study = spec.load(FLAGS.study)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    except spec.SpecError as e:
        raise UsageError(str(e)) from None
    scale = SCALES[FLAGS.scale]
    out_dir = FLAGS.out_dir or os.path.join("results", study.name)
    p = plan.make(study, scale, chosen_seeds, out_dir, FLAGS.dataset)
    done = {j.id for j in p.jobs if jobs.is_done(j, out_dir)}
    kinds = {j.kind for j in p.jobs}
    if set(FLAGS.kinds) - kinds:
        raise UsageError(f"--kinds: {', '.join(sorted(set(FLAGS.kinds) - kinds))} is not a kind of this plan's "
                         f"jobs ({', '.join(sorted(kinds))})")
    todo = [j for j in p.jobs if j.id not in done and (not FLAGS.kinds or j.kind in FLAGS.kinds)]
    # A job whose training --kinds leaves undone waits for a later invocation.
    todo = [j for j in todo if all(n in done or n in {t.id for t in todo} for n in j.needs)]
    parallel = FLAGS.max_parallel
    model = costs.load(out_dir, threads=max(1, (os.cpu_count() or 1) // parallel))
    print(describe(p, done, todo, model, parallel, results.collect(p)))
    if FLAGS.dry_run:
        return 0

    os.makedirs(out_dir, exist_ok=True)
    pool = executors.make_pool(FLAGS.executor, out_dir, parallel, FLAGS.ray_address)
    outcomes = executors.execute(todo, out_dir, pool, parallel, eta=lambda left: model.total(left, parallel),
                                 done_before=done)
    # Under out_dir's lock: another invocation of the study finishing now writes the tables after
    # this one, never into the same files at the same time.
    with run_lock.hold(run_lock.lock_path(out_dir), wait=True):
        rows = results.collect(p)
        results.write_jsonl(rows, os.path.join(out_dir, "results.jsonl"))
        command = "python -m studies.reproduce " + " ".join(a for a in argv[1:])
        header = f"<!-- generated by: {command} -->\n\nGenerated by `{command}`."
        md, table_csv = page.render(p, rows, header=header,
                                       link=lambda study, png: os.path.relpath(png, out_dir))
        for name, text in (("results.md", md), ("results.csv", table_csv)):
            with open(os.path.join(out_dir, name), "w") as f:
                f.write(text)
        if FLAGS.page:
            write_page(p, rows, header, FLAGS.page)
    failed = [o for o in outcomes if not o["ok"]]
    seconds = sum(o["seconds"] for o in outcomes)
    print(f"{len(outcomes) - len(failed)} job(s) done, {len(failed)} failed ({seconds / 60:.1f} job-minutes); "
          f"wrote {out_dir}/results.jsonl ({len(rows)} rows), results.md, results.csv")
    for o in failed:
        print(f"failed: {o['id']}: {o['error']} (log: {o['log']})", file=sys.stderr)
    return 1 if failed else 0


def figure_copy(page: str, part: str, png: str) -> str:
    """Where ``page`` keeps its copy of a part's figure: figures/PAGE/PART/ beside the page, so that two
    pages in one folder (docs/results.md and docs/results-small.md) never overwrite each other's
    figures of the same part and run folder."""
    folder, name = os.path.split(os.path.abspath(page))
    return os.path.join(folder, "figures", os.path.splitext(name)[0], part, "_".join(png.split(os.sep)[-3:]))


def write_page(p, rows: list[dict], header: str, page: str) -> None:
    """The Markdown page at ``page``, its figures copied beside it (figure_copy)."""
    import shutil

    from studies.page import render

    folder = os.path.dirname(os.path.abspath(page))

    def link(part: str, png: str) -> str:
        dest = figure_copy(page, part, png)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(png, dest)
        return os.path.relpath(dest, folder)

    md, _ = render(p, rows, header=header, link=link)
    with open(page, "w") as f:
        f.write(md)
    print(f"wrote {page}")


def describe(p, done: set[str], todo: list, model, parallel: int, rows: list[dict]) -> str:
    """The plan: runs to train, evaluations to do, what is done, the estimated time, and the claims'
    seeds and resolution from ``rows``, the results so far (studies.results.resolution)."""
    from studies import results
    from studies.plan import TRAIN

    kinds: dict[str, list[int]] = {}
    for j in p.jobs:
        k = kinds.setdefault(j.kind, [0, 0])
        k[0 if j.id in done else 1] += 1
    lines = [f"study {p.study.name} ({p.study.title}), scale {p.scale.name}, seeds "
             f"{','.join(map(str, p.seeds))}, out_dir {p.out_dir}"]
    datasets = sorted({c.dataset for c in p.cells})
    lines.append(f"data: {', '.join(datasets) or '-'}; {len({c.run_dir for c in p.cells})} run folders "
                 f"for {len(p.cells)} table cells")
    for kind, (d, t) in kinds.items():
        lines.append(f"  {kind:16s} {d + t:4d} jobs: {d} done, {t} to do")
    for line in p.left_out:
        lines.append(f"  left out: {line}")
    train_s = sum(model.seconds(j) for j in todo if j.kind == TRAIN)
    eval_s = sum(model.seconds(j) for j in todo if j.kind != TRAIN)
    wall = model.total(todo, parallel)
    if wall != wall:  # nan: no job of this kind timed yet
        lines.append("estimate: unknown (no timed jobs yet; python -m studies.costs --from OUT_DIR fits "
                     "studies/timings.json from any finished study)")
    else:
        lines.append(f"estimate ({model.source}, {parallel} worker(s) of {model.threads} thread(s)): "
                     f"training {train_s / 3600:.2f} h, evaluation {eval_s / 3600:.2f} h of job time; "
                     f"wall clock about {wall / 3600:.2f} h")
    return "\n".join(lines + results.resolution(p, rows))


def cli(argv: list[str] | None = None) -> int:
    """The command line (python -m studies.reproduce, console script cce-reproduce): 0 all done, 1 some
    job failed, 2 bad input, 130 interrupted."""
    try:
        return cli_flags.run(main, FLAGS, argv)
    except KeyboardInterrupt:
        print("\ninterrupted: finished jobs are kept; run the same command to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
