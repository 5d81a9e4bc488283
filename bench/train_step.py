"""Benchmark: one compiled train step of each method, side by side, and the ratio CCE / ADV-EN.

    python bench/train_step.py                       # CIFAR-10 CNN, k = 10, batch 64, N = 2 and 3
    python bench/train_step.py --arch resnet20 --rounds 20
    python bench/train_step.py --dataset fashion_mnist --rounds 2 --steps 1

The diversity defences run with their own settings (cce_tf.config): GAL without PGD, DVERGE's
distillation of the data set (10 steps), TRS's smoothing PGD (6 second-order steps); --nb_iter sets
the training PGD of ADV, ADV-EN, ADP and CCE only.

Both ADV-EN and CCE run N PGD attacks of k steps through one member each per step (ADV-EN's go
through all N members at once); then ADV-EN trains on 2N member passes and CCE on N(N+1). With a
PGD step costing p and a training pass t, the floor of the ratio is (k p + (N+1) t) / (k p + 2 t).
The methods are timed in interleaved rounds (median of each) so that machine noise hits all alike.
Figures are recorded in docs/benchmarks.md.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from cce_tf import cli_flags
from cce_tf.config import ARCHS, METHODS
from cce_tf.data import DATASETS

FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "batch_size", "nb_iter", batch_size=64, nb_iter=10,
                        note={"nb_iter": "The training PGD of ADV, ADV-EN, ADP and CCE."})
flags.DEFINE_enum("dataset", "cifar10", DATASETS, "Input shape and classes of this data set (random pixels).",
                  flag_values=FLAGS)
flags.DEFINE_enum("arch", "cnn", ARCHS, "Member architecture.", flag_values=FLAGS)
flags.DEFINE_list("members", ["2", "3"], "Ensemble sizes.", flag_values=FLAGS)
cli_flags.define_choice_list(FLAGS, "methods", ["adv", "adv-en", "adp", "cce", "gal", "dverge", "trs"], METHODS,
                             "Methods to time.")
flags.DEFINE_integer("rounds", 10, "Timed rounds (each times every method once).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("steps", 3, "Train steps per method per round.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("jit", False, "Compile the steps with XLA.", flag_values=FLAGS)


def main(argv: list[str]) -> None:
    cli_flags.parse(FLAGS, argv)
    import keras
    import numpy as np
    import tensorflow as tf

    from cce_tf import config, data
    from cce_tf.config import DVERGEConfig, PGDConfig
    from cce_tf.ensemble import build_ensemble
    from cce_tf.methods import make_trainer

    info = data.info(FLAGS.dataset)
    p = config.defaults(FLAGS.dataset, FLAGS.arch)["pgd"]
    pgd_cfg = PGDConfig(eps=p.eps, eps_iter=p.eps_iter, nb_iter=FLAGS.nb_iter, eps_max=p.eps_max)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(FLAGS.batch_size, *info.input_shape)).astype("float32"))
    y = tf.constant(rng.integers(0, info.num_classes, FLAGS.batch_size))
    device = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    print(f"device: {device[0].name}  {FLAGS.dataset} {FLAGS.arch}  batch {FLAGS.batch_size}  k = {FLAGS.nb_iter}"
          f"  jit = {FLAGS.jit}")

    for n in map(int, FLAGS.members):
        steps = {}
        for method in FLAGS.methods:
            keras.utils.set_random_seed(0)
            trainer = make_trainer(method, build_ensemble(FLAGS.arch, info.input_shape, info.num_classes,
                                                          1 if method == "adv" else n), pgd_cfg,
                                   dverge=DVERGEConfig(config.dverge_defaults(FLAGS.dataset)))
            trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
            step = tf.function(trainer.train_step, jit_compile=FLAGS.jit)
            step((x, y))  # trace and compile outside the timing
            steps[method] = step
        times = {m: [] for m in steps}
        for _ in range(FLAGS.rounds):
            for method, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(FLAGS.steps):
                    out = step((x, y))
                float(out["loss"])  # wait for the device
                times[method].append((time.perf_counter() - t0) / FLAGS.steps)
        med = {m: statistics.median(t) for m, t in times.items()}
        print(f"\nN = {n}")
        print("| method | ms / step |\n|---|---|")
        for m, t in med.items():
            print(f"| {m}{' (N = 1)' if m == 'adv' else ''} | {1000 * t:.1f} |")
        if "cce" in med and "adv-en" in med:
            print(f"ratio CCE / ADV-EN at N = {n}: {med['cce'] / med['adv-en']:.3f}")
        if "cce" in med:
            print(", ".join(f"{m.upper()} / CCE {med[m] / med['cce']:.2f}" for m in ("gal", "dverge", "trs") if m in med))


if __name__ == "__main__":
    sys.exit(cli_flags.run(main, FLAGS))
