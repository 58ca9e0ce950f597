"""Exports a trained model: a bundle, and StableHLO or ONNX (float32, int8, float16) (harjax/serving/export.py).

python -m harjax.export --workdir=W --output=B [--step=best|latest|N] [--format=bundle,stablehlo,onnx,onnx_int8]
python -m harjax.export --bundle=B --format=onnx_int8,onnx_fp16      # export again from a bundle alone

An ONNX export measures each ONNX format's size and test accuracy against the JAX model's on the same windows
(bundle.json 'formats', MODEL_CARD.md) when the run's workdir and data are readable.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from harjax import cli, errors
from harjax.data import batch as batch_lib
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
            calibration = bundle.calibration() if bundle.meta.get("calibration", {}).get("windows") else None
            meta = {key: value for key, value in bundle.meta.items() if key != "formats"}  # its folders stay in B
            bundle = export.write_bundle(_OUTPUT.value, meta, bundle.variables, calibration=calibration)
    steps = _WINDOW_STEPS.value or bundle.meta["inputs"]["sensor_steps"]
    for name, writer in export.EXPORTERS.items():
        if name in formats:  # each format folder whole or not at all
            logging.info("wrote %s", writer(bundle, os.path.join(bundle.directory, name), steps))
    if formats & set(export.ONNX_FORMATS):
        bundle = export.record_formats(bundle, export.measure_formats(bundle, _test_split(bundle), steps))
    logging.info(
        "bundle %s: step %d, %d classes, formats %s",
        bundle.directory,
        bundle.meta["step"],
        len(bundle.class_names),
        sorted(formats),
    )


def _test_split(bundle: bundle_lib.Bundle) -> batch_lib.Split | None:
    """The test split of the run the bundle came from, when its workdir and data are still readable."""
    try:
        return export.workdir_splits(bundle.meta["exported_from"])[1]
    except (errors.UserError, ImportError, OSError) as error:
        logging.warning("the formats' accuracy is not measured: the run's test split is not readable (%s)", error)
        return None


if __name__ == "__main__":
    cli.run(main)
