"""The training state and its backups: what a checkpoint holds (``TrainingState``: the ensemble, its
trainer, Adam, the random state, the metrics so far, the epoch and the step in it), restored from the
run's latest checkpoint, and ``Backup``, the Keras callback that writes the checkpoints, the weights
for load_run and history.json as the run trains. Every file of the run is written through
``writing`` (or ``write_json``): a failed write is one ``WriteError`` naming the file (exit code 1).

Usage::

    state = TrainingState.build(s, steps, run_dir)    # in s.strategy's scope; restores the latest checkpoint
    first_epoch, first_step = state.position()
    backup = Backup(state, run_dir, steps, s.backup_every_steps, s.backup_every_seconds, history)
    state.trainer.fit(..., callbacks=[backup.callback(), ...])
    backup.nan_epoch                                   # the epoch whose loss became NaN, or None
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Optional

from cce_tf import atomic
from cce_tf.cli_flags import UsageError, one_line
from cce_tf.run_files import CHECKPOINT_DIR, HISTORY_FILE, KERAS_FILE, WEIGHTS_FILE
from cce_tf.train_settings import Settings


class RunFailed(Exception):
    """The run stopped: a NaN loss, or a file that could not be written. One line, exit code 1."""


class WriteError(RunFailed):
    """A file of the run could not be written (the message names it)."""


@contextlib.contextmanager
def writing(path: str):
    """Turns a failed write (disk full, no permission, ...) into a WriteError naming `path`."""
    import tensorflow as tf
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        raise WriteError(f"cannot write {path}: {one_line(e)}") from None


def write_json(path: str, obj) -> None:
    with writing(path):
        atomic.write_json(path, obj)


def position_text(epoch: int, step: int) -> str:
    """Where a checkpoint is, from its epochs finished and steps done of the next (1-based) epoch."""
    return f"from epoch {epoch + 1} step {step}" if step else f"after epoch {epoch}"


@dataclasses.dataclass
class TrainingState:
    """What the checkpoint holds and what trains it: built in the strategy's scope, restored from the
    run's latest checkpoint if there is one. ``epoch``, ``step``: epochs finished, steps done of the
    next one (TF variables, so that they are saved with the rest)."""
    strategy: object
    ensemble: object
    trainer: object
    optimizer: object
    manager: object
    epoch: object
    step: object
    ckpt_dir: str

    @classmethod
    def build(cls, s: Settings, steps: int, run_dir: str) -> "TrainingState":
        import keras
        import tensorflow as tf

        from cce_tf.ensemble import build_ensemble
        from cce_tf.methods import make_trainer

        strategy = tf.distribute.MirroredStrategy() if s.strategy == "mirrored" else tf.distribute.get_strategy()
        ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
        with strategy.scope():
            ensemble = build_ensemble(s.arch, s.input_shape, s.num_classes, s.members)
            trainer = make_trainer(s.method, ensemble, s.pgd, lambda_pm=s.lambda_pm or 0.0,
                                   lambda_dm=s.lambda_dm or 0.0, adv_en_member_sum=s.adv_en_loss == "members",
                                   seed=s.seed, **s.diversity(), steps_per_epoch=steps, epochs=s.epochs)
            optimizer = keras.optimizers.Adam(s.learning_rate)
            trainer.compile(optimizer=optimizer)
            optimizer.build(ensemble.trainable_variables)
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            step = tf.Variable(0, dtype=tf.int64, trainable=False)
            # ensemble.variables, not the ensemble: TF's checkpoint does not track a Keras 3 model's
            # variables, and only the optimizer's list would hold the trainable ones (no BatchNorm
            # statistics, no Dropout seed state). The metrics make a resumed epoch's history whole.
            ckpt = tf.train.Checkpoint(variables=ensemble.variables, optimizer=optimizer, rng=trainer.rng,
                                       metrics=trainer.metrics_variables, epoch=epoch, step=step)
            manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2)
            _restore(manager, ckpt, ckpt_dir, run_dir)
        return cls(strategy, ensemble, trainer, optimizer, manager, epoch, step, ckpt_dir)

    def position(self) -> tuple[int, int]:
        """(epochs finished, steps done of the next one)."""
        return int(self.epoch.numpy()), int(self.step.numpy())


def _restore(manager, ckpt, ckpt_dir: str, run_dir: str) -> None:
    """Restores the latest checkpoint, if any. Raises UsageError if it is unreadable."""
    import tensorflow as tf

    latest = manager.latest_checkpoint
    if latest is None:
        # TF reads an unparsable checkpoint index as "no checkpoint": never start afresh over one.
        state = os.path.join(ckpt_dir, "checkpoint")
        if os.path.exists(state):
            raise UsageError(f"{state}: unreadable checkpoint index: use another --out_dir")
        if os.path.exists(os.path.join(run_dir, WEIGHTS_FILE)):
            raise UsageError(f"{run_dir} has {WEIGHTS_FILE} but no checkpoint in {ckpt_dir} to resume from: "
                             f"use another --out_dir")
        return
    try:
        ckpt.restore(latest).assert_existing_objects_matched()
    except AssertionError:
        raise UsageError(f"{latest}: not this run's training state (written by an older cce_tf.train?): "
                         f"use another --out_dir") from None
    except (tf.errors.OpError, ValueError) as e:
        raise UsageError(f"{latest}: unreadable checkpoint ({one_line(e)}): use another --out_dir") from None


class Backup:
    """Backs up the training state every ``every_steps`` steps or ``every_seconds`` seconds, and
    after every epoch with the weights for load_run and the history (appended to ``history``). A NaN
    loss stops training (``nan_epoch``) and is never backed up. ``callback()`` is its Keras callback."""

    def __init__(self, state: TrainingState, run_dir: str, steps: int, every_steps: int, every_seconds: float,
                 history: list[dict]):
        self.state, self.run_dir, self.steps, self.history = state, run_dir, steps, history
        self.every_steps, self.every_seconds = every_steps, every_seconds
        # Where the run resumes: the metrics of that epoch's first steps go back in when it begins.
        self.first_epoch, self.first_step = state.position()
        self.metrics_so_far = [v.numpy() for v in state.trainer.metrics_variables]
        self.nan_epoch: Optional[int] = None
        self.saved_at = time.monotonic()
        self.epoch = self.done = 0

    def callback(self):
        import keras

        return keras.callbacks.LambdaCallback(on_epoch_begin=self.on_epoch_begin, on_epoch_end=self.on_epoch_end,
                                              on_train_batch_end=self.on_train_batch_end)

    def finite(self, logs) -> bool:
        """The metrics so far and the weights are finite: a NaN never reaches a checkpoint (the
        last update of a step with a finite loss can still make the weights NaN)."""
        import numpy as np

        return (all(math.isfinite(float(v)) for v in (logs or {}).values())
                and all(np.isfinite(v.numpy()).all() for v in self.state.ensemble.trainable_variables))

    def on_epoch_begin(self, e, logs=None):
        self.epoch, self.done = e, self.first_step if e == self.first_epoch else 0
        if self.done:   # fit has just reset the metrics: put back those of the first steps
            for v, value in zip(self.state.trainer.metrics_variables, self.metrics_so_far):
                v.assign(value)

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        due = ((self.every_steps and self.done % self.every_steps == 0)
               or (self.every_seconds and time.monotonic() - self.saved_at >= self.every_seconds))
        if due and self.done < self.steps and self.finite(logs):   # the epoch's last step: on_epoch_end saves
            self.save(self.epoch, self.done)

    def on_epoch_end(self, e, logs=None):
        import keras

        from cce_tf.ensemble import save_keras_file

        if not self.finite(logs):
            self.nan_epoch = e + 1
            self.state.trainer.stop_training = True
            return
        # Weights and history first, checkpoint last: if a write fails, the resumed run redoes
        # this epoch from the previous checkpoint and rewrites them all.
        weights, tmp = os.path.join(self.run_dir, WEIGHTS_FILE), os.path.join(self.run_dir, "ensemble.tmp.weights.h5")
        with writing(tmp):
            self.state.ensemble.save_weights(tmp)
            os.replace(tmp, weights)
        # ensemble.keras carries the weights file itself: load_run refuses the two when they
        # differ (a failure between these writes), and the next epoch's save rewrites both.
        with writing(os.path.join(self.run_dir, KERAS_FILE)):
            save_keras_file(self.state.ensemble, weights, os.path.join(self.run_dir, KERAS_FILE))
        lr = float(keras.ops.convert_to_numpy(self.state.optimizer.learning_rate))
        self.history.append({"epoch": e + 1, **{k: float(v) for k, v in logs.items()}, "learning_rate": lr})
        write_json(os.path.join(self.run_dir, HISTORY_FILE), self.history)
        self.save(e + 1, 0)

    def save(self, e, done):
        self.state.epoch.assign(e)
        self.state.step.assign(done)
        with writing(self.state.ckpt_dir):
            self.state.manager.save(checkpoint_number=e * self.steps + done)
        self.saved_at = time.monotonic()
