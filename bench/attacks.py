"""Benchmark: the suite's compiled PGD against cleverhans' eager PGD, and the whole attack suite.

    python bench/attacks.py                                   # fresh 2-member CNN, Fashion-MNIST, k = 100
    python bench/attacks.py --run_dir RUN --rounds 5          # a trained run's ensemble
    python bench/attacks.py --suite_run_dir RUN               # + the paper's suite on RUN, 1000 samples
    python bench/attacks.py --rounds 1 --n_images 500 --cascade_run_dir RUN   # + the cascade on 1000 images
    python bench/attacks.py --n_images 100 --nb_iter 20 --rounds 2 \\
        --suite_run_dir RUN --suite_n_samples 20 --suite_attacks pgd,spsa   # a quick check

1. PGD throughput (images/s) on the same ensemble, the same test images with their true labels and
   the same ε, η, k (default: the suite's, ``attacks.registry.default_params("pgd", dataset)``):
   the suite's ``attacks.gradient.pgd`` (one ``tf.function`` per model with k as a tensor, so one
   ``tf.while_loop``; timed after one warm-up call that traces it) against cleverhans'
   ``projected_gradient_descent`` called eagerly (its plain Python loop of k steps, no
   ``tf.function``, ``sanity_checks=False``, random start). The two are timed in interleaved rounds
   (median of each) so that machine noise hits both alike. Both must return x_adv inside the ε-ball
   and [0, 1], and give similar robust accuracy: they are the same algorithm, with different random
   starts. PGD's speed does not depend on the weights, so without ``--run_dir`` the ensemble is a
   freshly built one.
2. With ``--suite_run_dir RUN``: ``python -m eval.attack_suite`` with the paper's attacks and
   settings (``PAPER_ATTACKS``) on the first ``--suite_n_samples`` test samples, run with ``--force``
   on a temporary copy of RUN's config.json and weights (RUN's own eval results are neither reused
   nor overwritten), in a subprocess whose progress goes to stderr. Printed: each attack's seconds
   and robust accuracy from the results file, the sanity report's seconds and the total wall time
   (which includes start-up, loading and the natural accuracy on the whole test set).

3. With ``--cascade_run_dir RUN``: the white-box worst case (attacks/cascade.py: PGD, margin PGD,
   multi-targeted PGD, APGD-CE, APGD-T, each on the survivors of the last) on the first
   ``--cascade_n_images`` test images of RUN's ensemble, beside its floor: the cascade's own count of
   images sent through a forward pass and through a forward-and-gradient pass (counted around
   attacks.gradient's PGD and AutoAttack's TF bridge), each times the cost of one image measured in
   the same run at batch 500. Target: wall / floor <= 1.5 and the cascade <= 15 minutes on 1,000
   images of a standard run on the 2-core machine.

Figures are recorded in docs/benchmarks.md.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from attacks.settings import ATTACK_NAMES
from cce_tf import cli_flags
from cce_tf.config import ARCHS
from cce_tf.data import DATASETS

FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "run_dir", "batch_size", "nb_iter", "eps", "eps_iter", "seed",
                        note={"run_dir": "At most one: attack its ensemble (default: a freshly built one).",
                              "nb_iter": "Of PGD (default: the suite's, 100 on the CNN).",
                              "seed": "Weights of a fresh ensemble, random starts."})
flags.DEFINE_enum("dataset", "fashion_mnist", DATASETS, "Data set of the fresh ensemble (ignored with --run_dir).",
                  flag_values=FLAGS)
flags.DEFINE_enum("arch", "cnn", ARCHS, "Member architecture of the fresh ensemble (ignored with --run_dir).",
                  flag_values=FLAGS)
flags.DEFINE_integer("members", 2, "Members N of the fresh ensemble (ignored with --run_dir).", lower_bound=1,
                     upper_bound=16, flag_values=FLAGS)
flags.DEFINE_integer("n_images", 500, "Test images attacked per timed call (the first ones).", lower_bound=1,
                     upper_bound=cli_flags.MAX_SAMPLES, flag_values=FLAGS)
flags.DEFINE_integer("rounds", 3, "Timed rounds (each times both PGDs once, in alternating order).", lower_bound=1,
                     upper_bound=1000, flag_values=FLAGS)
flags.DEFINE_string("suite_run_dir", None, "Also time the whole attack suite on (a copy of) this run.",
                    flag_values=FLAGS)
flags.DEFINE_integer("suite_n_samples", 1000, "--n_samples of the suite run.", lower_bound=1,
                     upper_bound=cli_flags.MAX_SAMPLES, flag_values=FLAGS)
cli_flags.define_choice_list(FLAGS, "suite_attacks", None, ATTACK_NAMES,
                             "(dev) Comma list of attacks for the suite run (default: the paper's, "
                             "attacks.settings.PAPER_ATTACKS).")
flags.DEFINE_string("cascade_run_dir", None, "Also time the cascade (the white-box worst case) on this run.",
                    flag_values=FLAGS)
flags.DEFINE_integer("cascade_n_images", 1000, "Test images the cascade attacks (the first ones).", lower_bound=1,
                     upper_bound=cli_flags.MAX_SAMPLES, flag_values=FLAGS)
flags.DEFINE_integer("cascade_nb_iter", 40, "k of the cascade's PGD stages (the standard scale's).", lower_bound=1,
                     upper_bound=100000, flag_values=FLAGS)
flags.DEFINE_bool("keep_suite_copy", False, "Keep the temporary run copy and its eval results.", flag_values=FLAGS)

TOLERANCE = 1e-6  # float32 slack of the ε-ball and [0, 1] checks, as eval.analyses.attack_suite.engine


def _check_flags() -> None:
    from cce_tf.ensemble import CONFIG_FILE, WEIGHTS_FILE

    if len(FLAGS.run_dir) > 1:
        raise cli_flags.UsageError(f"--run_dir given {len(FLAGS.run_dir)} times: the benchmark attacks one run")
    if FLAGS.suite_attacks == []:
        raise cli_flags.UsageError("--suite_attacks is empty")
    for flag, run_dir in (("run_dir", _run_dir()), ("suite_run_dir", FLAGS.suite_run_dir),
                          ("cascade_run_dir", FLAGS.cascade_run_dir)):
        if run_dir is None:
            continue
        for needed in (CONFIG_FILE, WEIGHTS_FILE):
            if not os.path.isfile(os.path.join(run_dir, needed)):
                raise cli_flags.UsageError(f"--{flag} {run_dir} is not a trained run: no {needed}")


def _run_dir() -> str | None:
    return FLAGS.run_dir[0] if FLAGS.run_dir else None


# --------------------------------------------------------------------------------------------------
# 1. PGD: the suite's compiled one against cleverhans eager
# --------------------------------------------------------------------------------------------------


def bench_pgd() -> None:
    import keras
    import numpy as np
    import tensorflow as tf
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    from attacks import gradient, registry
    from cce_tf import data
    from cce_tf.ensemble import build_ensemble, load_run, read_config
    from eval.batches import predict_labels

    keras.utils.set_random_seed(FLAGS.seed)
    if _run_dir():
        cfg = read_config(_run_dir())
        dataset, arch = cfg["dataset"], cfg["arch"]
        model = load_run(_run_dir())
        what = (f"run {_run_dir()} ({(cfg.get('preset') or cfg['method']).upper()}, "
                f"N = {cfg['members']}, {arch}, {dataset})")
    else:
        dataset, arch = FLAGS.dataset, FLAGS.arch
        info = data.info(dataset)
        model = build_ensemble(arch, info.input_shape, info.num_classes, FLAGS.members)
        what = f"fresh {FLAGS.members}-member {arch} ensemble for {dataset} (untrained weights)"
    params = dict(registry.default_params("pgd", dataset, arch))
    for name in ("eps", "eps_iter", "nb_iter"):
        if getattr(FLAGS, name) is not None:
            params[name] = getattr(FLAGS, name)
    eps, eps_iter, nb_iter = float(params["eps"]), float(params["eps_iter"]), int(params["nb_iter"])
    if eps_iter > eps:
        raise cli_flags.UsageError(f"step size eps_iter={eps_iter:g} exceeds eps={eps:g}")

    x_test, y_test = data.load(dataset, "test")
    x, y = x_test[:FLAGS.n_images], y_test[:FLAGS.n_images].astype(np.int64)
    batches = [(x[i:i + FLAGS.batch_size], y[i:i + FLAGS.batch_size])
               for i in range(0, len(x), FLAGS.batch_size)]
    print(f"\n## PGD: the suite's compiled PGD vs cleverhans eager\n\n"
          f"ensemble: {what}\n"
          f"PGD: eps = {eps:g}, eta = {eps_iter:g}, k = {nb_iter}, random start, true labels; "
          f"{len(x)} test images in batches of {FLAGS.batch_size}; {FLAGS.rounds} round(s), median")

    def suite(xb, yb, k=nb_iter):
        return gradient.pgd(model, xb, yb, eps=eps, eps_iter=eps_iter, nb_iter=k)

    def eager(xb, yb, k=nb_iter):
        # cleverhans as its README calls it: eager, a Python loop of k steps, each step calling the
        # Keras model and a GradientTape op by op.
        return projected_gradient_descent(model, tf.constant(xb), eps, eps_iter, k, np.inf,
                                          clip_min=0.0, clip_max=1.0, y=tf.constant(yb),
                                          rand_init=True, sanity_checks=False).numpy()

    methods = {"suite: attacks.gradient.pgd (tf.function, one tf.while_loop)": suite,
               "cleverhans projected_gradient_descent, eager": eager}
    xb0, yb0 = batches[0]
    for fn in methods.values():  # warm-up: traces the suite's tf.function (k is a tensor: k = 1
        fn(xb0, yb0, k=1)         # traces the same graph); builds eager's kernels and caches

    times = {m: [] for m in methods}
    x_adv = {}
    for r in range(FLAGS.rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for m in order:
            t0 = time.perf_counter()
            out = [methods[m](xb, yb) for xb, yb in batches]  # each returns numpy: synchronised
            times[m].append(time.perf_counter() - t0)
            x_adv[m] = np.concatenate(out)
        print(f"  round {r + 1}/{FLAGS.rounds}: "
              + ", ".join(f"{m.split(':')[0].split(' ')[0]} {times[m][-1]:.2f}s" for m in methods),
              file=sys.stderr, flush=True)

    right = predict_labels(model, x, FLAGS.batch_size) == y
    print(f"\nnatural accuracy on these {len(x)} images: {right.mean():.3f}\n")
    print("| PGD | seconds (median) | images / s | robust accuracy | max L∞ distance | in [0, 1] |")
    print("|---|---:|---:|---:|---:|---|")
    med, robust, inside = {}, {}, {}
    for m in methods:
        med[m] = statistics.median(times[m])
        a = x_adv[m].reshape(len(x), -1)
        dist = float(np.abs(a - x.reshape(len(x), -1)).max()) if len(x) else 0.0
        in_box = bool(a.min() >= -TOLERANCE and a.max() <= 1 + TOLERANCE and np.isfinite(a).all())
        inside[m] = dist <= eps + TOLERANCE and in_box
        robust[m] = right & (predict_labels(model, x_adv[m], FLAGS.batch_size) == y)
        print(f"| {m} | {med[m]:.2f} | {len(x) / med[m]:.1f} | {robust[m].mean():.3f} | "
              f"{dist:.6f} | {'yes' if in_box else 'NO'} |")
    suite_m, eager_m = list(methods)
    print(f"\nspeed-up, suite over eager: {med[eager_m] / med[suite_m]:.2f}x")
    diff = abs(robust[suite_m].mean() - robust[eager_m].mean())
    discordant = int(np.sum(robust[suite_m] != robust[eager_m]))
    # Same images, independent random starts: the paired difference has standard error
    # sqrt(discordant) / n (McNemar); more than 3 of them (or 1 point) means not the same attack.
    tol = max(0.01, 3 * discordant ** 0.5 / max(len(x), 1))
    outside = [m for m in methods if not inside[m]]
    print(f"check: x_adv inside the ε-ball (eps = {eps:g}) and [0, 1]: "
          f"{'NO: ' + ', '.join(outside) if outside else 'yes, both'}")
    print(f"check: robust accuracy differs by {diff:.3f} (tolerance {tol:.3f}): "
          f"{'similar' if diff <= tol else 'NOT similar'}; "
          f"the per-image verdicts differ on {discordant} of {len(x)}")


# --------------------------------------------------------------------------------------------------
# 2. The whole attack suite
# --------------------------------------------------------------------------------------------------


def bench_suite() -> None:
    from attacks import registry
    from cce_tf.ensemble import CONFIG_FILE, WEIGHTS_FILE
    from cce_tf.cli_flags import UsageError
    from eval.analyses.attack_suite.report import attack_label
    from eval.analyses.attack_suite.store import read_results

    print("\n## The attack suite (python -m eval.attack_suite)\n")
    if not FLAGS.suite_run_dir:
        print("skipped: no --suite_run_dir")
        return
    names = list(FLAGS.suite_attacks or registry.PAPER_ATTACKS)
    copy = tempfile.mkdtemp(prefix="cce_bench_suite_")
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy2(os.path.join(FLAGS.suite_run_dir, f), copy)
    cmd = [sys.executable, "-m", "eval.attack_suite", "--run_dir", copy,
           "--n_samples", str(FLAGS.suite_n_samples), "--attacks", ",".join(names), "--force"]
    print(f"run: {FLAGS.suite_run_dir}, copied to {copy}\n"
          f"command: {' '.join(cmd[1:])}  (progress on stderr)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_FORCE_GPU_ALLOW_GROWTH="true")
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr).returncode
    wall = time.perf_counter() - t0
    try:
        results = read_results(copy) or None
    except UsageError:  # unreadable
        results = None
    if rc != 0:
        print(f"note: the suite exited with code {rc}" + ("" if results else " and wrote no results"))
    if results:
        print(f"\nnatural accuracy {results['natural_accuracy']:.4f} on {results['n_test']} test samples\n")
        print("| attack | n_samples | seconds | robust accuracy |\n|---|---:|---:|---:|")
        total = 0.0
        for name in names:
            entry = results["attacks"].get(name, {})
            if "robust_accuracy" in entry:
                total += entry["seconds"]
                ks = [entry["params"]["nb_iter"]] if "nb_iter" in entry["params"] else []
                print(f"| {attack_label(name, ks)} | {entry['n_samples']} | {entry['seconds']:.1f} | "
                      f"{entry['robust_accuracy']:.4f} |")
            else:
                print(f"| {attack_label(name, [])} | | | {entry.get('skipped') and 'skipped' or 'n/a'} |")
        sanity = results.get("sanity", {})
        if "seconds" in sanity:
            print(f"| sanity report | {sanity.get('n_samples', '')} | {sanity['seconds']:.1f} | |")
            total += sanity["seconds"]
        print(f"\nattacks + sanity: {total:.1f}s; total wall time of the suite command: {wall:.1f}s")
        for w in results.get("sanity", {}).get("warnings", []):
            print(f"sanity warning: {w}")
    if FLAGS.keep_suite_copy:
        print(f"kept: {copy}")
    else:
        shutil.rmtree(copy, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# 3. The cascade against its floor
# --------------------------------------------------------------------------------------------------


def _seconds_per_image(fn, x, y, batch: int = 500, rounds: int = 3) -> float:
    """Median over ``rounds`` of the seconds ``fn`` takes per image on ``x`` in batches of ``batch``
    (after one warm-up call that traces it)."""
    import tensorflow as tf

    xs = [(tf.constant(x[i:i + batch]), tf.constant(y[i:i + batch])) for i in range(0, len(x), batch)]
    fn(*xs[0]).numpy()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for xb, yb in xs:
            fn(xb, yb).numpy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(x)


def bench_cascade() -> None:
    import numpy as np
    import tensorflow as tf

    from attacks import autoattack, cascade, gradient, registry
    from cce_tf import data
    from cce_tf.ensemble import load_run, read_config

    print("\n## The cascade (attacks/cascade.py) against its floor\n")
    if not FLAGS.cascade_run_dir:
        print("skipped: no --cascade_run_dir")
        return
    cfg = read_config(FLAGS.cascade_run_dir)
    model = load_run(FLAGS.cascade_run_dir)
    x_test, y_test = data.load(cfg["dataset"], "test")
    x, y = x_test[:FLAGS.cascade_n_images], y_test[:FLAGS.cascade_n_images].astype(np.int64)
    params = registry.default_params("cascade", cfg["dataset"], cfg["arch"], nb_iter=FLAGS.cascade_nb_iter)

    @tf.function
    def forward(xb, yb):
        return model(xb, training=False)

    @tf.function
    def forward_gradient(xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, model(xb, training=False)))
        return tape.gradient(loss, xb)

    t_fwd, t_grad = _seconds_per_image(forward, x, y), _seconds_per_image(forward_gradient, x, y)
    counts = {"forward": 0, "gradient": 0}

    def counted_steps(fn):
        def attack(model_, xs, ys, nb_iter, **kw):
            counts["gradient"] += len(xs) * int(nb_iter)
            return fn(model_, xs, ys, nb_iter=nb_iter, **kw)
        return attack

    class Counted:   # eager forward passes (the labels after each stage, multi-targeted's ranking)
        def __call__(self, xs, training=False):
            if tf.executing_eagerly():
                counts["forward"] += int(xs.shape[0])
            return model(xs, training=training)

    def counted_bridge(original):
        def functions(model_, shape):
            fwd, vjp = original(model_, shape)

            def fwd_counted(xs):
                counts["forward"] += int(xs.shape[0])
                return fwd(xs)

            def vjp_counted(xs, g):
                counts["gradient"] += int(xs.shape[0])
                return vjp(xs, g)
            return fwd_counted, vjp_counted
        return functions

    saved = (gradient.pgd, gradient.pgd_margin, gradient.mul_pgd, autoattack._tf_functions)
    pgd = counted_steps(saved[0])
    gradient.pgd, gradient.pgd_margin = pgd, counted_steps(saved[1])
    gradient.mul_pgd = lambda m, xs, ys, **kw: gradient.multi_targeted(pgd, m, xs, ys, **kw)
    autoattack._tf_functions = counted_bridge(saved[3])
    try:
        t0 = time.perf_counter()
        _, broken_by = cascade.cascade_stages(Counted(), x, y, **params)
        wall = time.perf_counter() - t0
    finally:
        gradient.pgd, gradient.pgd_margin, gradient.mul_pgd, autoattack._tf_functions = saved
    floor = counts["forward"] * t_fwd + counts["gradient"] * t_grad
    left = len(x)
    print(f"run: {FLAGS.cascade_run_dir} ({(cfg.get('preset') or cfg['method']).upper()}, N = {cfg['members']}); "
          f"{len(x)} test images; {', '.join(f'{k} = {v:.4g}' for k, v in params.items())}\n")
    print("| stage | images attacked | images it broke |\n|---|---:|---:|")
    for s, name in enumerate(cascade.STAGES):
        broke = int(np.sum(broken_by == s))
        print(f"| {name} | {left} | {broke}{' (with the clean errors)' if s == 0 else ''} |")
        left -= broke
    print(f"\nrobust after the cascade: {left / len(x):.4f} ({left} of {len(x)})")
    print(f"cost of one image at batch 500: forward {1e3 * t_fwd:.4f} ms, forward + gradient {1e3 * t_grad:.4f} ms")
    print(f"calls: {counts['forward']:,} images forward, {counts['gradient']:,} images forward + gradient")
    print(f"\n| | seconds |\n|---|---:|\n| cascade wall time | {wall:.1f} |\n| floor (calls x cost) | {floor:.1f} |")
    print(f"\nwall / floor: {wall / floor:.2f} (target <= 1.5: {'met' if wall / floor <= 1.5 else 'NOT met'}); "
          f"wall {wall / 60:.1f} min (target <= 15 min on 1,000 images: "
          f"{'met' if wall <= 900 or len(x) < 1000 else 'NOT met'})")


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    _check_flags()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:  # leave GPU memory to the suite's subprocess
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: harmless for the timings
            pass
    device = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    print(f"# Attack benchmark\n\ndevice: {device[0].name}"
          f"{' (' + str(len(gpus)) + ' GPU)' if gpus else ''}; CPU cores (os.cpu_count()): {os.cpu_count()}; "
          f"TensorFlow {tf.__version__}")
    bench_pgd()
    bench_suite()
    bench_cascade()


if __name__ == "__main__":
    sys.exit(cli_flags.run(main, FLAGS))
