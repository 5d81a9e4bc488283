"""The command-line conventions of every tool: the shared flags, defined once with one meaning, and
the one exit wrapper.

Usage::

    from absl import flags
    from cce_tf import cli_flags

    FLAGS = cli_flags.new_flags()                        # each tool's own registry
    cli_flags.define_shared(FLAGS, "run_dir", "n_samples", "eps", "eps_iter", nb_iter=20)
    flags.DEFINE_enum("format", "keras", ["keras", "savedmodel"], "...", flag_values=FLAGS)

    def main(argv):
        cli_flags.parse(FLAGS, argv)                     # UsageError for a bad or stray argument
        ...

    def cli(argv=None) -> int:                           # the console script; sys.exit(cli())
        return cli_flags.run(main, FLAGS, argv)

The shared flags (``SHARED``) mean the same in every tool that takes them:

    --run_dir     a run folder (or model file, where the tool says so); repeat for several runs
    --n_samples   use at most the first N test samples, N >= 1; omitted: the tool's default (the
                  whole test set, or the paper's count where the tool says so). 0 is an error.
    --batch_size  samples per batch (training: the global batch)
    --seed        the random seed
    --eps         the L∞ radius ε in [0, 1] pixel units, a number or a fraction like 8/255;
                  omitted: the data set's (attacks.settings; for training cce_tf.config)
    --eps_iter    the step η, like --eps; omitted: the data set's η/ε ratio times ε (at a k shorter
                  than the default, at least 2.5 ε / k)
    --nb_iter     the attack's steps k
    --force       recompute results that eval.reuse would reuse
    --verbose     0 quiet, 1 a progress bar with an ETA, 2 a line per finished stage (for log files)
    --trust_model load a SavedModel given as --run_dir without eval.model_scan's check of its ops

Every tool has its own ``FlagValues`` (no tool's flags leak into another's, so any set of tools
can be imported into one process, as the tests and ``studies.cli_docs`` do). ``run`` is the one exit
wrapper: ``--help`` prints the tool's description and flags and exits 0; bad input (``UsageError``,
a flag absl refuses, a data set's ``DataError``) is one line on stderr and exit 2; the tool's own
failures (``failures``) one line and exit 1. It first quiets TensorFlow's C++ log
(``quiet_tf_log``), before any tool imports TensorFlow.

Pure Python: no TensorFlow import, so a tool refuses bad flags in a fraction of a second.
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from typing import Any, Callable, Iterable, Optional, Sequence

from absl import flags

HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
MAX_SAMPLES = 10 ** 7   # upper bounds keep a typo such as 10**12 from hanging a run for days


class UsageError(ValueError):
    """Bad input: printed as one line, exit code 2."""

    def __init__(self, message: Any):
        super().__init__(" ".join(str(message).split()))


def one_line(e: BaseException) -> str:
    """An exception's message as one line of at most 500 characters (an OS or TensorFlow error can
    run over several)."""
    return " ".join(str(e).split())[:500]


class FractionParser(flags.ArgumentParser):
    """A number in (lower, upper], written as a decimal ("0.0314") or a fraction ("8/255")."""

    def __init__(self, lower: float = 0.0, upper: float = 1.0):
        self.lower, self.upper = lower, upper
        self.syntactic_help = f"a number or fraction in ({lower:g}, {upper:g}], e.g. 8/255"

    def parse(self, argument: Any) -> float:
        if isinstance(argument, (int, float)):
            value = float(argument)
        else:
            try:
                value = float(Fraction(str(argument).strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{argument!r} is not a number or a fraction like 8/255") from None
        if not self.lower < value <= self.upper:   # also refuses NaN
            raise ValueError(f"{argument} is not in ({self.lower:g}, {self.upper:g}]")
        return value

    def flag_type(self) -> str:
        return "fraction"


class ChoiceListParser(flags.ListParser):
    """A comma list whose items come from fixed choices (absl's multi_enum takes repeats only, and
    users write --attacks pgd,spsa)."""

    def __init__(self, choices: Sequence[str]):
        super().__init__()
        self.choices = tuple(choices)

    def parse(self, argument: Any) -> list[str]:
        items = [i.strip() for i in super().parse(argument)]
        unknown = [i for i in items if i not in self.choices]
        if unknown:
            raise ValueError(f"unknown {unknown[0]!r}: choose from {', '.join(self.choices)}")
        return items

    def flag_type(self) -> str:
        return "list of " + "|".join(self.choices)


def new_flags() -> flags.FlagValues:
    """A tool's own flag registry."""
    return flags.FlagValues()


def define_fraction(fv: flags.FlagValues, name: str, default: Optional[float], help: str,
                    multi: bool = False) -> None:
    """--name as a radius or step in (0, 1] pixel units; ``multi``: repeatable."""
    parser, serializer = FractionParser(), flags.ArgumentSerializer()
    if multi:
        flags.DEFINE_multi(parser, serializer, name, default, help, flag_values=fv)
    else:
        flags.DEFINE(parser, name, default, help, flag_values=fv, serializer=serializer)


def define_choice_list(fv: flags.FlagValues, name: str, default: Optional[list[str]],
                       choices: Sequence[str], help: str) -> None:
    """--name as a comma list of ``choices`` (checked while parsing: exit 2)."""
    flags.DEFINE(ChoiceListParser(choices), name, default, help, flag_values=fv,
                 serializer=flags.CsvListSerializer(","))


def _integer(fv, name, default, help, lower, upper):
    flags.DEFINE_integer(name, default, help, lower_bound=lower, upper_bound=upper, flag_values=fv)


# name -> (definer(fv, name, default, help), default, help): one help text, one meaning.
SHARED: dict[str, tuple[Callable, Any, str]] = {
    "run_dir": (lambda fv, n, d, h: flags.DEFINE_multi_string(n, d, h, flag_values=fv), [],
                "A trained run folder (python -m cce_tf.train --out_dir RUN); repeat for several runs."),
    "n_samples": (lambda fv, n, d, h: _integer(fv, n, d, h, 1, MAX_SAMPLES), None,
                  "Use at most the first N test samples (omit for the tool's default)."),
    "batch_size": (lambda fv, n, d, h: _integer(fv, n, d, h, 1, 65536), 500,
                   "Samples per batch (training: the global batch)."),
    "seed": (lambda fv, n, d, h: _integer(fv, n, d, h, 0, 2 ** 31 - 1), 0, "Random seed."),
    "eps": (define_fraction, None, "L∞ radius ε in [0, 1] pixel units, e.g. 8/255 or 0.0314 (omit for "
            "the data set's)."),
    "eps_iter": (define_fraction, None, "Step size η, e.g. 2/255 (omit: the data set's η/ε ratio times ε, "
                 "raised to 2.5 ε / k when --nb_iter is shorter than the default: Madry et al.'s rule)."),
    "nb_iter": (lambda fv, n, d, h: _integer(fv, n, d, h, 1, 100_000), None, "Attack steps k."),
    "force": (lambda fv, n, d, h: flags.DEFINE_bool(n, d, h, flag_values=fv), False,
              "Recompute results even when they were computed on the same weights (SHA-256) with the "
              "same settings; such results are reused otherwise (eval.reuse)."),
    "verbose": (lambda fv, n, d, h: _integer(fv, n, d, h, 0, 2), 1,
                "Progress: 0 quiet, 1 a progress bar with an ETA, 2 a line per finished stage (for logs)."),
    "trust_model": (lambda fv, n, d, h: flags.DEFINE_bool(n, d, h, flag_values=fv), False,
                    "Load a SavedModel given as --run_dir without checking first that its graph holds only "
                    "pure numerical ops (eval/model_scan.py); only for a file you wrote: a SavedModel is a "
                    "program. A .keras file is loaded with safe_mode=True either way."),
}


def define_shared(fv: flags.FlagValues, *names: str, note: Optional[dict[str, str]] = None,
                  repeat: Sequence[str] = (), **defaults: Any) -> None:
    """Defines the shared flags ``names`` on ``fv``. ``defaults`` overrides a flag's default (e.g.
    nb_iter=20); ``note`` appends a tool's remark to a flag's help (what its default is there);
    ``repeat`` names the radius flags a tool takes several values of (the black box's ε list)."""
    unknown = (set(names) - set(SHARED) | set(defaults) - set(names) | set(note or {}) - set(names)
               | set(repeat) - ({"eps", "eps_iter"} & set(names)))
    if unknown:
        raise ValueError(f"not a shared flag of this call: {', '.join(sorted(unknown))}")
    for name in names:
        define, default, help = SHARED[name]
        extra = (note or {}).get(name)
        help = f"{help} {extra}" if extra else help
        if name in repeat:
            define_fraction(fv, name, defaults.get(name, []), help, multi=True)
        else:
            define(fv, name, defaults.get(name, default), help)


def parse(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    """Parses ``argv`` (program name first) into ``fv`` from scratch; UsageError for a flag absl
    refuses or a stray argument. Returns [program name]."""
    fv.unparse_flags()
    try:
        rest = fv(list(argv))
    except flags.Error as e:
        raise UsageError(str(e).splitlines()[0] if str(e).strip() else type(e).__name__) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r}")
    return rest


def describe(flag: flags.Flag) -> tuple[str, str, str]:
    """(type with its choices or bounds, default, help) of a flag, for --help and docs/cli.md."""
    parser = flag.parser
    kind = flag.flag_type()
    text = " ".join((flag.help or "").split())
    if isinstance(parser, flags.EnumParser):
        kind = "one of " + "|".join(parser.enum_values)
        text = text.removeprefix(f"<{'|'.join(parser.enum_values)}>: ")   # absl's own prefix
    elif getattr(parser, "lower_bound", None) is not None or getattr(parser, "upper_bound", None) is not None:
        low = "" if parser.lower_bound is None else f"{parser.lower_bound:,}"
        high = "" if parser.upper_bound is None else f"{parser.upper_bound:,}"
        kind += f" in [{low}, {high}]"
    elif isinstance(parser, FractionParser):
        kind += f" in ({parser.lower:g}, {parser.upper:g}]"
    if isinstance(flag, flags.MultiFlag):
        kind += ", repeatable"
        text = text.split(";  repeat this option")[0].split("; repeat this option")[0]   # absl's own suffix
    default = flag.default
    if isinstance(default, bool):
        shown = str(default).lower()
    elif default is None or default == []:
        shown = "–"
    elif isinstance(default, (list, tuple)):
        shown = ",".join(map(str, default))
    else:
        shown = str(default)
    return kind, shown, text


def flag_list(fv: flags.FlagValues) -> list[flags.Flag]:
    """The tool's flags in name order."""
    return sorted({f.name: f for f in fv._flags().values()}.values(), key=lambda f: f.name)


def help_text(doc: str, fv: flags.FlagValues) -> str:
    lines = [doc.strip(), "", "Flags:"]
    for f in flag_list(fv):
        kind, default, text = describe(f)
        lines.append(f"  --{f.name}: {text}\n      ({kind}; default: {default})")
    return "\n".join(lines)


def _is_bad_input(e: BaseException) -> bool:
    # cce_tf.data.DataError (a missing or corrupt data file) by name: importing it here would
    # import the data module's dependencies before the flags are checked.
    return isinstance(e, UsageError) or type(e).__name__ == "DataError"


def quiet_tf_log(argv: Sequence[str]) -> None:
    """TF_CPP_MIN_LOG_LEVEL=3 for TensorFlow's C++ log, unless the user set it or asked for it with
    --verbose 2. Level 3, not 2: on a machine without CUDA, TensorFlow's first op logs "failed call to
    cuInit" at ERROR, which level 2 still prints. It must be set before TensorFlow's first import,
    which reads it once. (The "oneDNN custom operations" and "cudart_stub" lines that ``import
    tensorflow`` prints come from its libraries' static initialisers, before the variable is read:
    no level hides them.)"""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    for i, arg in enumerate(argv):
        name, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "verbose":
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value.strip() == "2":
                return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def run(main: Callable[[list[str]], Optional[int]], fv: flags.FlagValues,
        argv: Optional[Sequence[str]] = None, doc: Optional[str] = None,
        failures: Iterable[type] = ()) -> int:
    """The exit code of ``main(argv)`` (``sys.argv`` by default): 0 done (or ``main``'s own code);
    --help: ``doc`` (default: ``main``'s module docstring) and the flags, 0; bad input: one line
    ``error: ...`` on stderr, 2; an exception of ``failures`` (the tool's own, e.g. a NaN loss):
    one line, 1."""
    argv = list(sys.argv if argv is None else argv)
    quiet_tf_log(argv)
    if any(a in HELP_ARGS for a in argv[1:]):
        print(help_text(doc if doc is not None else sys.modules[main.__module__].__doc__ or "", fv))
        return 0
    failures = tuple(failures)
    try:
        return int(main(argv) or 0)
    except Exception as e:  # noqa: BLE001 - only bad input and the given failures; the rest re-raised
        if _is_bad_input(e):
            code = 2
        elif failures and isinstance(e, failures):
            code = 1
        else:
            raise
        print(f"error: {' '.join(str(e).split())[:1000]}", file=sys.stderr)
        return code
