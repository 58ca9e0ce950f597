"""Predictions of a model bundle on new recordings: a file of examples, or one long recording as a stream.

    python -m harjax.predict --bundle=B --input=X.npz --output=P.csv|P.jsonl [--batch_size=256]
        [--allow_missing_video]
    python -m harjax.predict --bundle=B --stream=recording.csv|npz --window_s=5 --hop_s=1 --output=P.csv|P.jsonl
        [--smooth=5] [--video=embedding.npy] [--allow_missing_video] [--runtime=onnx_int8 --threads=1]
    python -m harjax.predict --bundle=B --recordings=M.jsonl|M.csv --output=P.csv|P.jsonl [--device=cpu|cuda]

The inputs and outputs are described in harjax/serving/batch.py (--input) and harjax/serving/streaming.py
(--stream) and harjax/serving/recordings.py (--recordings: raw clips and sensor files in a recordings manifest, with
the extract extra installed when the model reads video). Nothing is written unless every prediction succeeds.
"""

from __future__ import annotations

from absl import app, flags, logging

from harjax import cli
from harjax.data import resampling
from harjax.serving import batch, predictor as predictor_lib, recordings, streaming

_BUNDLE = flags.DEFINE_string("bundle", None, "A model bundle (python -m harjax.export).")
_INPUT = flags.DEFINE_string("input", None, "An .npz of examples to predict.")
_STREAM = flags.DEFINE_string("stream", None, "One long recording (.csv or .npz) to predict window by window.")
_RECORDINGS = flags.DEFINE_string(
    "recordings", None, "A recordings manifest of raw clips and sensor files (harjax/recordings/manifest.py)."
)
_DEVICE = flags.DEFINE_string("device", "cpu", "Recordings: where the video model embeds the clips (cpu, cuda).")
_OUTPUT = flags.DEFINE_string("output", None, "Where predictions go: .csv or .jsonl.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per forward pass.")
_ALLOW_MISSING_VIDEO = flags.DEFINE_bool(
    "allow_missing_video",
    False,
    "Predict with the video removed (the robustness evaluation's convention) when the input has none.",
)
_RUNTIME = flags.DEFINE_enum(
    "runtime",
    "jax",
    predictor_lib.RUNTIMES,
    "What runs the model: the bundle's JAX model, or one of its exported ONNX models through onnxruntime (the edge's "
    "runtime; windows of the steps it was exported with).",
)
_THREADS = flags.DEFINE_integer("threads", 1, "ONNX runtimes: onnxruntime's intra-op threads.")
_WINDOW_S = flags.DEFINE_float("window_s", None, "Stream: window length in seconds.")
_HOP_S = flags.DEFINE_float("hop_s", None, "Stream: seconds between window starts.")
_SMOOTH = flags.DEFINE_integer("smooth", 1, "Stream: majority vote over this many last windows (1: none).")
_VIDEO = flags.DEFINE_string("video", None, "Stream: a .npy video embedding, [d_v] or one per window.")
_MAX_GAP_PERIODS = flags.DEFINE_float(
    "max_gap_periods",
    resampling.DEFAULT_MAX_GAP_PERIODS,
    "Stream: a step between timestamps longer than this many sample periods is a gap, masked, not interpolated.",
)
_ON_CLOCK_JUMP = flags.DEFINE_enum(
    "on_clock_jump",
    "split",
    resampling.CLOCK_JUMP_ACTIONS,
    "Stream: when the clock jumps back, predict each part on its own (split) or refuse the recording (stop).",
)
flags.mark_flags_as_required(["bundle", "output"])


def main(argv: list[str]) -> None:
    """Predicts on the file or stream the flags name and writes every prediction, or nothing."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if sum(bool(value) for value in (_INPUT.value, _STREAM.value, _RECORDINGS.value)) != 1:
        raise app.UsageError(
            "give one of --input (an .npz of examples), --stream (one long recording) or --recordings (a manifest)"
        )
    if not _OUTPUT.value.endswith(batch.FORMATS):
        raise app.UsageError(f"--output={_OUTPUT.value}: choose a {' or '.join(batch.FORMATS)} file")
    predictor = predictor_lib.Predictor.load(_BUNDLE.value, _ALLOW_MISSING_VIDEO.value, _RUNTIME.value, _THREADS.value)
    if _INPUT.value:
        table = batch.predict_file(predictor, _INPUT.value, _BATCH_SIZE.value)
    elif _RECORDINGS.value:
        table = recordings.predict_recordings(predictor, _RECORDINGS.value, _BATCH_SIZE.value, _DEVICE.value)
    else:
        table = streaming.predict_stream(
            predictor,
            _STREAM.value,
            _WINDOW_S.value,
            _HOP_S.value,
            _SMOOTH.value,
            _VIDEO.value,
            _BATCH_SIZE.value,
            _MAX_GAP_PERIODS.value,
            _ON_CLOCK_JUMP.value,
        )
    if any(row["video"] == "removed" for row in table.rows):
        logging.warning(
            "the model reads video but none was given: predictions are with the video removed "
            "(the robustness evaluation's convention); the output's 'video' column says so"
        )
    batch.write_rows(table, _OUTPUT.value)
    logging.info("wrote %d predictions to %s", len(table.rows), _OUTPUT.value)


if __name__ == "__main__":
    cli.run(main)
