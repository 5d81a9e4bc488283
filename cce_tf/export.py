"""CLI: a run's ensemble as a file that needs Keras or TensorFlow only, not this package.

    python -m cce_tf.export --run_dir RUN --format keras --out ens.keras          # cce-export ...
    python -m cce_tf.export --run_dir RUN --format savedmodel --out ens_savedmodel

``--format keras`` writes a functional Keras model of built-in layers and ops only (each member's
own functional graph, then stack, log-softmax, logsumexp minus log N): its output is the ensemble
logits log f^en, and ``keras.saving.load_model(PATH)`` reads it with safe_mode on in a Python
without cce_tf. ``--format savedmodel`` writes the same model as a TensorFlow SavedModel for
serving: ``tf.saved_model.load(PATH).serve(x)``. Inputs are float32 NHWC images in [0, 1].

Exit codes: 0 written; 2 bad input (a missing or inconsistent run, a bad flag, an --out that
exists), one line on stderr, nothing written.

    from cce_tf.export import standalone_model, export_run
    model = standalone_model(load_run("runs/demo"))       # keras.Model, logits = log f^en
    export_run("runs/demo", "keras", "ens.keras")
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from typing import Optional

from absl import flags

from cce_tf import cli_flags


FORMATS = ("keras", "savedmodel")

FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "run_dir", note={"run_dir": "Exactly one here."})
flags.DEFINE_enum("format", "keras", FORMATS, "keras (a .keras file) or savedmodel (a TensorFlow SavedModel "
                  "folder).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Where to write it: a path ending in .keras, or a new folder for "
                    "savedmodel. It must not exist.", flag_values=FLAGS)

UsageError = cli_flags.UsageError   # bad input: one line, exit code 2, nothing written


def standalone_model(ensemble):
    """A functional keras.Model computing ``ensemble(x)`` (log f^en, DESIGN.md contract 3) from the
    members' layers with Keras ops only: no custom class, no Lambda, so it loads in safe mode
    where cce_tf cannot be imported. The members' weights are shared, not copied."""
    import keras
    from keras import ops

    members = list(ensemble.members)
    inputs = keras.Input(shape=tuple(members[0].inputs[0].shape[1:]), name="images")
    z = ops.stack([m(inputs) for m in members], axis=0)               # [N, B, C]
    # Stable log((1/N) sum_n softmax(z_n)), as cce_tf.ensemble.ensemble_logits computes it.
    logits = ops.logsumexp(ops.log_softmax(z, axis=-1), axis=0) - math.log(len(members))
    return keras.Model(inputs, logits, name="cce_ensemble")


def export_run(run_dir: str, fmt: str, out: str) -> str:
    """Write the run's ensemble to ``out`` as ``fmt`` ("keras" or "savedmodel"); returns ``out``.
    Written under a temporary name, then renamed. Raises UsageError for bad input."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not out:
        raise UsageError("--out is required")
    if fmt == "keras" and not out.endswith(".keras"):
        raise UsageError(f"--out {out} must end in .keras for --format keras")
    if os.path.lexists(out):
        raise UsageError(f"--out {out} exists: remove it or choose another")
    if not run_dir:
        raise UsageError("--run_dir is required")
    from cce_tf.ensemble import InconsistentRun, load_run

    try:
        ensemble = load_run(run_dir)
    except (FileNotFoundError, InconsistentRun) as e:
        raise UsageError(str(e)) from None
    model = standalone_model(ensemble)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp.{os.path.basename(out)}")  # ends in .keras when out does
    if fmt == "keras":
        model.save(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted export
        model.export(tmp, format="tf_saved_model", verbose=False)
    os.replace(tmp, out)
    return out


def main(argv: list[str]) -> None:
    """Parse ``argv`` (program name first) and export."""
    cli_flags.parse(FLAGS, argv)
    if len(FLAGS.run_dir) > 1:
        raise UsageError(f"--run_dir given {len(FLAGS.run_dir)} times: export takes one run")
    run_dir = FLAGS.run_dir[0] if FLAGS.run_dir else None
    path = export_run(run_dir, FLAGS.format, FLAGS.out)
    print(f"wrote {path} ({FLAGS.format}): outputs the ensemble logits log f^en of {run_dir}")


def cli(argv: Optional[list[str]] = None) -> int:
    """``main`` with exit codes (0 done, 2 bad input); the console script cce-export."""
    return cli_flags.run(main, FLAGS, argv, doc=__doc__.split("\n    from cce_tf")[0])


if __name__ == "__main__":
    sys.exit(cli())
