"""What one training run is: the options a user gives (``TrainOptions``, a field per flag of
cce_tf.train) and the run's settings (``Settings``: those options over the paper's defaults,
cce_tf.config, every one checked as its flag is). config.json stores ``Settings.as_json()``.

Usage::

    from cce_tf.train_settings import Settings, TrainOptions
    s = Settings.from_options(TrainOptions(method="cce-rm", dataset="cifar10"))   # UsageError if bad
    s.method, s.lambda_pm, s.pgd.eps                  # "cce", 1.0, 8/255
    s.as_json()                                       # config.json's settings, in its key order

Pure Python (no TensorFlow import), so the CLI refuses bad flags before the seconds-long import.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from cce_tf.cli_flags import UsageError
from cce_tf.config import ARCHS, DVERGE_VARIANTS, METHOD_CHOICES, DVERGEConfig, GALConfig, PGDConfig, TRSConfig
from cce_tf.data import DATASETS

# The enum flags' choices; `Settings.from_options` checks them too, for options that did not come
# through the flags.
CHOICES = dict(dataset=DATASETS, arch=ARCHS, method=METHOD_CHOICES, adv_en_loss=("ensemble", "members"),
               dverge_variant=DVERGE_VARIANTS, strategy=("default", "mirrored"))
# The integer flags' ranges: past the upper bounds a run would hang or exhaust memory rather than
# fail with a message (and numpy takes seeds below 2**32).
MAX_EPOCHS = 100_000
_INT_RANGES = dict(members=(1, 16), epochs=(1, MAX_EPOCHS), batch_size=(1, 65_536), train_subset=(0, 10**7),
                  test_subset=(0, 10**7), backup_every_steps=(0, 10**9), cpu_devices=(0, 256))
_FLOAT32_MAX = 3.4028234663852886e38  # these numbers become float32 tensors


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """One training run's options: a field per flag of cce_tf.train, same name, same default (the
    flags take theirs from here). None means the paper's setting (cce_tf.config), resolved by
    ``Settings.from_options``, which checks every field as the flags are checked. The CLI builds it
    with ``from_flags``; library callers (the studies) construct it directly."""
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
    def from_flags(cls, fv) -> "TrainOptions":
        """The options of parsed flags ``fv`` (cce_tf.train's FLAGS). Raises UsageError for a bad
        --lr_milestones."""
        values = {f.name: fv[f.name].value for f in dataclasses.fields(cls)}
        return cls(**dict(values, lr_milestones=parse_milestones(values["lr_milestones"])))


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


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's settings, config.json's keys in its order. ``lambda_pm``/``lambda_dm`` are set
    for CCE only, ``adv_en_loss`` for ADV-EN only, ``gal``/``dverge``/``trs`` for that method only
    (None otherwise). ``lr_milestones`` is None until the driver resolves it (cce_tf.resume.milestones)."""
    dataset: str
    arch: str
    method: str                        # resolved: a preset (``preset``) trains as "cce"
    preset: Optional[str]
    members: int
    lambda_pm: Optional[float]
    lambda_dm: Optional[float]
    adv_en_loss: Optional[str]
    gal: Optional[GALConfig]
    dverge: Optional[DVERGEConfig]
    trs: Optional[TRSConfig]
    init_from: Optional[str]
    epochs: int
    batch_size: int
    learning_rate: float
    lr_milestones: Optional[tuple[int, ...]]
    train_subset: int
    test_subset: int
    augment: bool
    flip: bool
    pgd: PGDConfig
    seed: int
    input_shape: tuple[int, ...]
    num_classes: int
    backup_every_steps: int
    backup_every_seconds: float
    deterministic: bool
    strategy: str
    cpu_devices: int

    @classmethod
    def from_options(cls, o: TrainOptions) -> "Settings":
        """The options over the paper's defaults (cce_tf.config), every one checked as its flag
        is. Raises UsageError."""
        from cce_tf import config, data

        _check_choices_and_ranges(o)
        try:
            method, lambda_pm, lambda_dm = config.resolve_method(o.method, o.lambda_pm, o.lambda_dm)
        except ValueError as e:
            raise UsageError(str(e)) from None

        d = config.defaults(o.dataset, o.arch)
        members = o.members if o.members is not None else (1 if method == "adv" else 2)
        epochs = o.epochs if o.epochs is not None else d["epochs"]
        batch_size = o.batch_size if o.batch_size is not None else d["batch_size"]
        lr = o.learning_rate if o.learning_rate is not None else d["learning_rate"]
        _check_numbers(o, method, members, epochs, batch_size, lr, lambda_pm, lambda_dm)
        pgd = _pgd(o, d["pgd"])   # checked before the diversity methods' settings

        info = data.info(o.dataset)
        return cls(
            dataset=o.dataset, arch=o.arch, method=method, preset=o.method if o.method in config.PRESETS else None,
            members=members, lambda_pm=lambda_pm if method == "cce" else None,
            lambda_dm=lambda_dm if method == "cce" else None,
            adv_en_loss=o.adv_en_loss if method == "adv-en" else None,
            gal=_gal(o) if method == "gal" else None, dverge=_dverge(o) if method == "dverge" else None,
            trs=_trs(o) if method == "trs" else None, init_from=o.init_from,
            epochs=epochs, batch_size=batch_size, learning_rate=lr, lr_milestones=o.lr_milestones,
            train_subset=o.train_subset, test_subset=o.test_subset, augment=o.augment,
            flip=o.augment and info.flip, pgd=pgd, seed=o.seed,
            input_shape=tuple(info.input_shape), num_classes=info.num_classes,
            backup_every_steps=o.backup_every_steps, backup_every_seconds=o.backup_every_seconds,
            deterministic=o.deterministic, strategy=o.strategy, cpu_devices=o.cpu_devices,
        )

    def as_json(self) -> dict:
        """The settings as config.json holds them (tuples as lists; dverge flat: variant, eps,
        eps_iter, nb_iter), the form a resumed run's stored settings are compared in."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, DVERGEConfig):
                value = dict(variant=value.variant, eps=value.distill.eps, eps_iter=value.distill.eps_iter,
                             nb_iter=value.distill.nb_iter)
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def diversity(self) -> dict:
        """make_trainer's gal / dverge / trs arguments (the one of the method trained)."""
        return {name: value for name, value in (("gal", self.gal), ("dverge", self.dverge), ("trs", self.trs))
                if value is not None}

    def default_out_dir(self) -> str:
        name = self.preset or self.method
        return os.path.join("runs", f"{self.dataset}_{name}_{self.arch}_n{self.members}_s{self.seed}")


def _check_choices_and_ranges(o: TrainOptions) -> None:
    """The checks that need no default: choices, the seed, --verbose, the milestones."""
    for name, choices in CHOICES.items():
        if getattr(o, name) not in choices:
            raise UsageError(f"--{name} must be one of {', '.join(choices)}, got {getattr(o, name)!r}")
    for name, (low, high) in (("seed", (0, 2**31 - 1)), ("verbose", (0, 2))):
        if not low <= getattr(o, name) <= high:
            raise UsageError(f"--{name} must be in {low}..{high}, got {getattr(o, name)}")
    if o.lr_milestones is not None:
        _check_milestones(o.lr_milestones, o.lr_milestones)


def _check_numbers(o: TrainOptions, method: str, members: int, epochs: int, batch_size: int, lr: float,
                   lambda_pm: float, lambda_dm: float) -> None:
    """The numbers, with their defaults resolved, in their ranges; N as the method needs it."""
    from cce_tf import config

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
        _weight(name, value)
    if not 0 <= o.backup_every_seconds <= 1e9:
        raise UsageError(f"--backup_every_seconds must be in [0, 1e9], got {o.backup_every_seconds}")
    if method == "adv" and members != 1:
        raise UsageError(f"--members must be 1 for --method adv (ADV trains one model), got {members}")
    if method in config.PAIRWISE_METHODS and members < 2:
        raise UsageError(f"--members must be at least 2 for --method {method} (its loss pairs members), got {members}")


def _pgd(o: TrainOptions, p: PGDConfig) -> PGDConfig:
    """The training PGD: the options over the data set's ``p``; an omitted step follows ε and k
    (cce_tf.config.converging_step). Raises UsageError."""
    from cce_tf import config

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
    return pgd


def _weight(name: str, value: float) -> float:
    if not 0 <= value <= _FLOAT32_MAX:
        raise UsageError(f"--{name} must be a number >= 0 and at most 3.4e38 (float32), got {value}")
    return float(value)


# GAL, DVERGE and TRS: the options over the reference code's defaults (cce_tf.config).

def _gal(o: TrainOptions) -> GALConfig:
    return GALConfig(lam=_weight("gal_lambda", GALConfig.lam if o.gal_lambda is None else o.gal_lambda),
                     adv=o.gal_adv)


def _dverge(o: TrainOptions) -> DVERGEConfig:
    from cce_tf import config

    d = config.dverge_defaults(o.dataset)
    eps = d.eps if o.dverge_eps is None else o.dverge_eps
    step = o.dverge_eps_iter if o.dverge_eps_iter is not None else config.scaled_step(eps, d.eps, d.eps_iter)
    distill = PGDConfig(eps=eps, eps_iter=step, nb_iter=d.nb_iter if o.dverge_nb_iter is None else o.dverge_nb_iter)
    try:
        distill.validate()
    except ValueError as e:   # PGDConfig names the training flags: say which ones these are
        raise UsageError(str(e).replace("--", "--dverge_")) from None
    return DVERGEConfig(distill, variant=o.dverge_variant)


def _trs(o: TrainOptions) -> TRSConfig:
    from cce_tf import config

    t = TRSConfig()
    pick = lambda flag, default: default if flag is None else flag
    trs = TRSConfig(lambda_a=_weight("trs_lambda_a", pick(o.trs_lambda_a, t.lambda_a)),
                    lambda_b=_weight("trs_lambda_b", pick(o.trs_lambda_b, t.lambda_b)),
                    eps=pick(o.trs_eps, t.eps), eps_end=pick(o.trs_eps_end, t.eps_end),
                    nb_iter=pick(o.trs_nb_iter, t.nb_iter))
    if not 0 < trs.eps <= 1:
        raise UsageError(f"--trs_eps must be in (0, 1], got {trs.eps}")
    if not trs.eps <= trs.eps_end <= 1:
        raise UsageError(f"--trs_eps_end must be in [trs_eps={trs.eps}, 1], got {trs.eps_end}")
    if not 1 <= trs.nb_iter <= config.MAX_NB_ITER:
        raise UsageError(f"--trs_nb_iter must be in 1..{config.MAX_NB_ITER}, got {trs.nb_iter}")
    return trs
