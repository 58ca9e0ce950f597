"""Exports a trained model: a bundle, and StableHLO or ONNX for serving (harjax/serving/export.py).

python -m harjax.export --workdir=W --output=B [--step=best|latest|N] [--format=bundle,stablehlo,onnx]
python -m harjax.export --bundle=B --format=stablehlo,onnx        # export again from a bundle alone
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from harjax import cli
from harjax.serving import bundle as bundle_lib, export

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir to export from.")
_BUNDLE = flags.DEFINE_string(
    "bundle", None, "Instead of --workdir: a bundle to export other formats from (into itself, or into --output)."
)
_OUTPUT = flags.DEFINE_string("output", None, "The bundle directory to write.")
_STEP = flags.DEFINE_string("step", "best", "best (the run's selection metric), latest, or a step number.")
_FORMAT = flags.DEFINE_list("format", ["bundle"], f"Any of {export.FORMATS}; the bundle is always written.")
_WINDOW_STEPS = flags.DEFINE_integer(
    "window_steps", None, "Sensor steps of the exported formats' input (default: the training length)."
)


def main(argv: list[str]) -> None:
    """Writes the bundle and the formats the flags ask for."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    formats = set(_FORMAT.value) | {"bundle"}
    if formats - set(export.FORMATS):
        raise app.UsageError(f"--format={','.join(_FORMAT.value)}: choose from {export.FORMATS}")
    if bool(_WORKDIR.value) == bool(_BUNDLE.value):
        raise app.UsageError("give --workdir (a training workdir) or --bundle (an exported bundle), not both")
    if _WORKDIR.value:
        if not _OUTPUT.value:
            raise app.UsageError("--output: the bundle directory to write")
        bundle = export.bundle_from_workdir(_WORKDIR.value, _OUTPUT.value, _STEP.value)
    else:
        bundle = bundle_lib.Bundle.load(_BUNDLE.value)
        if _OUTPUT.value and os.path.abspath(_OUTPUT.value) != os.path.abspath(_BUNDLE.value):
            bundle = export.write_bundle(_OUTPUT.value, bundle.meta, bundle.variables)
    steps = _WINDOW_STEPS.value or bundle.meta["inputs"]["sensor_steps"]
    for name, writer in (("stablehlo", export.export_stablehlo), ("onnx", export.export_onnx)):
        if name in formats:  # each format folder whole or not at all
            logging.info("wrote %s", writer(bundle, os.path.join(bundle.directory, name), steps))
    logging.info(
        "bundle %s: step %d, %d classes, formats %s",
        bundle.directory,
        bundle.meta["step"],
        len(bundle.class_names),
        sorted(formats),
    )


if __name__ == "__main__":
    cli.run(main)
