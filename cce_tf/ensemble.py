"""The ensemble f^en = (1/N) sum_n f^n, as a Keras model that outputs ensemble logits.

Usage::

    from cce_tf.ensemble import Ensemble, build_ensemble, load_run
    ens = build_ensemble("cnn", (28, 28, 1), 10, n_members=2)
    logits = ens(x)                  # log f^en(x): softmax(logits) == mean of members' softmax
    z = ens.member_logits(x)         # [N, B, C]
    ens = load_run("runs/demo")      # a trained run written by python -m cce_tf.train
    save_keras_file(ens, "runs/demo/ensemble.weights.h5", "runs/demo/ensemble.keras")

Parts:
    Ensemble        keras.Model over N members (DESIGN.md, contract 3), serialisable: registered
                    as "cce_tf>Ensemble", its config holds the members' (functional) configs
    ensemble_logits log f^en from stacked member logits (also used by the training objectives)
    build_ensemble  N freshly initialised members of one architecture
    save_keras_file ensemble.keras whose weights are, byte for byte, the run's ensemble.weights.h5
    check_keras_file / load_run   a run's ensemble: ensemble.keras (safe_mode=True) when present and
                    consistent, else config.json + ensemble.weights.h5 (runs older than the .keras file)

The run folder's file names and the reader of its config.json are cce_tf.run_files' (also importable
from here: CONFIG_FILE, WEIGHTS_FILE, KERAS_FILE, read_config).

Because `ens(x)` returns log f^en(x), any attack that wants logits attacks the whole ensemble:
the paper's adaptive attack.

ensemble.keras and ensemble.weights.h5 cannot silently diverge: a .keras file is a zip whose
member model.weights.h5 is written by the same Keras routine as save_weights, so
`save_keras_file` stores the weights file itself there. `load_run` compares the SHA-256 of that
member with the run's fingerprint (cce_tf.fingerprint, cached) and refuses a mismatch
(InconsistentRun); the weights file stays the one fingerprinted identity of a run.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Optional

import keras
import tensorflow as tf

from cce_tf.fingerprint import weights_fingerprint
from cce_tf.models import build_member
from cce_tf.run_files import CONFIG_FILE, KERAS_FILE, WEIGHTS_FILE, read_config

_KERAS_WEIGHTS = "model.weights.h5"  # the weights member of a .keras zip (keras.src.saving.saving_lib)


class InconsistentRun(ValueError):
    """A run's ensemble.keras holds other weights than its ensemble.weights.h5."""


@keras.saving.register_keras_serializable(package="cce_tf")
class Ensemble(keras.Model):
    """N members; calling it returns log((1/N) sum_n softmax(z_n)), computed stably."""

    def __init__(self, members: list[keras.Model], **kwargs):
        super().__init__(**kwargs)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)

    def get_config(self) -> dict:
        # Explicit: keras.Model's generic get_config cannot serialise a list of models.
        return {"name": self.name, "trainable": self.trainable,
                "members": [keras.saving.serialize_keras_object(m) for m in self.members]}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "Ensemble":
        config = dict(config)
        members = [keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
                   for m in config.pop("members")]
        return cls(members, **config)

    def member_logits(self, x, training: bool = False) -> tf.Tensor:
        """Each member's logits, stacked: [N, B, C]."""
        return tf.stack([m(x, training=training) for m in self.members])

    def call(self, x, training: bool = False) -> tf.Tensor:
        return ensemble_logits(self.member_logits(x, training=training))


def ensemble_logits(member_logits: tf.Tensor) -> tf.Tensor:
    """log f^en = log((1/N) sum_n softmax(z_n)) from member logits [..., N, B, C] (members on axis -3),
    as logsumexp of the log-softmaxes minus log N, which stays finite where a softmax underflows."""
    n = tf.cast(tf.shape(member_logits)[-3], member_logits.dtype)
    return tf.reduce_logsumexp(tf.nn.log_softmax(member_logits, axis=-1), axis=-3) - tf.math.log(n)


def build_ensemble(arch: str, input_shape: tuple[int, int, int], num_classes: int,
                   n_members: int) -> Ensemble:
    """An Ensemble of `n_members` independently initialised members of `arch`."""
    members = [build_member(arch, input_shape, num_classes, name=f"member_{n}")
               for n in range(n_members)]
    ensemble = Ensemble(members, name="ensemble")
    ensemble(tf.zeros((1, *input_shape)))  # build, so weights can be loaded and counted
    return ensemble


def save_keras_file(ensemble: keras.Model, weights_path: str, out_path: str) -> None:
    """Write ``out_path`` (a .keras file) for ``ensemble`` whose weights member is a copy of
    ``weights_path``, the ensemble's weights just saved with ``save_weights``. Atomic: written under
    a temporary name, then renamed."""
    tmp = out_path + ".tmp.keras"  # keras.saving insists on the .keras suffix
    ensemble.save(tmp)
    with open(weights_path, "rb") as f:
        weights = f.read()
    packed = out_path + ".tmp"
    try:
        with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(packed, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, weights if info.filename == _KERAS_WEIGHTS else src.read(info.filename))
        os.replace(packed, out_path)
    finally:
        for path in (tmp, packed):
            if os.path.exists(path):
                os.remove(path)


def keras_file_weights_sha256(path: str) -> str:
    """SHA-256 of the weights member of a .keras file (ValueError if it has none)."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as z, z.open(_KERAS_WEIGHTS) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path} is not a .keras file with weights ({e})") from None
    return h.hexdigest()


def check_keras_file(run_dir: str) -> None:
    """InconsistentRun unless RUN/ensemble.keras holds exactly RUN/ensemble.weights.h5."""
    path = os.path.join(run_dir, KERAS_FILE)
    if keras_file_weights_sha256(path) != weights_fingerprint(run_dir):
        raise InconsistentRun(f"{path} holds other weights than {WEIGHTS_FILE} (the run's identity): "
                              f"delete {KERAS_FILE} to load from {WEIGHTS_FILE}, or re-save both")


def load_run(run_dir: str, config: Optional[dict] = None) -> Ensemble:
    """The ensemble of a run folder written by `python -m cce_tf.train` (DESIGN.md, contract 5):
    ensemble.keras, loaded with safe_mode=True (no code runs), after checking it holds the run's
    ensemble.weights.h5; runs written before ensemble.keras existed are rebuilt from config.json
    (``config``, when the caller has read it already). Raises InconsistentRun when the two files
    disagree."""
    weights = os.path.join(run_dir, WEIGHTS_FILE)
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)) or not os.path.exists(weights):
        raise FileNotFoundError(f"{run_dir} is not a trained run: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    if os.path.exists(os.path.join(run_dir, KERAS_FILE)):
        check_keras_file(run_dir)
        ensemble = keras.saving.load_model(os.path.join(run_dir, KERAS_FILE), compile=False, safe_mode=True)
        if not isinstance(ensemble, Ensemble):
            raise InconsistentRun(f"{os.path.join(run_dir, KERAS_FILE)} is a {type(ensemble).__name__}, "
                                  f"not a cce_tf Ensemble")
        return ensemble
    cfg = config if config is not None else read_config(run_dir)
    ensemble = build_ensemble(cfg["arch"], tuple(cfg["input_shape"]), cfg["num_classes"],
                              cfg["members"])
    ensemble.load_weights(weights)
    return ensemble
