"""CLI: train CCE or a baseline with the paper's settings.  python -m cce_tf.train [flags]

Examples::

    python -m cce_tf.train                                  # CCE-RM, N = 2, Fashion-MNIST
    python -m cce_tf.train --dataset cifar100               # the paper's CIFAR-100 CNN setting
    python -m cce_tf.train --dataset cifar10 --arch resnet20 --method adp --members 3
    python -m cce_tf.train --strategy mirrored ...          # data-parallel over all local devices

Running the same command again resumes from the last finished epoch (a larger --epochs extends
the run; any other changed setting is refused). A run folder holds
config.json, ensemble.weights.h5 (loadable with cce_tf.ensemble.load_run), checkpoints/,
history.json and TensorBoard logs in logs/ (DESIGN.md, contract 5).

Parts: flag definitions; `settings` (flags + paper defaults -> the run's settings);
`check_resume` (a run folder may only be resumed with the same settings); `EpochCheckpoint`
(checkpoint, weights and history after every good epoch; stops on a NaN loss); `main`.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of the progress output

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "mnist, fashion_mnist, cifar10 or cifar100.")
flags.DEFINE_string("arch", "cnn", "cnn (paper Table 8) or resnet20 (ResNet-20 v1).")
flags.DEFINE_string("method", "cce-rm", "nat, adv, adv-en, adp, cce, or a preset: cce-base, cce-rm, cce-dm.")
flags.DEFINE_integer("members", None, "Ensemble size N (default 2; 1 for adv).")
flags.DEFINE_float("lambda_pm", None, "CCE promoting weight (default from the preset; cce: 1).")
flags.DEFINE_float("lambda_dm", None, "CCE demoting weight (default from the preset; cce: 1).")
flags.DEFINE_string("adv_en_loss", "ensemble", "ADV-EN objective: 'ensemble' (paper) or 'members' (official code).")
flags.DEFINE_integer("epochs", None, "Epochs (default: 180 for CIFAR, 100 for MNIST-like).")
flags.DEFINE_integer("batch_size", None, "Global batch size (default 64).")
flags.DEFINE_float("learning_rate", None, "Adam's initial learning rate (default 1e-3).")
flags.DEFINE_integer("train_subset", 0, "Train on a seeded random subset of this many images (0: all).")
flags.DEFINE_bool("augment", True, "Random 10% shifts (and flips for CIFAR), as the paper.")
flags.DEFINE_float("eps", None, "Training PGD radius (default: per data set, docs/settings.md).")
flags.DEFINE_float("eps_iter", None, "Training PGD step size eta (default: the data set's eta/eps ratio times eps).")
flags.DEFINE_integer("nb_iter", None, "Training PGD steps k.")
flags.DEFINE_float("eps_max", None, "If set, eps ~ U(eps, eps_max) per batch and eta = eps/10.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("out_dir", None, "Run folder (default runs/DATASET_METHOD_ARCH_nN_sSEED).")
flags.DEFINE_string("strategy", "default", "'default' (one device) or 'mirrored' (all local devices).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to try --strategy mirrored without GPUs).")
flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 progress bar, 2 a line per epoch.")

# Settings that may differ between the first run and a resume: where and how long it trains, not
# what it trains (a larger --epochs extends a run; the LR milestones stay fractions of --epochs).
_RESUME_FREE = ("strategy", "cpu_devices", "epochs")


class UsageError(ValueError):
    """Bad input: printed as one line, exit code 2."""


def settings() -> dict:
    """The run's settings: flags over the paper's defaults (cce_tf.config). Raises UsageError."""
    from cce_tf import config, data
    from cce_tf.config import ARCHS, PGDConfig

    if FLAGS.dataset not in data.DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(data.DATASETS)}, got {FLAGS.dataset!r}")
    if FLAGS.arch not in ARCHS:
        raise UsageError(f"--arch must be one of {', '.join(ARCHS)}, got {FLAGS.arch!r}")
    try:
        method, lambda_pm, lambda_dm = config.resolve_method(FLAGS.method, FLAGS.lambda_pm, FLAGS.lambda_dm)
    except ValueError as e:
        raise UsageError(str(e)) from None
    members = FLAGS.members if FLAGS.members is not None else (1 if method == "adv" else 2)
    for name, value in (("members", members), ("lambda_pm", lambda_pm), ("lambda_dm", lambda_dm)):
        if value < (1 if name == "members" else 0) or (name != "members" and not math.isfinite(value)):
            raise UsageError(f"--{name} must be {'>= 1' if name == 'members' else 'a number >= 0'}, got {value}")
    if method == "adv" and members != 1:
        raise UsageError(f"--members must be 1 for --method adv (ADV trains one model), got {members}")
    if FLAGS.adv_en_loss not in ("ensemble", "members"):
        raise UsageError(f"--adv_en_loss must be 'ensemble' or 'members', got {FLAGS.adv_en_loss!r}")
    if FLAGS.strategy not in ("default", "mirrored"):
        raise UsageError(f"--strategy must be 'default' or 'mirrored', got {FLAGS.strategy!r}")

    d = config.defaults(FLAGS.dataset, FLAGS.arch)
    epochs = FLAGS.epochs if FLAGS.epochs is not None else d["epochs"]
    batch_size = FLAGS.batch_size if FLAGS.batch_size is not None else d["batch_size"]
    lr = FLAGS.learning_rate if FLAGS.learning_rate is not None else d["learning_rate"]
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value <= 0:
            raise UsageError(f"--{name} must be > 0, got {value}")
    if not lr > 0:
        raise UsageError(f"--learning_rate must be > 0, got {lr}")
    if FLAGS.train_subset < 0:
        raise UsageError(f"--train_subset must be >= 0, got {FLAGS.train_subset}")

    p = d["pgd"]
    eps = p.eps if FLAGS.eps is None else FLAGS.eps
    eps_max = p.eps_max if FLAGS.eps_max is None else FLAGS.eps_max
    eps_iter = FLAGS.eps_iter if FLAGS.eps_iter is not None else p.eps_iter
    if FLAGS.eps is not None and FLAGS.eps_iter is None:
        eps_iter = p.eps_iter * eps / p.eps   # keep the default ratio eta / eps
    pgd = PGDConfig(eps=eps, eps_iter=eps_iter, nb_iter=p.nb_iter if FLAGS.nb_iter is None else FLAGS.nb_iter,
                    eps_max=eps_max)
    try:
        pgd.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None

    info = data.info(FLAGS.dataset)
    preset = FLAGS.method if FLAGS.method in config.PRESETS else None
    return dict(
        dataset=FLAGS.dataset, arch=FLAGS.arch, method=method, preset=preset, members=members,
        lambda_pm=lambda_pm if method == "cce" else None, lambda_dm=lambda_dm if method == "cce" else None,
        adv_en_loss=FLAGS.adv_en_loss if method == "adv-en" else None,
        epochs=epochs, batch_size=batch_size, learning_rate=lr,
        lr_milestones=list(d["milestones"]), lr_milestones_of_epochs=d["epochs"],
        train_subset=FLAGS.train_subset, augment=FLAGS.augment, flip=FLAGS.augment and info.flip,
        pgd=dict(eps=pgd.eps, eps_iter=pgd.eps_iter, nb_iter=pgd.nb_iter, eps_max=pgd.eps_max),
        seed=FLAGS.seed, input_shape=list(info.input_shape), num_classes=info.num_classes,
        strategy=FLAGS.strategy, cpu_devices=FLAGS.cpu_devices,
    )


def default_out_dir(s: dict) -> str:
    name = s["preset"] or s["method"]
    return os.path.join("runs", f"{s['dataset']}_{name}_{s['arch']}_n{s['members']}_s{s['seed']}")


def check_resume(run_dir: str, s: dict) -> None:
    """A run folder made with other settings is never trained into. Raises UsageError."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            raise UsageError(f"--out_dir {run_dir} exists and is not a run folder (no config.json): choose another")
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--out_dir {run_dir}: unreadable config.json ({e})") from None
    for key, value in s.items():
        if key not in _RESUME_FREE and old.get(key) != value:
            raise UsageError(f"--out_dir {run_dir} was made with {key}={old.get(key)!r}, not {value!r}: "
                             f"use the same settings to resume, or another --out_dir")


def versions() -> dict:
    import cleverhans
    import keras
    import numpy
    import tensorflow as tf
    return dict(python=platform.python_version(), tensorflow=tf.__version__, keras=keras.__version__,
                numpy=numpy.__version__, cleverhans=getattr(cleverhans, "__version__", "4.0.0"))


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # readers never see a half-written file


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected argument {argv[1]!r}")
    s = settings()
    run_dir = FLAGS.out_dir or default_out_dir(s)
    check_resume(run_dir, s)

    import tensorflow as tf
    if FLAGS.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices)
    import keras
    import numpy as np

    from cce_tf import config, data
    from cce_tf.config import PGDConfig
    from cce_tf.ensemble import WEIGHTS_FILE, build_ensemble
    from cce_tf.methods import make_trainer

    # Everything that can fail on input fails before anything is written.
    x_train, y_train = data.load(s["dataset"], "train")
    x_test, y_test = data.load(s["dataset"], "test")
    if s["train_subset"]:
        idx = np.random.default_rng(s["seed"]).permutation(len(x_train))[: s["train_subset"]]
        x_train, y_train = x_train[idx], y_train[idx]
    if len(x_train) < s["batch_size"]:
        raise UsageError(f"--batch_size {s['batch_size']} is larger than the {len(x_train)} training images")

    os.makedirs(run_dir, exist_ok=True)
    _write_json(os.path.join(run_dir, "config.json"), dict(s, versions=versions()))
    keras.utils.set_random_seed(s["seed"])

    strategy = tf.distribute.MirroredStrategy() if s["strategy"] == "mirrored" else tf.distribute.get_strategy()
    print(f"training {s['method']} (N={s['members']}) on {strategy.num_replicas_in_sync} device(s) into {run_dir}")
    with strategy.scope():
        ensemble = build_ensemble(s["arch"], tuple(s["input_shape"]), s["num_classes"], s["members"])
        trainer = make_trainer(s["method"], ensemble, PGDConfig(**s["pgd"]), lambda_pm=s["lambda_pm"] or 0.0,
                               lambda_dm=s["lambda_dm"] or 0.0, adv_en_member_sum=s["adv_en_loss"] == "members")
        optimizer = keras.optimizers.Adam(s["learning_rate"])
        trainer.compile(optimizer=optimizer)
        optimizer.build(ensemble.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        ckpt = tf.train.Checkpoint(ensemble=ensemble, optimizer=optimizer, epoch=epoch)
        manager = tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), max_to_keep=2)
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            print(f"resuming {run_dir} after epoch {int(epoch.numpy())}")

    history_path = os.path.join(run_dir, "history.json")
    history = []
    if os.path.exists(history_path):
        with open(history_path) as f:
            history = [h for h in json.load(f) if h["epoch"] <= int(epoch.numpy())]

    class EpochCheckpoint(keras.callbacks.Callback):
        """After every epoch with a finite loss: checkpoint, weights for load_run, history."""
        nan_epoch = None

        def on_epoch_end(self, e, logs=None):
            logs = dict(logs or {})
            if not all(math.isfinite(v) for v in logs.values()):
                self.nan_epoch = e + 1
                self.model.stop_training = True
                return
            epoch.assign(e + 1)
            manager.save(checkpoint_number=e + 1)
            tmp = os.path.join(run_dir, "ensemble.tmp.weights.h5")
            ensemble.save_weights(tmp)
            os.replace(tmp, os.path.join(run_dir, WEIGHTS_FILE))
            # Keras' LearningRateScheduler puts the epoch's learning_rate into the logs.
            history.append(dict(epoch=e + 1, **{k: float(v) for k, v in logs.items()}))
            _write_json(history_path, history)

    def lr_at(e, _lr=None):
        return config.learning_rate(e, s["learning_rate"], tuple(s["lr_milestones"]),
                                    s["lr_milestones_of_epochs"], s["epochs"])

    saver = EpochCheckpoint()
    if int(epoch.numpy()) < s["epochs"]:
        train_ds = data.train_dataset(x_train, y_train, s["batch_size"], augment=s["augment"], flip=s["flip"],
                                      seed=s["seed"])
        test_ds = data.eval_dataset(x_test, y_test, max(s["batch_size"], 256))
        trainer.fit(train_ds, validation_data=test_ds, initial_epoch=int(epoch.numpy()), epochs=s["epochs"],
                    shuffle=False,  # train_ds shuffles itself
                    verbose=FLAGS.verbose,
                    callbacks=[keras.callbacks.TerminateOnNaN(), keras.callbacks.LearningRateScheduler(lr_at),
                               saver, keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"))])
    if saver.nan_epoch is not None:
        print(f"error: the loss became NaN in epoch {saver.nan_epoch}; stopped. The last good checkpoint "
              f"(epoch {int(epoch.numpy())}) is kept in {os.path.join(run_dir, 'checkpoints')}", file=sys.stderr)
        sys.exit(1)

    acc = trainer.evaluate(data.eval_dataset(x_test, y_test, 256), verbose=0, return_dict=True)["acc"]
    print(f"clean test accuracy: {acc:.4f}  ({s['method']}, N={s['members']}, {s['dataset']}, "
          f"{int(epoch.numpy())} epochs)\nrun written to: {run_dir}")


def run(argv):
    from cce_tf.data import DataError
    logging.set_verbosity(logging.WARNING)
    try:
        main(argv)
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(run)
