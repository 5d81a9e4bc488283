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

Parts: `TrainOptions` (one field per flag; the flags take their defaults from it) and the flag
definitions; `parse` and `settings` (options + paper defaults -> the run's settings, checked before
the seconds-long TensorFlow import); `check_resume` (a run folder may only be resumed with the same
settings, and its files must be readable); `train` (the run folder's lock, cce_tf.run_lock: a second
training into a folder being trained exits 2 at once, naming the first); `train_into` (data, the
`_TrainingState` restored from the latest checkpoint, the `Backup` that writes the checkpoints, the
weights and the history; it raises UsageError, DataError or RunFailed); `cli` (those errors -> one
line and the exit code).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from typing import Optional

from absl import flags, logging

from cce_tf import atomic, cli_flags, run_files, run_lock
from cce_tf.config import ARCHS, DVERGE_VARIANTS, METHOD_CHOICES
from cce_tf.data import DATASETS
from cce_tf.run_files import CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, KERAS_FILE, LOCK_FILE, LOG_DIR, WEIGHTS_FILE


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """One training run's options: a field per flag of this CLI, same name, same default (the flags
    below take theirs from here). None means the paper's setting (cce_tf.config), resolved by
    ``settings``, which checks every field as the flags are checked. The CLI builds it with
    ``from_flags``; library callers (the studies) construct it directly."""
    dataset: str = "fashion_mnist"
    arch: str = "cnn"
    method: str = "cce-rm"
    members: Optional[int] = None
    lambda_pm: Optional[float] = None
    lambda_dm: Optional[float] = None
    adv_en_loss: str = "ensemble"
    gal_lambda: Optional[float] = None
    gal_adv: bool = False
    dverge_variant: str = "plain"
    dverge_eps: Optional[float] = None
    dverge_eps_iter: Optional[float] = None
    dverge_nb_iter: Optional[int] = None
    trs_lambda_a: Optional[float] = None
    trs_lambda_b: Optional[float] = None
    trs_eps: Optional[float] = None
    trs_eps_end: Optional[float] = None
    trs_nb_iter: Optional[int] = None
    init_from: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    lr_milestones: Optional[tuple[int, ...]] = None   # None: the paper's, scaled to the epochs
    train_subset: int = 0
    test_subset: int = 0
    augment: bool = True
    eps: Optional[float] = None
    eps_iter: Optional[float] = None
    nb_iter: Optional[int] = None
    eps_max: Optional[float] = None
    seed: int = 0
    out_dir: Optional[str] = None
    backup_every_steps: int = 100
    backup_every_seconds: float = 300.0
    deterministic: bool = False
    strategy: str = "default"
    cpu_devices: int = 0
    verbose: int = 1

    @classmethod
    def from_flags(cls, fv: flags.FlagValues) -> "TrainOptions":
        """The options of parsed flags ``fv`` (this module's FLAGS). Raises UsageError for a bad
        --lr_milestones."""
        values = {f.name: fv[f.name].value for f in dataclasses.fields(cls)}
        return cls(**dict(values, lr_milestones=parse_milestones(values["lr_milestones"])))


_D = TrainOptions()
# The enum flags' choices; `settings` checks them too, for options that did not come through the flags.
_CHOICES = dict(dataset=DATASETS, arch=ARCHS, method=METHOD_CHOICES, adv_en_loss=("ensemble", "members"),
                dverge_variant=DVERGE_VARIANTS, strategy=("default", "mirrored"))
FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "batch_size", "seed", "eps", "eps_iter", "nb_iter", "verbose",
                        batch_size=_D.batch_size, seed=_D.seed, eps=_D.eps, eps_iter=_D.eps_iter,
                        nb_iter=_D.nb_iter, verbose=_D.verbose,
                        note={"batch_size": "Default: the paper's 64.",
                              "eps": "Here the training PGD's (docs/settings.md).",
                              "eps_iter": "Here the training PGD's.",
                              "nb_iter": "Here the training PGD's (default per data set)."})
flags.DEFINE_enum("dataset", _D.dataset, _CHOICES["dataset"], "The data set.", flag_values=FLAGS)
flags.DEFINE_enum("arch", _D.arch, _CHOICES["arch"], "cnn (paper Table 8) or resnet20 (ResNet-20 v1).", flag_values=FLAGS)
flags.DEFINE_enum("method", _D.method, _CHOICES["method"], "A method, or a preset of CCE (cce-base, cce-rm, cce-dm).",
                  flag_values=FLAGS)
flags.DEFINE_integer("members", _D.members, "Ensemble size N (default 2; 1 for adv).", flag_values=FLAGS)
flags.DEFINE_float("lambda_pm", _D.lambda_pm, "CCE promoting weight (default from the preset; cce: 1).", flag_values=FLAGS)
flags.DEFINE_float("lambda_dm", _D.lambda_dm, "CCE demoting weight (default from the preset; cce: 1).", flag_values=FLAGS)
flags.DEFINE_enum("adv_en_loss", _D.adv_en_loss, _CHOICES["adv_en_loss"], "ADV-EN objective: 'ensemble' (paper) or "
                  "'members' (official code).", flag_values=FLAGS)
flags.DEFINE_float("gal_lambda", _D.gal_lambda, "GAL: weight of the gradient alignment loss (default 0.5).", flag_values=FLAGS)
flags.DEFINE_bool("gal_adv", _D.gal_adv, "GAL: also train on PGD examples against the ensemble (--eps, --nb_iter, ...).", flag_values=FLAGS)
flags.DEFINE_enum("dverge_variant", _D.dverge_variant, _CHOICES["dverge_variant"], "DVERGE: 'plain' (distilled examples only) or 'plus' "
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
flags.DEFINE_enum("strategy", _D.strategy, _CHOICES["strategy"], "'default' (one device) or 'mirrored' (all local "
                  "devices).", flag_values=FLAGS)
flags.DEFINE_integer("cpu_devices", _D.cpu_devices, "Split the CPU into this many logical devices (to try --strategy mirrored without GPUs).", flag_values=FLAGS)

# Settings that may differ between the first run and a resume: where, how long and how safely it
# trains, not what it trains. lr_milestones may change for the epochs to come (`main` checks it).
_RESUME_FREE = ("strategy", "cpu_devices", "epochs", "lr_milestones", "test_subset", "backup_every_steps",
                "backup_every_seconds", "deterministic")

# The integer flags' ranges: past the upper bounds a run would hang or exhaust memory rather than
# fail with a message (and numpy takes seeds below 2**32).
MAX_EPOCHS = 100_000
_INT_RANGES = dict(members=(1, 16), epochs=(1, MAX_EPOCHS), batch_size=(1, 65_536), train_subset=(0, 10**7),
                   test_subset=(0, 10**7), backup_every_steps=(0, 10**9), cpu_devices=(0, 256))
_FLOAT32_MAX = 3.4028234663852886e38  # these numbers become float32 tensors


UsageError = cli_flags.UsageError   # bad input: one line, exit code 2


class RunFailed(Exception):
    """The run stopped: a NaN loss, or a file that could not be written. One line, exit code 1."""


class WriteError(RunFailed):
    """A file of the run could not be written (the message names it)."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:500]


def parse(argv: list[str]) -> list[str]:
    """Parse the flags from scratch (so it may be called again); returns [program name]. Raises
    UsageError for an unknown flag, a value of the wrong type or out of its bounds, a stray argument."""
    return cli_flags.parse(FLAGS, argv)


def parse_milestones(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """--lr_milestones' text as epochs (None when not given). Raises UsageError."""
    if text is None:
        return None
    try:
        milestones = [int(t) for t in text.split(",")] if text.strip() else []
    except ValueError:
        raise UsageError(f"--lr_milestones must be epoch numbers separated by commas, e.g. 80,120,160; "
                         f"got {text!r}") from None
    _check_milestones(milestones, text)
    return tuple(milestones)


def _check_milestones(milestones, given) -> None:
    if list(milestones) != sorted(milestones) or not all(isinstance(m, int) and 1 <= m <= MAX_EPOCHS
                                                         for m in milestones):
        raise UsageError(f"--lr_milestones must be ascending epoch numbers in 1..{MAX_EPOCHS}, got {given!r}")


def settings(o: TrainOptions) -> dict:
    """The run's settings: the options over the paper's defaults (cce_tf.config), every one checked
    as its flag is. Raises UsageError.

    lr_milestones is a list of epochs, or None when not given (`train_into` resolves it).
    """
    from cce_tf import config, data
    from cce_tf.config import PGDConfig

    for name, choices in _CHOICES.items():
        if getattr(o, name) not in choices:
            raise UsageError(f"--{name} must be one of {', '.join(choices)}, got {getattr(o, name)!r}")
    for name, (low, high) in (("seed", (0, 2**31 - 1)), ("verbose", (0, 2))):
        if not low <= getattr(o, name) <= high:
            raise UsageError(f"--{name} must be in {low}..{high}, got {getattr(o, name)}")
    if o.lr_milestones is not None:
        _check_milestones(o.lr_milestones, o.lr_milestones)
    try:
        method, lambda_pm, lambda_dm = config.resolve_method(o.method, o.lambda_pm, o.lambda_dm)
    except ValueError as e:
        raise UsageError(str(e)) from None

    d = config.defaults(o.dataset, o.arch)
    members = o.members if o.members is not None else (1 if method == "adv" else 2)
    epochs = o.epochs if o.epochs is not None else d["epochs"]
    batch_size = o.batch_size if o.batch_size is not None else d["batch_size"]
    lr = o.learning_rate if o.learning_rate is not None else d["learning_rate"]
    ints = dict(members=members, epochs=epochs, batch_size=batch_size, train_subset=o.train_subset,
                test_subset=o.test_subset, backup_every_steps=o.backup_every_steps,
                cpu_devices=o.cpu_devices)
    for name, value in ints.items():
        low, high = _INT_RANGES[name]
        if not low <= value <= high:
            raise UsageError(f"--{name} must be in {low}..{high}, got {value}")
    # `not a < x <= b` is also true for NaN.
    if not 0 < lr <= _FLOAT32_MAX:
        raise UsageError(f"--learning_rate must be a number > 0 and at most 3.4e38 (float32), got {lr}")
    for name, value in (("lambda_pm", lambda_pm), ("lambda_dm", lambda_dm)):
        if not 0 <= value <= _FLOAT32_MAX:
            raise UsageError(f"--{name} must be a number >= 0 and at most 3.4e38 (float32), got {value}")
    if not 0 <= o.backup_every_seconds <= 1e9:
        raise UsageError(f"--backup_every_seconds must be in [0, 1e9], got {o.backup_every_seconds}")
    if method == "adv" and members != 1:
        raise UsageError(f"--members must be 1 for --method adv (ADV trains one model), got {members}")
    if method in config.PAIRWISE_METHODS and members < 2:
        raise UsageError(f"--members must be at least 2 for --method {method} (its loss pairs members), got {members}")

    p = d["pgd"]
    eps = p.eps if o.eps is None else o.eps
    eps_max = p.eps_max if o.eps_max is None else o.eps_max
    nb_iter = p.nb_iter if o.nb_iter is None else o.nb_iter
    eps_iter = o.eps_iter if o.eps_iter is not None else config.converging_step(
        eps, config.scaled_step(eps, p.eps, p.eps_iter), nb_iter, p.nb_iter)
    pgd = PGDConfig(eps=eps, eps_iter=eps_iter, nb_iter=nb_iter, eps_max=eps_max)
    try:
        pgd.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None

    info = data.info(o.dataset)
    preset = o.method if o.method in config.PRESETS else None
    diversity = _diversity_settings(o, method)
    return dict(
        dataset=o.dataset, arch=o.arch, method=method, preset=preset, members=members,
        lambda_pm=lambda_pm if method == "cce" else None, lambda_dm=lambda_dm if method == "cce" else None,
        adv_en_loss=o.adv_en_loss if method == "adv-en" else None, **diversity, init_from=o.init_from,
        epochs=epochs, batch_size=batch_size, learning_rate=lr, lr_milestones=None if o.lr_milestones is None else list(o.lr_milestones),
        train_subset=o.train_subset, test_subset=o.test_subset, augment=o.augment,
        flip=o.augment and info.flip,
        pgd=dict(eps=pgd.eps, eps_iter=pgd.eps_iter, nb_iter=pgd.nb_iter, eps_max=pgd.eps_max),
        seed=o.seed, input_shape=list(info.input_shape), num_classes=info.num_classes,
        backup_every_steps=o.backup_every_steps, backup_every_seconds=o.backup_every_seconds,
        deterministic=o.deterministic, strategy=o.strategy, cpu_devices=o.cpu_devices,
    )


def _weight(name: str, value: float) -> float:
    if not 0 <= value <= _FLOAT32_MAX:
        raise UsageError(f"--{name} must be a number >= 0 and at most 3.4e38 (float32), got {value}")
    return float(value)


def _diversity_settings(o: TrainOptions, method: str) -> dict:
    """The gal, dverge and trs settings (None but for the method trained), the options over the
    reference code's defaults (cce_tf.config). Raises UsageError."""
    from cce_tf import config
    from cce_tf.config import GALConfig, PGDConfig, TRSConfig

    out = dict(gal=None, dverge=None, trs=None)
    if method == "gal":
        lam = GALConfig.lam if o.gal_lambda is None else o.gal_lambda
        out["gal"] = dict(lam=_weight("gal_lambda", lam), adv=o.gal_adv)
    elif method == "dverge":
        d = config.dverge_defaults(o.dataset)
        eps = d.eps if o.dverge_eps is None else o.dverge_eps
        step = o.dverge_eps_iter if o.dverge_eps_iter is not None else config.scaled_step(eps, d.eps, d.eps_iter)
        distill = PGDConfig(eps=eps, eps_iter=step, nb_iter=d.nb_iter if o.dverge_nb_iter is None else o.dverge_nb_iter)
        try:
            distill.validate()
        except ValueError as e:   # PGDConfig names the training flags: say which ones these are
            raise UsageError(str(e).replace("--", "--dverge_")) from None
        out["dverge"] = dict(variant=o.dverge_variant, eps=distill.eps, eps_iter=distill.eps_iter,
                             nb_iter=distill.nb_iter)
    elif method == "trs":
        t = TRSConfig()
        pick = lambda flag, default: default if flag is None else flag
        trs = dict(lambda_a=_weight("trs_lambda_a", pick(o.trs_lambda_a, t.lambda_a)),
                   lambda_b=_weight("trs_lambda_b", pick(o.trs_lambda_b, t.lambda_b)),
                   eps=pick(o.trs_eps, t.eps), eps_end=pick(o.trs_eps_end, t.eps_end),
                   nb_iter=pick(o.trs_nb_iter, t.nb_iter))
        if not 0 < trs["eps"] <= 1:
            raise UsageError(f"--trs_eps must be in (0, 1], got {trs['eps']}")
        if not trs["eps"] <= trs["eps_end"] <= 1:
            raise UsageError(f"--trs_eps_end must be in [trs_eps={trs['eps']}, 1], got {trs['eps_end']}")
        if not 1 <= trs["nb_iter"] <= config.MAX_NB_ITER:
            raise UsageError(f"--trs_nb_iter must be in 1..{config.MAX_NB_ITER}, got {trs['nb_iter']}")
        out["trs"] = trs
    return out


def check_init_from(s: dict) -> str | None:
    """The SHA-256 of --init_from's weights (None without it), after checking that run holds a
    readable ensemble of the same dataset, arch and members. Raises UsageError."""
    src = s["init_from"]
    if src is None:
        return None
    from cce_tf.fingerprint import weights_fingerprint

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(src, name)):
            raise UsageError(f"--init_from {src} is not a trained run: it has no {name}")
    try:
        cfg = run_files.read_config(src)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--init_from {src}: unreadable {CONFIG_FILE} ({_one_line(e)})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"--init_from {src}: {CONFIG_FILE} is not a JSON object")
    for key in ("dataset", "arch", "members"):
        if cfg.get(key) != s[key]:
            raise UsageError(f"--init_from {src} has {key}={cfg.get(key)!r}, not {s[key]!r}: "
                             f"warm-start from a run of the same dataset, arch and members")
    _check_weights(os.path.join(src, WEIGHTS_FILE), hint="give another --init_from")
    return weights_fingerprint(src)


def _diversity_configs(s: dict) -> dict:
    """make_trainer's gal / dverge / trs arguments from the run's settings (those it has)."""
    from cce_tf.config import DVERGEConfig, GALConfig, PGDConfig, TRSConfig

    out = {}
    if s["gal"]:
        out["gal"] = GALConfig(**s["gal"])
    if s["dverge"]:
        d = dict(s["dverge"])
        out["dverge"] = DVERGEConfig(PGDConfig(d.pop("eps"), d.pop("eps_iter"), d.pop("nb_iter")), **d)
    if s["trs"]:
        out["trs"] = TRSConfig(**s["trs"])
    return out


def default_out_dir(s: dict) -> str:
    name = s["preset"] or s["method"]
    return os.path.join("runs", f"{s['dataset']}_{name}_{s['arch']}_n{s['members']}_s{s['seed']}")


def _read_json(path: str, kind: type, read=run_files.read_json):
    """The JSON object or list in `path`, read by ``read(path)``; UsageError naming the file if it
    is unreadable."""
    try:
        obj = read(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({_one_line(e)}): use another --out_dir") from None
    if not isinstance(obj, kind):
        raise UsageError(f"{path}: not a JSON {kind.__name__}: use another --out_dir")
    return obj


def _check_weights(path: str, hint: str = "use another --out_dir") -> None:
    """Reads every array of a weights file (h5py, no TensorFlow); UsageError naming it if one fails."""
    import h5py

    def read(_, node):
        if isinstance(node, h5py.Dataset):
            node[()]   # returns None, or visititems would stop here

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"{path}: unreadable weights file ({_one_line(e)}): {hint}") from None


def check_resume(run_dir: str, s: dict) -> tuple[dict | None, list[dict]]:
    """A run folder made with other settings is never trained into, nor one whose config.json,
    history.json or ensemble.weights.h5 is unreadable. Returns its stored config (None for a new
    run) and history. Raises UsageError."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_FILE}:
            raise UsageError(f"--out_dir {run_dir} exists and is not a run folder (no config.json): choose another")
        return None, []
    old = _read_json(path, dict, lambda _: run_files.read_config(run_dir))
    for key, value in s.items():
        if key not in _RESUME_FREE and old.get(key) != value:
            raise UsageError(f"--out_dir {run_dir} was made with {key}={old.get(key)!r}, not {value!r}: "
                             f"use the same settings to resume, or another --out_dir")
    stored = old.get("lr_milestones")
    if not (isinstance(stored, list) and all(isinstance(m, int) for m in stored)):
        raise UsageError(f"{path}: lr_milestones is not a list of epochs: use another --out_dir")
    history_path = os.path.join(run_dir, HISTORY_FILE)
    history = _read_json(history_path, list) if os.path.exists(history_path) else []
    if not all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in history):
        raise UsageError(f"{history_path}: not a list of epochs: use another --out_dir")
    if os.path.exists(os.path.join(run_dir, WEIGHTS_FILE)):
        _check_weights(os.path.join(run_dir, WEIGHTS_FILE))
    return old, history


def versions() -> dict:
    import cleverhans
    import keras
    import numpy
    import tensorflow as tf
    return dict(python=platform.python_version(), tensorflow=tf.__version__, keras=keras.__version__,
                numpy=numpy.__version__, cleverhans=getattr(cleverhans, "__version__", "4.0.0"))


@contextlib.contextmanager
def _writing(path: str):
    """Turns a failed write (disk full, no permission, ...) into a WriteError naming `path`."""
    import tensorflow as tf
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        raise WriteError(f"cannot write {path}: {_one_line(e)}") from None


def _write_json(path: str, obj) -> None:
    with _writing(path):
        atomic.write_json(path, obj)


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
        raise UsageError(f"{latest}: unreadable checkpoint ({_one_line(e)}): use another --out_dir") from None


def _position(epoch: int, step: int) -> str:
    """Where a checkpoint is, from its epochs finished and steps done of the next (1-based) epoch."""
    return f"from epoch {epoch + 1} step {step}" if step else f"after epoch {epoch}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected argument {argv[1]!r}")
    train(TrainOptions.from_flags(FLAGS))


def train(o: TrainOptions) -> None:
    """Train (or resume) one run: what the CLI's ``main`` and the studies call, e.g.
    ``train(TrainOptions(method="cce-rm", members=2, seed=0, out_dir=RUN))``. Raises UsageError,
    DataError or RunFailed."""
    s = settings(o)
    run_dir = o.out_dir or default_out_dir(s)
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
            raise WriteError(f"cannot write {lock}: {_one_line(e)}") from None
        train_into(run_dir, s, o.verbose)


def train_into(run_dir: str, s: dict, verbose: int) -> None:
    """Train (or resume) the run ``run_dir`` with the checked settings ``s``, holding its lock."""
    old, history = check_resume(run_dir, s)
    init_sha = check_init_from(s) if old is None else old.get("init_from_sha256")
    _start_tensorflow(s)
    import keras

    from cce_tf import config, data

    x_train, y_train, x_test, y_test = _training_data(s)   # fails on input before anything is written
    steps = len(x_train) // s["batch_size"]
    keras.utils.set_random_seed(s["seed"])
    state = _TrainingState.build(s, steps, run_dir)
    if s["init_from"] and state.manager.latest_checkpoint is None:   # a new run (a resumed one has its own)
        init_sha = check_init_from(s)
        state.ensemble.load_weights(os.path.join(s["init_from"], WEIGHTS_FILE))
    first_epoch, first_step = state.position()
    started = first_epoch + (first_step > 0)
    if s["epochs"] < started:
        raise UsageError(f"--epochs {s['epochs']} is fewer than the {started} epochs {run_dir} has started")
    s["lr_milestones"] = _milestones(s, old, started)
    history = [h for h in history if h["epoch"] <= first_epoch]

    with _writing(run_dir):
        os.makedirs(run_dir, exist_ok=True)
    # data_source: which data files, with their SHA-256; recorded, not compared on resume.
    _write_json(os.path.join(run_dir, CONFIG_FILE),
                dict(s, versions=versions(), data_source=data.source_digest(s["dataset"]),
                     init_from_sha256=init_sha))
    if state.manager.latest_checkpoint:
        print(f"resuming {run_dir} {_position(first_epoch, first_step)}")
    print(f"training {s['method']} (N={s['members']}) on {state.strategy.num_replicas_in_sync} device(s) "
          f"into {run_dir}")

    backup = Backup(state, run_dir, steps, s["backup_every_steps"], s["backup_every_seconds"], history)
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.LearningRateScheduler(
                     lambda e, _lr: config.learning_rate(e, s["learning_rate"], s["lr_milestones"])),
                 backup.callback(), keras.callbacks.TensorBoard(os.path.join(run_dir, LOG_DIR))]
    test_ds = data.eval_dataset(x_test, y_test, max(s["batch_size"], 256))

    def fit(start: int, end: int, skip: int) -> None:
        """Epochs start..end-1, the first `skip` steps of epoch `start` already done."""
        train_ds = data.train_dataset(x_train, y_train, s["batch_size"], augment=s["augment"], flip=s["flip"],
                                      seed=s["seed"], epoch=start, skip=skip)
        # Our own CallbackList, so that the progress bar counts epochs out of --epochs.
        cbs = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                           model=state.trainer, verbose=verbose, epochs=s["epochs"],
                                           steps=steps - skip)
        state.trainer.fit(train_ds, validation_data=test_ds, initial_epoch=start, epochs=end,
                          steps_per_epoch=steps - skip, shuffle=False,  # train_ds shuffles itself
                          verbose=verbose, callbacks=cbs)

    if first_step:   # the rest of the interrupted epoch, then the others
        fit(first_epoch, first_epoch + 1, first_step)
    if backup.nan_epoch is None and started < s["epochs"]:
        fit(started, s["epochs"], 0)
    if backup.nan_epoch is not None:
        kept = (f"The last good checkpoint ({_position(*state.position())}) is kept in {state.ckpt_dir}"
                if state.manager.latest_checkpoint else "No checkpoint was written.")
        raise RunFailed(f"the loss became NaN in epoch {backup.nan_epoch}; stopped. {kept}")

    acc = state.trainer.evaluate(data.eval_dataset(x_test, y_test, 256), verbose=0, return_dict=True)["acc"]
    print(f"clean test accuracy: {acc:.4f}  ({s['method']}, N={s['members']}, {s['dataset']}, "
          f"{state.position()[0]} epochs, {len(x_test)} test images)\nrun written to: {run_dir}")


def _start_tensorflow(s: dict) -> None:
    """TensorFlow's process-wide settings, before anything is built: op determinism, CPU devices."""
    import tensorflow as tf

    if s["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    if s["cpu_devices"] > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * s["cpu_devices"])


def _training_data(s: dict):
    """(x_train, y_train, x_test, y_test): the run's seeded training subset and its first test
    images. Raises UsageError for subsets larger than the data set or a batch larger than the data."""
    import numpy as np

    from cce_tf import data

    x_train, y_train = data.load(s["dataset"], "train")
    x_test, y_test = data.load(s["dataset"], "test")
    for name, total in (("train_subset", len(x_train)), ("test_subset", len(x_test))):
        if s[name] > total:
            raise UsageError(f"--{name} {s[name]} is more than the data set's {total} images")
    if s["train_subset"]:
        idx = np.random.default_rng(s["seed"]).permutation(len(x_train))[: s["train_subset"]]
        x_train, y_train = x_train[idx], y_train[idx]
    if s["test_subset"]:
        x_test, y_test = x_test[: s["test_subset"]], y_test[: s["test_subset"]]
    if len(x_train) < s["batch_size"]:
        raise UsageError(f"--batch_size {s['batch_size']} is larger than the {len(x_train)} training images")
    return x_train, y_train, x_test, y_test


def _milestones(s: dict, old: Optional[dict], started: int) -> list[int]:
    """The run's LR milestones: a new run's as given or the paper's scaled to its epochs; a resumed
    run's as stored, with --lr_milestones given again for the epochs to come."""
    from cce_tf import config

    if old:
        try:
            return config.resumed_milestones(old["lr_milestones"], s["lr_milestones"], started)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if s["lr_milestones"] is None:
        return config.scaled_milestones(s["dataset"], s["epochs"])
    return s["lr_milestones"]


@dataclasses.dataclass
class _TrainingState:
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
    def build(cls, s: dict, steps: int, run_dir: str) -> "_TrainingState":
        import keras
        import tensorflow as tf

        from cce_tf.config import PGDConfig
        from cce_tf.ensemble import build_ensemble
        from cce_tf.methods import make_trainer

        strategy = tf.distribute.MirroredStrategy() if s["strategy"] == "mirrored" else tf.distribute.get_strategy()
        ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
        with strategy.scope():
            ensemble = build_ensemble(s["arch"], tuple(s["input_shape"]), s["num_classes"], s["members"])
            trainer = make_trainer(s["method"], ensemble, PGDConfig(**s["pgd"]), lambda_pm=s["lambda_pm"] or 0.0,
                                   lambda_dm=s["lambda_dm"] or 0.0, adv_en_member_sum=s["adv_en_loss"] == "members",
                                   seed=s["seed"], **_diversity_configs(s), steps_per_epoch=steps, epochs=s["epochs"])
            optimizer = keras.optimizers.Adam(s["learning_rate"])
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


class Backup:
    """Backs up the training state every ``every_steps`` steps or ``every_seconds`` seconds, and
    after every epoch with the weights for load_run and the history (appended to ``history``). A NaN
    loss stops training (``nan_epoch``) and is never backed up. ``callback()`` is its Keras callback."""

    def __init__(self, state: _TrainingState, run_dir: str, steps: int, every_steps: int, every_seconds: float,
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
        with _writing(tmp):
            self.state.ensemble.save_weights(tmp)
            os.replace(tmp, weights)
        # ensemble.keras carries the weights file itself: load_run refuses the two when they
        # differ (a failure between these writes), and the next epoch's save rewrites both.
        with _writing(os.path.join(self.run_dir, KERAS_FILE)):
            save_keras_file(self.state.ensemble, weights, os.path.join(self.run_dir, KERAS_FILE))
        lr = float(keras.ops.convert_to_numpy(self.state.optimizer.learning_rate))
        self.history.append({"epoch": e + 1, **{k: float(v) for k, v in logs.items()}, "learning_rate": lr})
        _write_json(os.path.join(self.run_dir, HISTORY_FILE), self.history)
        self.save(e + 1, 0)

    def save(self, e, done):
        self.state.epoch.assign(e)
        self.state.step.assign(done)
        with _writing(self.state.ckpt_dir):
            self.state.manager.save(checkpoint_number=e * self.steps + done)
        self.saved_at = time.monotonic()


def _main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    main(parse(argv))


def cli(argv: list[str] | None = None) -> int:
    """The command line (python -m cce_tf.train, console script cce-train): 0 done, 2 bad input,
    1 the run failed (cce_tf.cli_flags.run)."""
    return cli_flags.run(_main, FLAGS, argv, doc=__doc__, failures=(RunFailed,))


if __name__ == "__main__":
    sys.exit(cli())

