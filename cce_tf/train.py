"""CLI: train CCE or a baseline with the paper's settings.  python -m cce_tf.train [flags]

Examples::

    python -m cce_tf.train                                  # CCE-RM, N = 2, Fashion-MNIST
    python -m cce_tf.train --dataset cifar100               # the paper's CIFAR-100 CNN setting
    python -m cce_tf.train --dataset cifar10 --arch resnet20 --method adp --members 3
    python -m cce_tf.train --strategy mirrored ...          # data-parallel over all local devices
    python -m cce_tf.train --epochs 180 --lr_milestones 80,120,160
    python -m cce_tf.train --method gal --members 3         # GAL, lambda 0.5 (--gal_adv: with PGD training)
    python -m cce_tf.train --method trs --members 3         # TRS, lambda_a 10, smoothing PGD 0.1 -> 0.2
    python -m cce_tf.train --dataset cifar10 --arch resnet20 --method nat --members 3 --out_dir runs/nat3
    python -m cce_tf.train --dataset cifar10 --arch resnet20 --method dverge --members 3 --init_from runs/nat3

--init_from RUN warm-starts a new run's members from RUN's ensemble.weights.h5 (same dataset, arch
and members, or exit 2), as DVERGE starts from pre-trained members; config.json records the path
and the SHA-256 of those weights (init_from_sha256).

A run folder holds config.json, ensemble.weights.h5 (the weights, whose SHA-256 identifies every
result), ensemble.keras (the same weights as a standard Keras file, what cce_tf.ensemble.load_run
reads), checkpoints/, history.json and TensorBoard logs in logs/ (DESIGN.md, contract 5).

Resuming. Running the same command again resumes from the last backup of the training state:
weights, Adam, the epoch and the step in it, the metrics so far, and the random state (PGD's
random starts, Dropout). The state is backed up every --backup_every_steps steps, every
--backup_every_seconds seconds and after every epoch, so a killed run loses minutes, not an epoch.
The batches are a pure function of (seed, epoch, step) (cce_tf.data.train_dataset), so a resumed run
sees the batches it would have seen; with --deterministic (TensorFlow's op determinism) it ends with
the same weights as an uninterrupted run on the same machine. A larger --epochs extends a run; any
other changed setting that changes what is trained is refused.

Learning rate. Adam's rate is multiplied by 0.1 after each --lr_milestones epoch (default: the
paper's milestones at the same fractions of --epochs, those inside the run). The milestones are
fixed in config.json when a run is created, so an extended run goes on at its last rate; given again
on a resume, --lr_milestones sets the milestones of the epochs to come only: an epoch already started
never changes its rate. history.json records the rate each epoch used.

Exit codes: 0 done; 2 bad input (a bad flag, other settings than the run folder's, a missing data
file, a corrupt config.json, ensemble.weights.h5, history.json or checkpoint, or another process
training into --out_dir, which the line names), one line on stderr, nothing written; 1 the run
failed: a NaN loss, or a file could not be written (disk full, no permission), one line naming it.
A failed write leaves the files it would have replaced as they were: every file is written under a
temporary name first, then renamed.

Parts: the options and the run's settings are cce_tf.train_settings' (`TrainOptions`, one field
per flag: the flags below take their defaults from it; `Settings`, checked before the seconds-long
TensorFlow import); the checks before a run folder is trained into, cce_tf.resume's; the training
state and its `Backup`, cce_tf.checkpoint's. Here: the flags, `parse`; `train` (the run
folder's lock, cce_tf.run_lock: a second training into a folder being trained exits 2 at once,
naming the first); `train_into` (data, the state restored from the latest checkpoint, the epochs;
it raises UsageError, DataError or RunFailed); `cli` (those errors -> one line and the exit code).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys

from absl import flags, logging

from cce_tf import cli_flags, config, data, resume, run_lock
from cce_tf.checkpoint import Backup, RunFailed, TrainingState, WriteError, position_text, write_json, writing
from cce_tf.cli_flags import UsageError, one_line
from cce_tf.run_files import CONFIG_FILE, LOG_DIR, WEIGHTS_FILE
from cce_tf.train_settings import CHOICES, Settings, TrainOptions

_D = TrainOptions()
FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "batch_size", "seed", "eps", "eps_iter", "nb_iter", "verbose",
                        batch_size=_D.batch_size, seed=_D.seed, eps=_D.eps, eps_iter=_D.eps_iter,
                        nb_iter=_D.nb_iter, verbose=_D.verbose,
                        note={"batch_size": "Default: the paper's 64.",
                              "eps": "Here the training PGD's (docs/settings.md).",
                              "eps_iter": "Here the training PGD's.",
                              "nb_iter": "Here the training PGD's (default per data set)."})
flags.DEFINE_enum("dataset", _D.dataset, CHOICES["dataset"], "The data set.", flag_values=FLAGS)
flags.DEFINE_enum("arch", _D.arch, CHOICES["arch"], "cnn (paper Table 8) or resnet20 (ResNet-20 v1).", flag_values=FLAGS)
flags.DEFINE_enum("method", _D.method, CHOICES["method"], "A method, or a preset of CCE (cce-base, cce-rm, cce-dm).",
                  flag_values=FLAGS)
flags.DEFINE_integer("members", _D.members, "Ensemble size N (default 2; 1 for adv).", flag_values=FLAGS)
flags.DEFINE_float("lambda_pm", _D.lambda_pm, "CCE promoting weight (default from the preset; cce: 1).", flag_values=FLAGS)
flags.DEFINE_float("lambda_dm", _D.lambda_dm, "CCE demoting weight (default from the preset; cce: 1).", flag_values=FLAGS)
flags.DEFINE_enum("adv_en_loss", _D.adv_en_loss, CHOICES["adv_en_loss"], "ADV-EN objective: 'ensemble' (paper) or "
                  "'members' (official code).", flag_values=FLAGS)
flags.DEFINE_float("gal_lambda", _D.gal_lambda, "GAL: weight of the gradient alignment loss (default 0.5).", flag_values=FLAGS)
flags.DEFINE_bool("gal_adv", _D.gal_adv, "GAL: also train on PGD examples against the ensemble (--eps, --nb_iter, ...).", flag_values=FLAGS)
flags.DEFINE_enum("dverge_variant", _D.dverge_variant, CHOICES["dverge_variant"], "DVERGE: 'plain' (distilled examples only) or 'plus' "
                  "(adds the members' clean cross-entropy).", flag_values=FLAGS)
flags.DEFINE_float("dverge_eps", _D.dverge_eps, "DVERGE: distillation radius (default per data set, docs/settings.md).", flag_values=FLAGS)
flags.DEFINE_float("dverge_eps_iter", _D.dverge_eps_iter, "DVERGE: distillation step (default: the data set's step/eps ratio times eps).", flag_values=FLAGS)
flags.DEFINE_integer("dverge_nb_iter", _D.dverge_nb_iter, "DVERGE: distillation steps (default 10).", flag_values=FLAGS)
flags.DEFINE_float("trs_lambda_a", _D.trs_lambda_a, "TRS: weight of the mean |cos| of input gradients (default 10).", flag_values=FLAGS)
flags.DEFINE_float("trs_lambda_b", _D.trs_lambda_b, "TRS: weight of the mean squared per-sample input-gradient norm "
                   "(default 20/128^2, docs/settings.md).", flag_values=FLAGS)
flags.DEFINE_float("trs_eps", _D.trs_eps, "TRS: smoothing PGD radius at the first epoch (default 0.1).", flag_values=FLAGS)
flags.DEFINE_float("trs_eps_end", _D.trs_eps_end, "TRS: the radius it grows to linearly over the epochs (default 0.2).", flag_values=FLAGS)
flags.DEFINE_integer("trs_nb_iter", _D.trs_nb_iter, "TRS: smoothing PGD steps, each of radius/3 (default 6).", flag_values=FLAGS)
flags.DEFINE_string("init_from", _D.init_from, "Warm-start the members from this run folder's ensemble.weights.h5 "
                    "(same dataset, arch and members), e.g. a NAT run for DVERGE.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", _D.epochs, "Epochs (default: 180 for CIFAR, 100 for MNIST-like).", flag_values=FLAGS)
flags.DEFINE_float("learning_rate", _D.learning_rate, "Adam's initial learning rate (default 1e-3).", flag_values=FLAGS)
flags.DEFINE_string("lr_milestones", None, "Epochs after which the learning rate is multiplied by 0.1, "
                    "e.g. 80,120,160; '' for none (default: the paper's, scaled to --epochs). Fixed when "
                    "the run is created; given again on a resume, it sets the milestones of later epochs.", flag_values=FLAGS)
flags.DEFINE_integer("train_subset", _D.train_subset, "Train on a seeded random subset of this many images (0: all).", flag_values=FLAGS)
flags.DEFINE_integer("test_subset", _D.test_subset, "Validate on the first this many test images (0: all).", flag_values=FLAGS)
flags.DEFINE_bool("augment", _D.augment, "Random 10% shifts (and flips for CIFAR), as the paper.", flag_values=FLAGS)
cli_flags.define_fraction(FLAGS, "eps_max", _D.eps_max, "If set, eps ~ U(eps, eps_max) per batch and eta = eps/10.")
flags.DEFINE_string("out_dir", _D.out_dir, "Run folder (default runs/DATASET_METHOD_ARCH_nN_sSEED).", flag_values=FLAGS)
flags.DEFINE_integer("backup_every_steps", _D.backup_every_steps, "Back up the training state every this many steps "
                     "(0: after every epoch only).", flag_values=FLAGS)
flags.DEFINE_float("backup_every_seconds", _D.backup_every_seconds, "Also back it up when this many seconds have passed since "
                   "the last backup (0: never).", flag_values=FLAGS)
flags.DEFINE_bool("deterministic", _D.deterministic, "TensorFlow's op determinism: the same seed gives the same "
                  "weights on the same machine, resumed or not (slower on GPUs).", flag_values=FLAGS)
flags.DEFINE_enum("strategy", _D.strategy, CHOICES["strategy"], "'default' (one device) or 'mirrored' (all local "
                  "devices).", flag_values=FLAGS)
flags.DEFINE_integer("cpu_devices", _D.cpu_devices, "Split the CPU into this many logical devices (to try --strategy mirrored without GPUs).", flag_values=FLAGS)


def parse(argv: list[str]) -> list[str]:
    """Parse the flags from scratch (so it may be called again); returns [program name]. Raises
    UsageError for an unknown flag, a value of the wrong type or out of its bounds, a stray argument."""
    return cli_flags.parse(FLAGS, argv)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected argument {argv[1]!r}")
    train(TrainOptions.from_flags(FLAGS))


def train(o: TrainOptions) -> None:
    """Train (or resume) one run: what the CLI's ``main`` and the studies call, e.g.
    ``train(TrainOptions(method="cce-rm", members=2, seed=0, out_dir=RUN))``. Raises UsageError,
    DataError or RunFailed."""
    s = Settings.from_options(o)
    run_dir = o.out_dir or s.default_out_dir()
    # The whole run under the folder's lock, taken before anything is read: a second training into
    # it would read half-written checkpoints and overwrite the first's (cce_tf.run_lock).
    lock = run_lock.lock_path(run_dir)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_lock.hold(lock, wait=False))
        except run_lock.Busy as e:
            raise UsageError(f"--out_dir {run_dir} is being trained by {e.holder}: wait for it to end, "
                             f"or use another --out_dir") from None
        except OSError as e:  # no permission, disk full
            raise WriteError(f"cannot write {lock}: {one_line(e)}") from None
        train_into(run_dir, s, o.verbose)


def train_into(run_dir: str, s: Settings, verbose: int) -> None:
    """Train (or resume) the run ``run_dir`` with the checked settings ``s``, holding its lock."""
    old, history = resume.check_resume(run_dir, s)
    init_sha = resume.check_init_from(s) if old is None else old.get("init_from_sha256")
    _start_tensorflow(s)
    import keras

    arrays = _training_data(s)   # fails on input before anything is written
    steps = len(arrays[0]) // s.batch_size
    keras.utils.set_random_seed(s.seed)
    state = TrainingState.build(s, steps, run_dir)
    if s.init_from and state.manager.latest_checkpoint is None:   # a new run (a resumed one has its own)
        init_sha = resume.check_init_from(s)
        state.ensemble.load_weights(os.path.join(s.init_from, WEIGHTS_FILE))
    first_epoch, first_step = state.position()
    started = first_epoch + (first_step > 0)
    if s.epochs < started:
        raise UsageError(f"--epochs {s.epochs} is fewer than the {started} epochs {run_dir} has started")
    s = dataclasses.replace(s, lr_milestones=resume.milestones(s, old, started))
    history = [h for h in history if h["epoch"] <= first_epoch]

    with writing(run_dir):
        os.makedirs(run_dir, exist_ok=True)
    # data_source: which data files, with their SHA-256; recorded, not compared on resume.
    write_json(os.path.join(run_dir, CONFIG_FILE),
               dict(s.as_json(), versions=versions(), data_source=data.source_digest(s.dataset),
                    init_from_sha256=init_sha))
    if state.manager.latest_checkpoint:
        print(f"resuming {run_dir} {position_text(first_epoch, first_step)}")
    print(f"training {s.method} (N={s.members}) on {state.strategy.num_replicas_in_sync} device(s) "
          f"into {run_dir}")

    backup = Backup(state, run_dir, steps, s.backup_every_steps, s.backup_every_seconds, history)
    _train_epochs(s, state, backup, run_dir, arrays, steps, verbose)
    x_test, y_test = arrays[2:]
    acc = state.trainer.evaluate(data.eval_dataset(x_test, y_test, 256), verbose=0, return_dict=True)["acc"]
    print(f"clean test accuracy: {acc:.4f}  ({s.method}, N={s.members}, {s.dataset}, "
          f"{state.position()[0]} epochs, {len(x_test)} test images)\nrun written to: {run_dir}")


def _train_epochs(s: Settings, state: TrainingState, backup: Backup, run_dir: str, arrays: tuple, steps: int,
                  verbose: int) -> None:
    """The epochs still to train from where ``backup`` starts: the rest of an interrupted epoch,
    then the others up to --epochs. Raises RunFailed when the loss becomes NaN."""
    import keras

    x_train, y_train, x_test, y_test = arrays
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.LearningRateScheduler(
                     lambda e, _lr: config.learning_rate(e, s.learning_rate, s.lr_milestones)),
                 backup.callback(), keras.callbacks.TensorBoard(os.path.join(run_dir, LOG_DIR))]
    test_ds = data.eval_dataset(x_test, y_test, max(s.batch_size, 256))

    def fit(start: int, end: int, skip: int) -> None:
        """Epochs start..end-1, the first `skip` steps of epoch `start` already done."""
        train_ds = data.train_dataset(x_train, y_train, s.batch_size, augment=s.augment, flip=s.flip,
                                      seed=s.seed, epoch=start, skip=skip)
        # Our own CallbackList, so that the progress bar counts epochs out of --epochs.
        cbs = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                           model=state.trainer, verbose=verbose, epochs=s.epochs,
                                           steps=steps - skip)
        state.trainer.fit(train_ds, validation_data=test_ds, initial_epoch=start, epochs=end,
                          steps_per_epoch=steps - skip, shuffle=False,  # train_ds shuffles itself
                          verbose=verbose, callbacks=cbs)

    started = backup.first_epoch + (backup.first_step > 0)
    if backup.first_step:   # the rest of the interrupted epoch, then the others
        fit(backup.first_epoch, backup.first_epoch + 1, backup.first_step)
    if backup.nan_epoch is None and started < s.epochs:
        fit(started, s.epochs, 0)
    if backup.nan_epoch is not None:
        kept = (f"The last good checkpoint ({position_text(*state.position())}) is kept in {state.ckpt_dir}"
                if state.manager.latest_checkpoint else "No checkpoint was written.")
        raise RunFailed(f"the loss became NaN in epoch {backup.nan_epoch}; stopped. {kept}")


def _start_tensorflow(s: Settings) -> None:
    """TensorFlow's process-wide settings, before anything is built: op determinism, CPU devices."""
    import tensorflow as tf

    if s.deterministic:
        tf.config.experimental.enable_op_determinism()
    if s.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * s.cpu_devices)


def _training_data(s: Settings) -> tuple:
    """(x_train, y_train, x_test, y_test): the run's seeded training subset and its first test
    images. Raises UsageError for subsets larger than the data set or a batch larger than the data."""
    import numpy as np

    x_train, y_train = data.load(s.dataset, "train")
    x_test, y_test = data.load(s.dataset, "test")
    for name, total in (("train_subset", len(x_train)), ("test_subset", len(x_test))):
        if getattr(s, name) > total:
            raise UsageError(f"--{name} {getattr(s, name)} is more than the data set's {total} images")
    if s.train_subset:
        idx = np.random.default_rng(s.seed).permutation(len(x_train))[: s.train_subset]
        x_train, y_train = x_train[idx], y_train[idx]
    if s.test_subset:
        x_test, y_test = x_test[: s.test_subset], y_test[: s.test_subset]
    if len(x_train) < s.batch_size:
        raise UsageError(f"--batch_size {s.batch_size} is larger than the {len(x_train)} training images")
    return x_train, y_train, x_test, y_test


def versions() -> dict:
    """The library versions config.json records."""
    import cleverhans
    import keras
    import numpy
    import tensorflow as tf
    return dict(python=platform.python_version(), tensorflow=tf.__version__, keras=keras.__version__,
                numpy=numpy.__version__, cleverhans=getattr(cleverhans, "__version__", "4.0.0"))


def _main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    main(parse(argv))


def cli(argv: list[str] | None = None) -> int:
    """The command line (python -m cce_tf.train, console script cce-train): 0 done, 2 bad input,
    1 the run failed (cce_tf.cli_flags.run)."""
    return cli_flags.run(_main, FLAGS, argv, doc=__doc__, failures=(RunFailed,))


if __name__ == "__main__":
    sys.exit(cli())

