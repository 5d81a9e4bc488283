"""Figs 6-8: the loss surface and the predicted labels around an adversarial example x_a, for every
member f^1 .. f^N and for the ensemble f^en (appendix "Loss surface visualization").

Usage::

    python -m figures.loss_surface --run_dir runs/cce_rm [--index 7] [--direction sign|l2]
        [--radius 0.2] [--grid 21]

x_a is PGD against the whole ensemble with the true label (the data set's Table 6 setting,
k = 20). For each model f, the grid of neighbours is x_a + i·u + j·v, i, j ∈ [−radius, radius]
(``--grid`` points per axis, default radius 2ε), where

* u is the gradient of the cross-entropy loss C(f(x_a), y) with respect to the input, normalised:
  ``--direction sign`` (default) u = sign(∇) (so i·u is an L∞ step of size |i|), or
  ``--direction l2`` u = ∇ / ||∇||₂ · √d (the L2 norm of a sign vector, d = number of pixels);
* v is a random Gaussian direction (seeded), made orthogonal to u and scaled to ||v||₂ = ||u||₂.

Each neighbour is clipped to [0, 1] (``--noclip`` to keep the raw grid). One row per model: the
adversarial input, the loss surface (3D), and the map of predicted labels (the true class is
outlined in the legend, x_a marked by a cross). Writes RUN/figures/loss_surface.png and .pdf.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np
from absl import flags

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from eval import batches
from eval.flags import check_radius
from eval.labels import format_eps, run_label
from eval.progress import Progress
from eval.target import load_run_checked
from figures import drawing, example, figure_cli

NAME = "loss_surface"
DIRECTIONS = ("sign", "l2")
COLUMN_TITLES = ("Adversarial input", "Loss surface", "Predicted labels")


def directions(grad: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) from the input gradient: u the normalised gradient, v a random vector ⟂ u with the
    same L2 norm."""
    if kind not in DIRECTIONS:
        raise UsageError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {kind!r}")
    g = grad.astype(np.float64).ravel()
    d = g.size
    if kind == "sign":
        u = np.sign(g)
        if not np.any(u):               # a zero gradient: any direction will do
            u = np.sign(rng.standard_normal(d))
    else:
        norm = np.linalg.norm(g)
        u = g / norm * np.sqrt(d) if norm > 0 else rng.standard_normal(d)
    r = rng.standard_normal(d)
    v = r - (r @ u) / (u @ u) * u
    v *= np.linalg.norm(u) / np.linalg.norm(v)
    return u.reshape(grad.shape), v.reshape(grad.shape)


def surface(model, x_a: np.ndarray, y: int, u: np.ndarray, v: np.ndarray, steps: np.ndarray,
            clip: bool = True, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(loss [G, G], predicted labels [G, G]) of ``model`` on x_a + steps[a]·u + steps[b]·v;
    entry [b, a] (rows = v, columns = u, as imshow draws it)."""
    a, b = np.meshgrid(steps, steps)                       # [G, G]; a varies along columns
    grid = (x_a[None] + a.reshape(-1, 1, 1, 1) * u[None] + b.reshape(-1, 1, 1, 1) * v[None])
    grid = grid.astype(np.float32)
    if clip:
        grid = np.clip(grid, 0.0, 1.0)
    logits = batches.logits(model, grid, batch_size)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    loss = -log_p[:, y]
    g = len(steps)
    return loss.reshape(g, g), logits.argmax(-1).reshape(g, g)


def input_gradient(model, x_a: np.ndarray, y: int) -> np.ndarray:
    """∇_x C(f(x_a), y), the input gradient of the cross-entropy loss."""
    import tensorflow as tf

    from cce_tf.losses import cross_entropy

    x = tf.constant(x_a[None], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = cross_entropy(tf.constant([y], tf.int64), model(x, training=False))
    return tape.gradient(loss, x).numpy()[0]


def make(run_dir: str, index: Optional[int] = None, direction: str = "sign",
         radius: Optional[float] = None, grid: int = 21, clip: bool = True, batch_size: int = 500,
         seed: int = 0, eps: Optional[float] = None, eps_iter: Optional[float] = None,
         nb_iter: int = 20, verbose: int = 1) -> list[str]:
    """Draws Figs 6-8 for a run; returns the PNG and PDF paths. ``verbose``: a progress bar over
    the models' grids (1) or a line when done (2)."""
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if grid < 3:
        raise UsageError(f"--grid must be >= 3, got {grid}")
    ens, cfg = load_run_checked(run_dir)
    ds = cfg["dataset"]
    eps, eps_iter = example.attack_defaults(ds, eps, eps_iter)
    radius = 2 * eps if radius is None else float(radius)
    check_radius(radius, "--radius")
    x, y = batches.test_samples(ds)
    batches.seed_everything(seed)
    index, x_a = example.pick_example(ens, x, y, eps, eps_iter, nb_iter, index, batch_size=batch_size)
    true = int(y[index])
    num_classes = int(cfg.get("num_classes", 10))
    names = drawing.class_names(ds, num_classes)
    label = run_label(cfg)
    steps = np.linspace(-radius, radius, grid)
    rng = np.random.default_rng(seed)

    n = len(ens.members)
    models = list(ens.members) + [ens]
    symbols = [drawing.member_symbol(i) for i in range(n)] + [drawing.ensemble_symbol()]
    cmap = drawing.plt.get_cmap("tab10" if num_classes <= 10 else "tab20", min(num_classes, 20))
    fig = drawing.plt.figure(figsize=(13, 3.9 * len(models)))
    bar = Progress(len(models) * grid * grid, verbose, unit="point")
    for r, (model, sym) in enumerate(zip(models, symbols)):
        u, v = directions(input_gradient(model, x_a, true), direction, rng)
        loss, pred = surface(model, x_a, true, u, v, steps, clip, batch_size)
        bar.add(grid * grid)
        centre_pred = pred[grid // 2, grid // 2]
        letter = "abcdefghijklmnopqrstuvwxyz"[r % 26]

        ax = fig.add_subplot(len(models), 3, 3 * r + 1)
        drawing.show_image(ax, x_a)
        ax.set_title(f"{COLUMN_TITLES[0]}\n(true: {names[true]}, {sym}: {names[centre_pred]})",
                     fontsize=9)
        ax.set_ylabel(f"({letter}) Prediction surface of model {sym}", fontsize=10)

        ax = fig.add_subplot(len(models), 3, 3 * r + 2, projection="3d")
        a, b = np.meshgrid(steps, steps)
        ax.plot_surface(a, b, loss, cmap="coolwarm", linewidth=0, antialiased=True)
        ax.set_title(COLUMN_TITLES[1], fontsize=9)
        ax.set_xlabel("u (gradient)", fontsize=8)
        ax.set_ylabel("v (random, ⊥ u)", fontsize=8)
        ax.set_zlabel("Loss", fontsize=8)
        ticks = [-radius, 0.0, radius]
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
        ax.set_yticks(ticks, [f"{t:.2g}" for t in ticks])
        ax.tick_params(labelsize=7)

        ax = fig.add_subplot(len(models), 3, 3 * r + 3)
        ax.imshow(pred % cmap.N, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, origin="lower",
                  extent=[-radius, radius, -radius, radius], interpolation="nearest")
        ax.plot([0], [0], marker="x", color="black", markersize=8, mew=2)
        ax.set_title(COLUMN_TITLES[2], fontsize=9)
        ax.set_xlabel("u (gradient)", fontsize=8)
        ax.set_ylabel("v (random, ⊥ u)", fontsize=8)
        present = sorted(set(pred.ravel().tolist()))
        handles = [drawing.plt.Rectangle((0, 0), 1, 1, color=cmap(c % cmap.N),
                                        ec="black" if c == true else "none",
                                        lw=2 if c == true else 0) for c in present]
        ax.legend(handles, [names[c] + (" (true)" if c == true else "") for c in present],
                  fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    norm = "sign(∇)" if direction == "sign" else "∇/||∇||₂·√d"
    fig.suptitle(f"Loss surface around adversarial example of {label} (test image {index}, PGD "
                 f"ε = {format_eps(eps, ds)}). Left: Adversarial input. Middle: Loss "
                 f"surface. Right: Predicted labels.\nGrid x_a + i·u + j·v, u = {norm} of the "
                 f"cross-entropy gradient, v random ⊥ u, |i|, |j| ≤ {radius:.3g}"
                 f"{', clipped to [0, 1]' if clip else ''}", fontsize=10)
    fig.tight_layout()
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.figure_flags(*figure_cli.ATTACK_FLAGS, "verbose")
flags.DEFINE_integer("index", None, "Test image (default: the first one PGD breaks).", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_enum("direction", "sign", DIRECTIONS, "Normalisation of u: sign (L∞ steps) or l2.", flag_values=FLAGS)
cli_flags.define_fraction(FLAGS, "radius", None, "Half-width of the grid, e.g. 16/255 (default 2ε of the data set).")
flags.DEFINE_integer("grid", 21, "Grid points per axis.", lower_bound=3, upper_bound=201, flag_values=FLAGS)
flags.DEFINE_bool("clip", True, "Clip the neighbours to [0, 1].", flag_values=FLAGS)


def main(argv: list[str]) -> None:
    for run_dir in figure_cli.run_dirs(FLAGS, argv):
        paths = make(run_dir, FLAGS.index, FLAGS.direction, FLAGS.radius, FLAGS.grid, FLAGS.clip, FLAGS.batch_size,
                     FLAGS.seed, FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter, verbose=FLAGS.verbose)
        print("wrote " + ", ".join(paths))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.loss_surface, cce-figure loss_surface)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
