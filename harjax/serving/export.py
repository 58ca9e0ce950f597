"""A trained model as a portable bundle, and as StableHLO or ONNX for serving and the edge (python -m harjax.export).

The bundle (harjax/serving/bundle.py reads it) holds everything inference needs and nothing of training: parameters
and the video standardisation statistics, the model config, class names, the sensor channels in order with their
sampling rate and normalisation, what produced the video embeddings, versions, and MODEL_CARD.md with the eval
metrics of the exported checkpoint. --step=best is the checkpoint the run selected: the best validation macro-F1
when it held out a validation split, else the best eval macro-F1. A run stopped before its last step (Ctrl-C,
preemption) exports marked unfinished: bundle.json's 'training' record, the top of the card and a warning say so.
An earlier bundle is replaced whole, so one holding anything an export does not write is refused.

Formats, each in a folder of the bundle, of the forward function on standardised inputs (predictor.forward) with
a symbolic batch dimension and a fixed number of sensor steps (--window_steps, default the training length):
  stablehlo/  model.jax_export (jax.export, serialised), params.npz (its first argument, in order), signature.json.
              Readable by JAX releases inside StableHLO's compatibility window; after a JAX upgrade, export
              again from the bundle.
  onnx/       model.onnx (jax2onnx; parameters as initializers), signature.json. Needs the export extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import harjax
from harjax import errors
from harjax.data import batch as batch_lib, pipeline
from harjax.models import ensemble, har_model
from harjax.serving import bundle as bundle_lib, predictor as predictor_lib
from harjax.training import checkpointing, metrics as metrics_lib, parallel, step as step_lib, workdir as workdir_lib

FORMATS = ("bundle", "stablehlo", "onnx", "onnx_int8", "onnx_fp16")
FORMAT_FOLDERS = tuple(name for name in FORMATS if name != "bundle")  # each in a folder of its name in the bundle
ONNX_FORMATS = ("onnx", "onnx_int8", "onnx_fp16")  # each folder's model.onnx: onnxruntime runs them alike
ONNX_FILE = "model.onnx"
# Everything an export writes in a bundle's folder: an earlier bundle holding anything else is not replaced.
BUNDLE_ENTRIES = (
    bundle_lib.BUNDLE_FILE,
    bundle_lib.PARAMS_FILE,
    bundle_lib.CARD_FILE,
    bundle_lib.CALIBRATION_FILE,
    *FORMAT_FOLDERS,
)
# Training windows the bundle keeps for int8 calibration: onnxruntime's MinMax calibration settles within a few
# hundred windows, and 256 windows of 5 s of 12 channels are 3 MB.
CALIBRATION_WINDOWS = 256


class ExportError(errors.UserError):
    """An export that cannot be made as asked; the message names the workdir, step or format."""


def _choose_step(manager: Any, step: str, directory: str) -> int:
    steps = manager.all_steps()
    if not steps:
        raise ExportError(f"{directory} holds no checkpoint; train first")
    if step == "latest":
        return manager.latest_step()
    if step == "best":
        best = manager.best_step()
        return best if best is not None else manager.latest_step()
    if not step.isdigit() or int(step) not in steps:
        raise ExportError(f"--step={step}: choose best, latest or one of the saved steps {sorted(steps)}")
    return int(step)


def _metrics_at(workdir: str, step: int) -> dict[str, float]:
    """The evaluations of checkpoint `step`.

    'eval/' (test split) and 'val/' (validation) logged at that step, and 'eval_selected/' (the test split at the
    checkpoint the validation split selected) when that is this step.
    """
    records = metrics_lib.read_metrics(workdir)
    found = {
        name: value
        for record in records
        if record["step"] == step
        for name, value in record.items()
        if name.startswith(("eval/", "val/"))
    }
    for record in records:
        if record.get("eval_selected/step") == step:
            found |= {name: value for name, value in record.items() if name.startswith("eval_selected/")}
    return found


def _training_record(last_step: int, num_steps: int, workdir: str) -> dict[str, Any]:
    """Whether the run reached its last step, so a bundle of an interrupted run says it is unfinished."""
    finished = last_step >= num_steps
    if not finished:
        logging.warning(
            "%s: the run stopped at step %d of %d and is unfinished; the bundle says so (bundle.json 'training', "
            "MODEL_CARD.md): rerun its training command to finish it, then export again",
            workdir,
            last_step,
            num_steps,
        )
    return {"last_step": last_step, "num_steps": num_steps, "finished": finished}


def bundle_from_workdir(workdir: str, output: str, step: str = "best") -> bundle_lib.Bundle:
    """Writes the bundle of one checkpoint of a training workdir; returns it, loaded back.

    With it go CALIBRATION_WINDOWS windows of the training split for int8 calibration, when the run's training data
    is readable; when not, the bundle says why and an int8 export from it is refused.
    """
    _workdir_record(workdir)
    check_output(output, workdir)  # before any work
    meta, variables = checkpoint_contents(workdir, step)
    try:
        train, _ = workdir_splits(workdir)
    except (errors.UserError, ImportError, OSError) as error:  # its data elsewhere, or its readers not installed
        logging.warning(
            "%s: no calibration windows in the bundle, its training data is not readable (%s)", workdir, error
        )
        return write_bundle(output, meta | {"calibration": {"missing": str(error)}}, variables, workdir)
    windows = calibration_windows(train, meta)
    calibration = {"windows": len(windows[batch_lib.SENSOR]), "origin": train.origin, "fingerprint": train.fingerprint}
    return write_bundle(output, meta | {"calibration": calibration}, variables, workdir, windows)


def workdir_splits(workdir: str) -> tuple[batch_lib.Split, batch_lib.Split]:
    """(the training split, the test split) a run trained and was scored on, read again from its config.json."""
    config = ml_collections.ConfigDict(_workdir_record(workdir)["config"])
    train, evaluation = pipeline.load_splits(config)
    train, _ = pipeline.validation_split(config, train)
    return train, evaluation


def calibration_windows(train: batch_lib.Split, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Up to CALIBRATION_WINDOWS training examples drawn at random (seed 0), as the exported models read them."""
    chosen = np.sort(np.random.default_rng(0).permutation(len(train))[:CALIBRATION_WINDOWS])
    batch = batch_lib.examples(train, chosen)
    names = [batch_lib.SENSOR, batch_lib.SENSOR_MASK]
    if meta["config"]["model"]["modalities"] in ("both", "video"):
        names += [batch_lib.VIDEO, batch_lib.VIDEO_PRESENT]
        batch.setdefault(batch_lib.VIDEO_PRESENT, np.ones(len(chosen), bool))
    return {name: batch[name] for name in names}


def _workdir_record(workdir: str) -> dict[str, Any]:
    """The workdir's config.json, or an error naming what is missing."""
    if not os.path.isdir(workdir):
        raise ExportError(f"--workdir={workdir}: no such directory")
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    if not os.path.exists(path):
        raise ExportError(f"{path} is missing: {workdir} is not a harjax workdir")
    with open(path) as f:
        return json.load(f)


def checkpoint_contents(workdir: str, step: str = "best") -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle.json's record, the variables) of one checkpoint of a training workdir: a bundle, in memory."""
    record = _workdir_record(workdir)
    config = ml_collections.ConfigDict(record["config"])
    train_data = record["data"]["train"]
    selection_metric = record.get("selection_metric", checkpointing.BEST_METRIC)  # older workdirs: the eval split
    model = har_model.build_model(config, train_data["num_classes"])
    example = {
        name: np.zeros(
            (jax.device_count(), *shape),
            np.bool_ if name == batch_lib.SENSOR_MASK else np.int32 if name == batch_lib.LABEL else np.float32,
        )
        for name, shape in train_data["shapes"].items()
        if name != batch_lib.TRIAL
    }
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    mesh = parallel.make_mesh()
    abstract = parallel.replicated_abstract(
        jax.eval_shape(
            lambda: step_lib.create_train_state(
                model, optimizer, example, config.seed, ensemble.ensemble_size(config.model)
            )
        ),
        mesh,
    )
    checkpointer = checkpointing.Checkpointer(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        config.train.keep_checkpoints,
        checkpointing.model_signature(config, abstract),
        best_metric=selection_metric,
    )
    try:
        chosen = _choose_step(checkpointer.manager, step, checkpointer.directory)
        state, _ = checkpointer.restore(chosen, abstract)
        training = _training_record(checkpointer.latest_step, config.train.num_steps, workdir)
    finally:
        checkpointer.close()
    inputs = dict(record["inputs"]) | {
        "video_shape": train_data["shapes"].get(batch_lib.VIDEO),
        "sensor_steps": train_data["shapes"][batch_lib.SENSOR][0],
    }
    meta = {
        "bundle_format": bundle_lib.format_for(ensemble.ensemble_size(config.model)),
        "harjax_version": harjax.__version__,
        "jax_version": jax.__version__,
        "training_code": record.get("git_commit"),
        "exported_from": os.path.abspath(workdir),
        "step": chosen,
        "step_choice": step,
        "selection_metric": selection_metric,
        "config": {"model": config.model.to_dict(), "loss": config.loss.to_dict()},
        "class_names": inputs.pop("class_names"),
        "inputs": inputs,
        "metrics": _metrics_at(workdir, chosen),
        "training": training,
        "data": {
            "source": config.data.source,
            "protocol": config.data.protocol,
            "train": {key: train_data[key] for key in ("origin", "fingerprint", "examples")},
            "eval": {key: record["data"]["eval"][key] for key in ("origin", "fingerprint", "examples")},
        },
    }
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    return meta, variables


def check_output(output: str, workdir: str | None = None) -> bool:
    """Whether writing a bundle at `output` replaces an earlier bundle (True) or makes a new folder (False).

    Anything else is refused before any work, naming it: a file, a folder that is not a harjax bundle, an earlier
    bundle that also holds entries no export writes (BUNDLE_ENTRIES; a user's notes in it), the workdir, a folder
    that holds it, or anything inside it that the run writes (a new subfolder, W/bundle, is fine).
    """
    path = os.path.abspath(output)
    if workdir is not None:
        root = os.path.abspath(workdir)
        if path == root or root.startswith(path + os.sep):
            raise ExportError(f"--output={output} is the workdir or holds it; write the bundle to a new folder")
        if path.startswith(root + os.sep):
            first = os.path.relpath(path, root).split(os.sep)[0]
            if first in workdir_lib.RUN_OUTPUTS:
                raise ExportError(
                    f"--output={output} is inside {first}, which the run writes in its workdir; "
                    f"choose a new folder (e.g. {os.path.join(workdir, 'bundle')})"
                )
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ExportError(f"--output={output} exists and is a file; a bundle is a folder")
    if not os.path.isdir(path):
        return False
    entries = sorted(os.listdir(path))
    if not bundle_lib.is_bundle(path):
        raise ExportError(
            f"--output={output} exists and is not a harjax bundle (it holds {len(entries)} entries"
            + (f": {_listed(entries)}" if entries else "")
            + "); choose a new folder: export replaces only an earlier bundle"
        )
    foreign = [
        name + (os.sep if os.path.isdir(os.path.join(path, name)) else "")
        for name in entries
        if not _written_by_export(name)
    ]
    if foreign:
        raise ExportError(
            f"--output={output} is an earlier bundle that also holds {len(foreign)} entries no export writes "
            f"({_listed(foreign)}), which replacing it would delete; move them out of it, or export to a new folder"
        )
    return True


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _written_by_export(name: str) -> bool:
    """Whether replacing a bundle may delete this entry of it: an export wrote it (a killed one: its staged folder)."""
    return name in BUNDLE_ENTRIES or any(name.startswith(_staging_prefix(folder)) for folder in FORMAT_FOLDERS)


def _staging_prefix(target: str) -> str:
    """The name of a folder staged to replace `target` starts with this (a hidden name, beside it)."""
    return f".{os.path.basename(target)}-"


@contextlib.contextmanager
def _staged(target: str) -> Iterator[str]:
    """A temporary folder beside `target` that replaces it whole once the block succeeds, or is removed.

    The caller has made sure that an existing `target` is harjax's own (check_output).
    """
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=_staging_prefix(target))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.isdir(target):
        previous = tempfile.mkdtemp(dir=parent, prefix=f"{_staging_prefix(target)}replaced-")
        os.replace(target, os.path.join(previous, "old"))
        os.replace(staging, target)
        shutil.rmtree(previous)
    else:
        os.replace(staging, target)


def write_bundle(
    output: str,
    meta: dict[str, Any],
    variables: dict[str, Any],
    workdir: str | None = None,
    calibration: dict[str, np.ndarray] | None = None,
) -> bundle_lib.Bundle:
    """Writes a bundle whole or not at all: into a temporary folder, read back, then renamed into place.

    An existing `output` is replaced only if it is a harjax bundle (check_output). `calibration`: the windows of
    calibration.npz (calibration_windows).
    """
    if check_output(output, workdir):
        logging.info("replacing the earlier bundle at %s", output)
    with _staged(output) as staging:
        parameters = flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))
        meta = meta | {"params_sha256": hashlib.sha256(parameters).hexdigest()}
        with open(os.path.join(staging, bundle_lib.PARAMS_FILE), "wb") as f:
            f.write(parameters)
        with open(os.path.join(staging, bundle_lib.BUNDLE_FILE), "w") as f:
            json.dump(meta, f, indent=1)
        with open(os.path.join(staging, bundle_lib.CARD_FILE), "w") as f:
            f.write(model_card(meta))
        if calibration is not None:
            np.savez(os.path.join(staging, bundle_lib.CALIBRATION_FILE), **calibration)
        bundle_lib.Bundle.load(staging)  # what was written reads back, before it replaces anything
    return bundle_lib.Bundle.load(output)


def model_card(meta: dict[str, Any]) -> str:
    """The bundle's MODEL_CARD.md: what the model reads, its classes, training data and metrics."""
    model, inputs, data = meta["config"]["model"], meta["inputs"], meta["data"]
    metrics = (
        "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(meta["metrics"].items()))
        or "| (no evaluation at this step) | |"
    )
    video = json.dumps(inputs["video_source"]) if inputs.get("video_source") else "none (a video-free model)"
    normalisation = {
        "recording": "each example by its own recorded steps",
        "recording_level": "each example by its own recorded steps, its level kept in the training split's units "
        "(statistics in bundle.json)",
    }.get(inputs["normalization"].get("mode"), "with the training split's statistics in bundle.json")
    selection = meta.get("selection_metric", checkpointing.BEST_METRIC)
    chosen = f"chosen by {selection}" + (
        " of the test split itself, so its eval/ scores are optimistic" if selection.startswith("eval/") else ""
    )
    members = model.get("ensemble_size", 1)
    ensemble_note = f" An ensemble of {members} members: it predicts their mean probabilities." if members > 1 else ""
    training = meta.get("training")  # absent in bundles of earlier harjax versions
    unfinished = (
        f"\n**Unfinished: the run stopped at step {training['last_step']} of {training['num_steps']}** (interrupted "
        "before its last step): rerun its training command to finish it, then export again.\n"
        if training and not training["finished"]
        else ""
    )
    return f"""# harjax model card
{unfinished}
A human activity recognition model of harjax {meta["harjax_version"]} (training code {meta["training_code"]}):
modalities `{model["modalities"]}`, fusion `{model["fusion"]}`, sensor encoder `{model.get("encoder", "cnn")}`,
{model["num_segments"]} temporal segments, Transformer {"on" if model["use_transformer"] else "off"};{ensemble_note}
checkpoint of step {meta["step"]} ({meta["step_choice"]}; the run's best checkpoint is {chosen}).

## Inputs
- Sensors: {len(inputs["channel_names"])} channels in this order: {", ".join(inputs["channel_names"])}; raw values at
  {inputs["sampling_rate_hz"]:g} Hz, standardised inside harjax.serving as in training ({normalisation}).
  A missing stream is given as the training mean.
- Video: {f"embedding {inputs['video_shape']} per example, from {video}" if inputs.get("video_shape") else video}.
  Extract matching embeddings (same model, prompt set and kind) before predicting; without them, predictions
  with the video removed (`--allow_missing_video`) are those of the robustness evaluation's "video removed".
- Classes ({len(meta["class_names"])}): {", ".join(meta["class_names"])}.

## Training data
Source `{data["source"]}`{f", protocol `{data['protocol']}`" if data["source"] in ("mmact", "recordings") else ""}:
{data["train"]["examples"]} training examples from {data["train"]["origin"]}
(fingerprint {data["train"]["fingerprint"]}); evaluated on {data["eval"]["examples"]} examples from
{data["eval"]["origin"]} (fingerprint {data["eval"]["fingerprint"]}).

## Evaluation at this checkpoint
`val/`: the validation split (held out of training; it selects the checkpoint when there is one), `eval/`: the test
split, `eval_selected/`: the test split at the checkpoint the validation split selected.

| metric | value |
|---|---|
{metrics}

{_formats_section(meta.get("formats"))}## Use
    python -m harjax.predict --bundle=THIS_DIR --input=recordings.npz --output=predictions.csv
    python -m harjax.predict --bundle=THIS_DIR --stream=recording.csv --window_s=5 --hop_s=1 --output=track.csv
"""


def _formats_section(formats: dict[str, dict[str, Any]] | None) -> str:
    """The card's table of exported formats: each one's size and accuracy on the same test windows."""
    if not formats:
        return ""
    steps = next((record["window_steps"] for record in formats.values() if "window_steps" in record), None)
    rows = "\n".join(
        f"| {name} | {record['file']} | {record['bytes'] / 1024:.1f} KB | "
        + (
            f"{record['eval_accuracy']:.4f} | {record['agreement_with_jax']:.4f}"
            if "eval_accuracy" in record
            else f"not measured ({record.get('not_measured', 'no record')}) |"
        )
        + " |"
        for name, record in formats.items()
    )
    measured = f" on the test split's examples cut to {steps} steps (the formats' window)" if steps else ""
    return f"""## Formats
Each exported model's size and accuracy{measured}; `jax` is the bundle's own model on the same windows, and
agreement is the share of windows on which a format predicts the class the `jax` model does.

| format | file | size | eval accuracy | agreement with jax |
|---|---|---|---|---|
{rows}

"""


def _forward_function(bundle: bundle_lib.Bundle):
    """(f(*inputs), the bundle's variables): logits from standardised inputs, parameters closed over."""
    model = bundle_lib.inference_model(bundle.meta)

    def infer(variables, sensor, sensor_mask, video=None, video_present=None):
        return predictor_lib.forward(model, bundle.ensemble_size, variables, sensor, sensor_mask, video, video_present)

    return infer


def _input_specs(bundle: bundle_lib.Bundle, batch: Any, steps: int) -> list[jax.ShapeDtypeStruct]:
    specs = [
        jax.ShapeDtypeStruct((batch, steps, len(bundle.channel_names)), jnp.float32),
        jax.ShapeDtypeStruct((batch, steps), jnp.bool_),
    ]
    if bundle.uses_video:
        specs += [
            jax.ShapeDtypeStruct((batch, *bundle.video_shape), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.bool_),
        ]
    return specs


def _signature(bundle: bundle_lib.Bundle, steps: int, extra: dict[str, Any]) -> dict[str, Any]:
    inputs = ["sensor [batch, steps, channels] float32, standardised", "sensor_mask [batch, steps] bool"]
    if bundle.uses_video:
        inputs += ["video [batch, ...] float32", "video_present [batch] bool"]
    return {
        "inputs": inputs,
        "output": "logits [batch, classes] float32",
        "steps": steps,
        "channels": list(bundle.channel_names),
        "class_names": list(bundle.class_names),
        "normalization": bundle.meta["inputs"]["normalization"],
        "jax_version": jax.__version__,
        **extra,
    }


def export_stablehlo(bundle: bundle_lib.Bundle, directory: str, steps: int) -> str:
    """jax.export of the forward function: parameters as its first argument (a list, params.npz in order)."""
    infer = _forward_function(bundle)
    leaves, treedef = jax.tree.flatten(bundle.variables)

    def exported_function(parameters, *inputs):
        return infer(jax.tree.unflatten(treedef, parameters), *inputs)

    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(exported_function))(
        [jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype) for leaf in leaves],
        *_input_specs(bundle, batch, steps),
    )
    with _staged(directory) as staging:
        with open(os.path.join(staging, "model.jax_export"), "wb") as f:
            f.write(exported.serialize())
        np.savez(
            os.path.join(staging, "params.npz"), **{f"p{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        )
        call = "jax.export.deserialize(bytes).call([params.npz arrays in key order], *inputs)"
        with open(os.path.join(staging, "signature.json"), "w") as f:
            json.dump(_signature(bundle, steps, {"call": call}), f, indent=1)
    return directory


def _onnx_model(bundle: bundle_lib.Bundle, steps: int) -> Any:
    """The forward function as an ONNX ModelProto (jax2onnx), parameters as initializers, batch dimension 'batch'."""
    try:
        from jax2onnx import to_onnx
    except ImportError as error:
        raise ExportError("--format=onnx needs jax2onnx: pip install -e '.[export]'") from error
    infer = _forward_function(bundle)
    variables = jax.device_put(bundle.variables)
    return to_onnx(lambda *inputs: infer(variables, *inputs), _input_specs(bundle, "batch", steps), model_name="harjax")


def _write_onnx(bundle: bundle_lib.Bundle, directory: str, steps: int, model: Any, extra: dict[str, Any]) -> str:
    with _staged(directory) as staging:
        with open(os.path.join(staging, ONNX_FILE), "wb") as f:
            f.write(model.SerializeToString())
        call = "onnxruntime.InferenceSession('model.onnx').run(None, inputs)"
        with open(os.path.join(staging, "signature.json"), "w") as f:
            json.dump(_signature(bundle, steps, {"call": call, **extra}), f, indent=1)
    return directory


def export_onnx(bundle: bundle_lib.Bundle, directory: str, steps: int) -> str:
    """ONNX (jax2onnx) of the forward function in float32."""
    return _write_onnx(bundle, directory, steps, _onnx_model(bundle, steps), {"precision": "float32"})


def export_onnx_fp16(bundle: bundle_lib.Bundle, directory: str, steps: int) -> str:
    """The ONNX model with float16 weights and arithmetic, its inputs and logits kept float32 (half the size)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(_onnx_model(bundle, steps), keep_io_types=True)
    return _write_onnx(bundle, directory, steps, model, {"precision": "float16 inside, float32 inputs and output"})


INT8_OPS = ("Conv", "Gemm", "MatMul")  # where a model's weights and time are
# A layer whose staying float removes at least this share of the int8 model's logit error on the calibration
# windows stays float (export_onnx_int8).
INT8_DOMINANT_ERROR = 0.5


def _with_vector_gemm_biases(model: Any) -> Any:
    """The model with each Gemm's [1, N] bias initializer stored as [N] (the same broadcast).

    onnxruntime's per-channel quantizer indexes a bias by output channel and fails on a [1, N] one (jax2onnx writes
    some; the tiny size's model has one).
    """
    from onnx import numpy_helper

    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    flattened = set()
    for node in model.graph.node:
        bias = initializers.get(node.input[2]) if node.op_type == "Gemm" and len(node.input) > 2 else None
        if bias is not None and len(bias.dims) == 2 and bias.dims[0] == 1:
            bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), bias.name))
            flattened.add(bias.name)
    kept = [info for info in model.graph.value_info if info.name not in flattened]  # their old shapes, inferred anew
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def export_onnx_int8(bundle: bundle_lib.Bundle, directory: str, steps: int) -> str:
    """The ONNX model statically quantized to int8 (onnxruntime, QDQ), calibrated on the bundle's training windows.

    The convolutions and matrix products (INT8_OPS): weights int8 per output channel, their inputs uint8
    (onnxruntime's U8S8, its CPU default) with ranges from MinMax calibration over the windows of calibration.npz,
    which the bundle records (bundle.json 'calibration': how many, from which split). Masks, normalisation,
    softmax and pooling stay float: quantizing every op agreed with the float model on 59% of a small model's
    windows against 95% this way (benchmarks/RESULTS.md). A layer that alone causes most of the int8 model's logit
    error on the calibration windows (INT8_DOMINANT_ERROR) stays float: on PickupGestureWiimoteZ one convolution,
    whose output a BatchNorm amplifies, caused 74% of it and cost 4 points of test accuracy, while the classes of
    the training windows all held. Chosen on the training windows only; signature.json lists the layers kept float.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    windows = window_inputs(bundle, bundle.calibration(), steps)  # refused, naming the file, when missing or empty
    model = _onnx_model(bundle, steps)
    names = [node.name for node in model.graph.input]

    class Windows(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(
                [
                    dict(zip(names, [array[i : i + 16] for array in windows], strict=True))
                    for i in range(0, len(windows[0]), 16)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    def logits(path: str) -> np.ndarray:
        return onnxruntime.InferenceSession(path).run(None, dict(zip(names, windows, strict=True)))[0]

    with tempfile.TemporaryDirectory() as scratch:
        float_path, prepared = (os.path.join(scratch, name) for name in ("float.onnx", "prepared.onnx"))
        with open(float_path, "wb") as f:
            f.write(model.SerializeToString())
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)  # its symbolic pass fails on jax2onnx graphs
        onnx.save(_with_vector_gemm_biases(onnx.load(prepared)), prepared)
        reference = logits(prepared)

        def quantized(kept_float: list[str], name: str) -> tuple[str, float]:
            """(path, mean |logit error| against the float model on the calibration windows)."""
            path = os.path.join(scratch, name)
            quantize_static(
                prepared,
                path,
                Windows(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(INT8_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=kept_float,
            )
            return path, float(np.abs(logits(path) - reference).mean())

        path, error = quantized([], "int8.onnx")
        candidates = [node.name for node in onnx.load(prepared).graph.node if node.op_type in INT8_OPS]
        without = {node: quantized([node], f"without_{i}.onnx")[1] for i, node in enumerate(candidates)}
        kept_float = [node for node in candidates if error > 0 and error - without[node] >= INT8_DOMINANT_ERROR * error]
        if kept_float:
            path, error = quantized(kept_float, "int8.onnx")
        record = {
            "calibration": bundle.meta.get("calibration"),
            "precision": "int8 weights, uint8 activations of Conv, Gemm and MatMul (QDQ); the rest float32",
            "kept_float": kept_float,
            "calibration_logit_error": error,  # mean |int8 - float32| over the calibration windows' logits
            "calibration_agreement": float(np.mean(logits(path).argmax(-1) == reference.argmax(-1))),
        }
        return _write_onnx(bundle, directory, steps, onnx.load(path), record)


EXPORTERS = {
    "stablehlo": export_stablehlo,
    "onnx": export_onnx,
    "onnx_int8": export_onnx_int8,
    "onnx_fp16": export_onnx_fp16,
}


def window_inputs(bundle: bundle_lib.Bundle, batch: dict[str, np.ndarray], steps: int) -> list[np.ndarray]:
    """The exported models' inputs, in order, from standardised examples: sensors cut or padded to `steps`."""
    sensor, mask = batch[batch_lib.SENSOR][:, :steps], batch[batch_lib.SENSOR_MASK][:, :steps]
    short = steps - sensor.shape[1]
    sensor = np.pad(sensor, ((0, 0), (0, short), (0, 0))).astype(np.float32)  # [N, steps, C]
    inputs = [sensor, np.pad(mask, ((0, 0), (0, short))).astype(bool)]
    if bundle.uses_video:
        present = batch.get(batch_lib.VIDEO_PRESENT, np.ones(len(sensor), bool))
        inputs += [batch[batch_lib.VIDEO].astype(np.float32), np.asarray(present, bool)]
    return inputs


def measure_formats(
    bundle: bundle_lib.Bundle, evaluation: batch_lib.Split | None, steps: int, batch_size: int = 256
) -> dict[str, dict[str, Any]]:
    """Each ONNX format's file size and accuracy on the test split's examples cut to `steps`, and the JAX model's.

    The same windows for every format, so the accuracies compare precisions, not lengths; the JAX row is the
    bundle's model as harjax.serving runs it. Without an evaluation split (its data unreadable) sizes only, and so
    for a format folder exported with another window length.
    """
    import onnxruntime

    found, records = [], {}
    for name in ONNX_FORMATS:
        path = os.path.join(bundle.directory, name, ONNX_FILE)
        if not os.path.exists(path):
            continue
        records[name] = {"file": f"{name}/{ONNX_FILE}", "bytes": os.path.getsize(path)}
        with open(os.path.join(bundle.directory, name, "signature.json")) as f:
            exported_steps = json.load(f)["steps"]
        if evaluation is None:
            records[name]["not_measured"] = "the run's test split is unreadable"
        elif exported_steps != steps:
            records[name]["not_measured"] = f"exported for windows of {exported_steps} steps, not {steps}"
        else:
            found.append(name)
    if evaluation is None:
        return records
    runners = {"jax": jax.jit(_forward_function(bundle))}
    variables = jax.device_put(bundle.variables)
    sessions = {name: onnxruntime.InferenceSession(os.path.join(bundle.directory, name, ONNX_FILE)) for name in found}
    predicted = {name: [] for name in ["jax", *found]}
    labels = []
    for start in range(0, len(evaluation), batch_size):
        batch = batch_lib.examples(evaluation, np.arange(start, min(len(evaluation), start + batch_size)))
        inputs = window_inputs(bundle, batch, steps)
        labels.append(batch[batch_lib.LABEL])
        predicted["jax"].append(np.asarray(runners["jax"](variables, *inputs)).argmax(-1))
        for name, session in sessions.items():
            feed = dict(zip([node.name for node in session.get_inputs()], inputs, strict=True))
            predicted[name].append(session.run(None, feed)[0].argmax(-1))
    labels = np.concatenate(labels)
    predicted = {name: np.concatenate(values) for name, values in predicted.items()}
    size = os.path.getsize(os.path.join(bundle.directory, bundle_lib.PARAMS_FILE))
    records = {"jax": {"file": bundle_lib.PARAMS_FILE, "bytes": size}} | records
    for name, classes in predicted.items():
        records[name] |= {
            "eval_accuracy": float(np.mean(classes == labels)),
            "agreement_with_jax": float(np.mean(classes == predicted["jax"])),  # the same class on a window
            "window_steps": steps,
            "eval_origin": evaluation.origin,
        }
    return records


def record_formats(bundle: bundle_lib.Bundle, records: dict[str, dict[str, Any]]) -> bundle_lib.Bundle:
    """bundle.json and MODEL_CARD.md rewritten with the formats' sizes and accuracies (parameters untouched)."""
    meta = bundle.meta | {"formats": records}
    for name, text in ((bundle_lib.BUNDLE_FILE, json.dumps(meta, indent=1)), (bundle_lib.CARD_FILE, model_card(meta))):
        partial = os.path.join(bundle.directory, f".{name}.partial")
        with open(partial, "w") as f:
            f.write(text)
        os.replace(partial, os.path.join(bundle.directory, name))
    return bundle_lib.Bundle.load(bundle.directory)
