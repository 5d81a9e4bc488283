"""The black-box (transfer) matrix between models: the paper's Tables 12-13 (appendix "Black-box
attacks evaluation").

Usage::

    python -m eval.analyses.blackbox --run_dir runs/nat --run_dir runs/adv_en --run_dir runs/adp \\
        --run_dir runs/cce_rm [--n_samples 1000] [--eps 8/255 --eps 12/255] [--out_dir results]

    from eval.analyses.blackbox import Options, evaluate
    result = evaluate(["runs/nat", "runs/cce_rm"], Options(n_samples=1000, out_dir="results"))

For every ε and every source run i, PGD (k = 20, the data set's η; CIFAR-10 η = 2/255, CIFAR-100
η = 0.001, Fashion-MNIST η = 0.01) is crafted against the whole ensemble of run i with the true
labels (``attacks.registry``) and tested on every target run j. Entry (i, j) is the accuracy of
target j on source i's x_adv (the share of those inputs it classifies correctly), so the diagonal
is the white-box a(en,en) of Table 6. ε lists: CIFAR-10 {8/255, 12/255}, CIFAR-100 {0.01, 0.02},
Fashion-MNIST / MNIST {0.1, 0.15}. All runs must share a data set.

Writes, under --out_dir (default results/): blackbox.json, blackbox.md (one Markdown table per ε,
rows = source, columns = target, robust accuracy in %) and a heatmap per ε,
blackbox_eps{ε}.png / .pdf.
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
from cce_tf.config import converging_step
from eval import batches, results_file, reuse
from eval.flags import analysis_flags, check_pgd, dataset_settings
from eval.labels import format_eps, run_labels
from eval.output import markdown_table, pct, read_json, save_figure
from eval.progress import Progress, estimate_line, quiet_tf
from eval.target import Target, target_config

NAME = "blackbox"
SCOPE = "runs"   # one job across a study part's runs of one seed (studies.plan)

JSON_NAME = "blackbox.json"


def attack_params(dataset: str, eps_list: Optional[Sequence[float]] = None,
                    eps_iter: Optional[float] = None, nb_iter: int = 20) -> dict:
    """{eps_list, eps_iter, nb_iter}: the data set's Tables 12-13 setting unless overridden."""
    s = dataset_settings(dataset)
    eps_list = list(s.blackbox_eps) if not eps_list else [float(e) for e in eps_list]
    # η keeps the setting's value at the paper's k = 20; a shorter k gets Madry's 2.5 ε / k at the
    # largest ε, one η for the whole list, at most its smallest ε.
    eps_iter = (min(converging_step(max(eps_list), s.eps_iter, int(nb_iter), s.nb_iter), min(eps_list))
                if eps_iter is None else float(eps_iter))
    check_pgd(eps_list, eps_iter, nb_iter)
    return dict(eps_list=eps_list, eps_iter=eps_iter, nb_iter=int(nb_iter))


def check_runs(run_dirs: Sequence[str], dataset: Optional[str] = None,
               trust_model: bool = False) -> list[dict]:
    """The runs' (or model files', eval.target.Target) configs; UsageError unless there is at
    least one and all share a data set."""
    return _one_data_set([target_config(d, dataset, trust_model) for d in run_dirs])


def _one_data_set(configs: list[dict]) -> list[dict]:
    if not configs:
        raise UsageError("give at least one --run_dir (one per model of the matrix)")
    datasets = {c["dataset"] for c in configs}
    if len(datasets) > 1:
        raise UsageError(f"all runs must share a data set, got {', '.join(sorted(datasets))}")
    return configs


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings of one evaluation (the CLI's flags of the same names); ``out_dir``: where
    blackbox.json (also the earlier result that may be reused), blackbox.md and the heatmaps go
    (None: nothing is read or written)."""

    labels: Optional[tuple[str, ...]] = None
    n_samples: Optional[int] = None
    batch_size: int = 500
    seed: int = 0
    eps_list: Optional[tuple[float, ...]] = None
    eps_iter: Optional[float] = None
    nb_iter: int = 20
    out_dir: Optional[str] = None
    force: bool = False
    verbose: int = 1
    dataset: Optional[str] = None
    trust_model: bool = False
    draw: Optional[int] = None   # the test images' draw (eval.batches.draw_order); None: the first n


def evaluate(targets: Sequence, options: Options = Options()) -> dict:
    """The black-box matrix for every ε; returns blackbox.json's dict, written with the page and
    heatmaps under ``out_dir`` when given (``write_outputs``). Any of ``targets`` (eval.target
    .Target, or paths) may be a model file of any classifier (data set ``dataset``;
    ``trust_model``: a SavedModel loaded unscanned).

    ``accuracy[i][j]`` is target j's accuracy on the PGD examples crafted against source i.
    OUT_DIR/blackbox.json is returned instead when it was computed on the same weights of the same
    runs with the same settings (eval.reuse), unless ``force``.
    """
    result = _matrix(targets, options)
    if options.out_dir:
        write_outputs(result, options.out_dir)
    return result


def _matrix(targets: Sequence, o: Options) -> dict:
    labels, n_samples, batch_size, seed, force, verbose = o.labels, o.n_samples, o.batch_size, o.seed, o.force, o.verbose
    previous = os.path.join(o.out_dir, JSON_NAME) if o.out_dir else None
    opened = [t if isinstance(t, Target) else Target(t, o.dataset, o.trust_model) for t in targets]
    run_dirs = [t.path for t in opened]
    configs = _one_data_set([t.config for t in opened])
    dataset = configs[0]["dataset"]
    p = attack_params(dataset, o.eps_list, o.eps_iter, o.nb_iter)
    labels = run_labels(run_dirs, configs, labels)

    def log(msg):
        if verbose:
            print(msg, flush=True)

    fps = [t.fingerprint for t in opened]
    settings = dict(p, n_samples=n_samples or None, seed=seed, attack="pgd",
                    run_dirs=[os.path.abspath(d) for d in run_dirs], **batches.draw_setting(o.draw))
    old = read_json(previous) if previous else None
    decision = reuse.decide(old, fps, settings, force)
    if decision.reuse:
        log(f"reusing {previous} (same weights and settings; --force to recompute)")
        return dict(old, labels=labels)
    for line in reuse.explain(previous or JSON_NAME, {"black-box matrix": decision}):
        log(line)
    models = [t.load() for t in opened]  # after the reuse decision: a reused result loads nothing
    x, y = batches.test_samples(dataset, n_samples or None, o.draw)
    log(estimate_line(models[0], x, len(p["eps_list"]) * len(models) * p["nb_iter"], batch_size,
                             f"PGD (k = {p['nb_iter']}) against each of {len(models)} models at "
                             f"{len(p['eps_list'])} radii"))

    t0 = time.time()
    bar = Progress(len(p["eps_list"]) * len(models) * len(x), verbose)
    natural = [float(np.mean(batches.predict_labels(m, x, batch_size) == y)) for m in models]
    log(f"{len(x)} {dataset} test samples; natural accuracy: "
        + ", ".join(f"{l} {pct(a)}%" for l, a in zip(labels, natural)))
    results = []
    for eps in p["eps_list"]:
        acc = np.zeros((len(models), len(models)))
        for i, source in enumerate(models):
            batches.seed_everything(seed)
            x_adv = batches.craft("pgd", source, x, y, batch_size, bar, eps=eps, eps_iter=p["eps_iter"],
                                 nb_iter=p["nb_iter"])
            for j, target in enumerate(models):
                acc[i, j] = np.mean(batches.predict_labels(target, x_adv, batch_size) == y)
        results.append(dict(eps=eps, eps_iter=p["eps_iter"], nb_iter=p["nb_iter"],
                            accuracy=acc.tolist()))
    return dict(
        dataset=dataset, labels=labels, run_dirs=[os.path.abspath(d) for d in run_dirs],
        natural_accuracy=natural, n_samples=int(len(x)), seed=seed, attack="pgd",
        rows="source (x_adv crafted against it)", columns="target (tested)",
        results=results, seconds=round(time.time() - t0, 2), **reuse.stamp(settings, fps))


TRANSFER_MARGIN = 0.02


def transfer_warnings(result: dict, margin: float = TRANSFER_MARGIN) -> list[str]:
    """The masking check "a transferred attack beats the white-box one" (Carlini et al. 2019,
    "On evaluating adversarial robustness", section 5.3): for every target j, examples crafted
    against another model i should not break j more than j's own white-box PGD does."""
    out = []
    labels = result["labels"]
    for entry in result["results"]:
        acc = np.asarray(entry["accuracy"])
        for j in range(len(labels)):
            for i in range(len(labels)):
                if i != j and acc[i, j] < acc[j, j] - margin - 1e-9:
                    out.append(f"eps={entry['eps']:.4g}: PGD against {labels[i]} leaves {labels[j]} at "
                               f"{acc[i, j]:.3f}, below its white-box {acc[j, j]:.3f} (threshold {margin:g}): "
                               f"{labels[j]}'s gradients mislead white-box PGD; trust the transferred number")
    return out


def stored(targets: Sequence[Target], out_dir: str) -> Optional[dict]:
    """OUT_DIR/blackbox.json when it was computed on the weights the runs hold now."""
    r = read_json(os.path.join(out_dir, JSON_NAME))
    return r if r and r.get(reuse.KEY) == [t.fingerprint for t in targets] else None


def rows(result: dict, attacks: Sequence[str] = ()) -> list[dict]:
    """results.jsonl's rows: per ε (blackbox_epsI) and (source i, target j) the target's accuracy;
    ``run`` is the index of the source (studies.results gives the row its run's columns) and
    ``cell`` names the pair by the runs' labels."""
    labels, out = result["labels"], []
    for i_eps, entry in enumerate(result["results"]):
        for i, src in enumerate(labels):
            for j, dst in enumerate(labels):
                out.append(dict(run=i, evaluation=NAME, attack="pgd", eps=entry["eps"], eps_iter=entry["eps_iter"],
                                nb_iter=entry["nb_iter"], n=result["n_samples"], metric="accuracy",
                                value=entry["accuracy"][i][j], key=f"blackbox_eps{i_eps}", cell=f"{src}>{dst}"))
    return out


def job_options(scale, part, seed: int, labels: Sequence[str]) -> dict:
    """The options of a study's job across the runs ``labels`` of one part and seed (studies.plan);
    no path: the job writes to OUT_DIR/ID, whatever out_dir is called."""
    return dict(labels=list(labels), seed=seed, n_samples=scale.n_samples, nb_iter=scale.analysis_nb_iter,
                **scale.draw(seed))


def cost(options: dict, run_configs: Sequence[dict]) -> float:
    """Member forward-backward passes: PGD against each run at each of the two radii."""
    return float(2 * len(run_configs) * options["nb_iter"] * (options.get("n_samples") or 10000) * 2)


def table(result: dict) -> str:
    """Every ε of the matrix, each under its caption."""
    return "\n\n".join(caption(result, e) + "\n\n" + matrix_table(result, e) for e in result["results"])


def matrix_table(result: dict, entry: dict) -> str:
    """One ε of the matrix, in percent: rows = source, columns = target."""
    labels = result["labels"]
    return markdown_table(
        ["source \\ target", *labels],
        [[labels[i], *(pct(v) for v in row)] for i, row in enumerate(entry["accuracy"])])


def caption(result: dict, entry: dict) -> str:
    ds = result["dataset"]
    return (f"PGD attack with k = {entry['nb_iter']}, ε = {format_eps(entry['eps'], ds)}, "
            f"η = {format_eps(entry['eps_iter'], ds)} ({ds}, n = {result['n_samples']})")


def heatmap(result: dict, entry: dict, path_stem: str) -> list[str]:
    """Heatmap of one ε's matrix (percent, annotated) as PATH_STEM.png and .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = 100 * np.asarray(entry["accuracy"])
    labels = result["labels"]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.4, 1.0 * n + 1.6))
    im = ax.imshow(acc, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("Target model (tested)")
    ax.set_ylabel("Source model (attacked)")
    ax.set_title("Black-box attack: robust accuracy (%)\n" + caption(result, entry), fontsize=9)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{acc[i, j]:.1f}", ha="center", va="center",
                    color="white" if acc[i, j] < 55 else "black",
                    fontweight="bold" if i == j else "normal")
    fig.colorbar(im, ax=ax, label="Robust accuracy (%)")
    return save_figure(fig, path_stem)


def eps_tag(eps: float) -> str:
    return f"{eps:.4f}".rstrip("0").rstrip(".")


def write_outputs(result: dict, out_dir: str) -> list[str]:
    """blackbox.json, blackbox.md and the heatmaps under out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [results_file.write(os.path.join(out_dir, JSON_NAME), result)]
    text = ["Black-box attack evaluation (Tables 12-13): robust accuracy (%) of the target "
            "(column) on PGD examples crafted against the source (row); the diagonal is white-box.",
            ""]
    for entry in result["results"]:
        text += [caption(result, entry), "", matrix_table(result, entry), ""]
        paths += heatmap(result, entry, os.path.join(out_dir, f"blackbox_eps{eps_tag(entry['eps'])}"))
    text += [f"WARNING (masking check): {w}" for w in transfer_warnings(result)]
    md = os.path.join(out_dir, "blackbox.md")
    return [results_file.write_markdown(md, "\n".join(text)), *paths]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

FLAGS = analysis_flags("Where blackbox.json, blackbox.md and the heatmaps go.", model_files=True)
cli_flags.define_shared(FLAGS, "eps", "eps_iter", repeat=("eps",),
                        note={"eps": "Repeat for several radii (default: Tables 12-13's, CIFAR-10 8/255 and 12/255).",
                              "eps_iter": "Here: the data set's η at every radius (Tables 12-13), unless given."})


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    configs = check_runs(FLAGS.run_dir, FLAGS.dataset, FLAGS.trust_model)
    attack_params(configs[0]["dataset"], FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter)
    run_labels(FLAGS.run_dir, configs, FLAGS.label)
    quiet_tf()
    # The matrix (or the one in --out_dir, reused), its tables printed, then the files written.
    result = _matrix(FLAGS.run_dir, Options(FLAGS.label, FLAGS.n_samples, FLAGS.batch_size, FLAGS.seed,
                                            FLAGS.eps or None, FLAGS.eps_iter, FLAGS.nb_iter, FLAGS.out_dir,
                                            force=FLAGS.force, verbose=FLAGS.verbose, dataset=FLAGS.dataset,
                                            trust_model=FLAGS.trust_model))
    print()
    for entry in result["results"]:
        print(caption(result, entry) + "; robust accuracy %, rows = source, columns = target\n")
        print(matrix_table(result, entry) + "\n")
    for w in transfer_warnings(result):
        print(f"WARNING (masking check): {w}")
    paths = write_outputs(result, FLAGS.out_dir)
    print("wrote " + ", ".join(paths))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m eval.analyses.blackbox, console script cce-blackbox)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
