"""Video-language embeddings of a list of clips: the one extraction core every dataset's extractor calls.

A dataset's extractor only lists its clips (ClipJob: a name, a file, an optional span in seconds, the scene
context) and calls `extract`; the core decodes the sampled frames and prepares the model's inputs in worker
processes while the model runs on the batch before, and writes <directory>/<clip name>.npz per clip (float16),
atomically, so a rerun skips finished clips and several GPUs or machines can share the work by shard. The model
may be any family of data_builders/video_families.py (Video-LLaVA, Qwen2-VL / Qwen2.5-VL, LLaVA-OneVision), picked
from its config. Each file holds:
    video_mean_last    [d]     mean hidden state over the video tokens, last layer (after the final norm)
    video_mean_middle  [d]     the same at the middle layer (often the better feature)
    last_token         [d]     hidden state of the last prompt token, last layer: reads the clip after the
                               question, so it depends on the whole prompt
    frame_means        [8, d]  per-frame means over each frame's tokens, last layer
    frame_indices      [8]     the decoded frames the model saw (positions in the file)
    source             JSON    what the embedding was made from: the clip's path, size, modification time and
                               sha256, its span, the context and whole prompt, the model, family and prompt set
<directory>/metadata.json records the model, its family and revision, its hidden size d, the prompt texts, layers,
frame sampling and how the frames were given to the model; a rerun with other settings into the same folder is
refused. Clips that cannot be decoded are listed in <directory>/failures_shard<I>.jsonl and returned.

A rerun re-extracts exactly the clips whose inputs changed since their embedding was stored (another file or other
bytes under the clip's path, another span or context) and reports how many; embeddings stored before files
recorded their source are kept and counted as unverified. Builders read the same record (`stored_state`), so an
embedding of an earlier version of a row is never built as the row's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import select
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tqdm

from data_builders import soft_prompt, video_families
from harjax import errors

DEFAULT_MODEL = "LanguageBind/Video-LLaVA-7B-hf"
NUM_FRAMES = video_families.NUM_FRAMES
EMBEDDING_KINDS = ("video_mean_last", "video_mean_middle", "last_token", "frame_means")
METADATA = "metadata.json"
FRAME_SAMPLING = "np.arange(0, n, n / 8).astype(int)"  # over the n frames of the clip's span
SOURCE = "source"  # the stored array (JSON text) of what an embedding was made from


def words(contexts: Iterable[str]) -> list[str]:
    """Every word a prompt of any family holds with these contexts (what an offline test tokenizer must know)."""
    return sorted(set(video_families.template_words()) | {word for context in contexts for word in context.split()})


@dataclasses.dataclass(frozen=True)
class ClipJob:
    """One clip to embed: where its file is, which part of it, and the scene context it is read with."""

    name: str  # the stored file's stem: unique within an extraction folder
    path: str
    context: str  # placed before the video by the model family's prompt ('' for none)
    start_s: float | None = None  # the clip's span in the file's own time; None: from its start / to its end
    end_s: float | None = None

    def inputs(self) -> dict[str, Any]:
        """What of the job, besides the file's bytes, its embedding depends on (compared on every rerun)."""
        return {"start_s": self.start_s, "end_s": self.end_s, "context": self.context}


def frame_indices(num_frames: int, wanted: int = NUM_FRAMES) -> np.ndarray:
    """Evenly spaced indices; a clip shorter than `wanted` repeats frames."""
    return np.arange(0, num_frames, num_frames / wanted).astype(int)[:wanted]


@dataclasses.dataclass(frozen=True)
class _Index:
    """Every frame's presentation timestamp (in stream time_base) and which of them start a GOP, from the packets."""

    pts: np.ndarray  # [n] sorted: position -> pts
    keyframes: np.ndarray  # [k] sorted pts of the keyframes


def _index(container: Any) -> _Index | None:
    """An open clip's frame index from its packets alone (demuxing, no decoding); None where a packet lacks a pts.

    The container is read to its end: seek before decoding from it.
    """
    packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    if not packets or any(pts is None for pts, _ in packets):
        return None
    pts = np.sort(np.array([pts for pts, _ in packets], np.int64))
    keyframes = np.sort(np.array([pts for pts, key in packets if key], np.int64))
    if len(np.unique(pts)) != len(pts) or not len(keyframes) or keyframes[0] != pts[0]:
        return None  # not an index seeking can trust: decode in order
    return _Index(pts, keyframes)


def positions_in_span(path: str, start_s: float | None, end_s: float | None) -> np.ndarray:
    """Positions of the frames whose time lies in [start_s, end_s) (the whole file for None, None)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if start_s is None and end_s is None and stream.frames:
            return np.arange(stream.frames)
        index = _index(container)
        if index is not None and stream.time_base is not None:
            times = index.pts * float(stream.time_base)
        else:
            container.seek(0)
            times = np.array([frame.time for frame in container.decode(video=0)], np.float64)
    inside = np.ones(len(times), bool)
    if start_s is not None:
        inside &= times >= start_s
    if end_s is not None:
        inside &= times < end_s
    return np.flatnonzero(inside).astype(np.int64)


def _decode_in_order(container: Any, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted positions' frames (sorted positions), decoding every frame from the start up to the last."""
    kept, decoded = {}, 0
    for position, frame in enumerate(container.decode(video=0)):
        decoded += 1
        if position in wanted:
            kept[position] = frame.to_ndarray(format="rgb24")
        if position >= wanted[-1]:
            break
    return kept, decoded


def _decode_by_seeking(container: Any, index: _Index, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted positions' frames (sorted positions), each decoded from the keyframe before it.

    A frame in the GOP already being decoded, after the last one kept, is reached by decoding on instead. A frame
    whose pts the decoder never gives is left out (the caller decodes in order then).
    """
    stream = container.streams.video[0]
    kept, decoded, current, frames = {}, 0, None, iter(())
    for position in wanted:
        target = int(index.pts[position])
        keyframe = int(index.keyframes[np.searchsorted(index.keyframes, target, side="right") - 1])
        if current is None or not keyframe <= current < target:
            container.seek(keyframe, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            decoded += 1
            current = frame.pts
            if current is None or current >= target:
                break
        if current == target:
            kept[position] = frame.to_ndarray(format="rgb24")
    return kept, decoded


def decode_frames(path: str, indices: np.ndarray, seek: bool = True) -> tuple[dict[int, np.ndarray], int]:
    """({position: frame [H, W, 3] uint8} of the wanted positions that exist, frames decoded to get them).

    With `seek`, each wanted frame is reached from the keyframe before it instead of decoding every frame from the
    start: the same frames as in order, since a GOP decodes from its keyframe alone. Clips whose packets give no
    frame index, or whose decoder gives other timestamps than the packets, are decoded in order.
    """
    import av

    wanted = sorted({int(i) for i in indices})
    decoded = 0
    with av.open(path) as container:
        index = _index(container) if seek else None
        if seek:
            container.seek(0)  # the index read the packets to the end
        if index is not None and wanted[-1] < len(index.pts):
            kept, decoded = _decode_by_seeking(container, index, wanted)
            if len(kept) == len(wanted):
                return kept, decoded
            container.seek(0)
        kept, in_order = _decode_in_order(container, wanted)
    return kept, decoded + in_order


def read_frames(
    path: str, indices: np.ndarray | None = None, start_s: float | None = None, end_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(frames [8, H, W, 3] uint8, their positions in the file) with PyAV; raises on an undecodable or empty clip.

    Frames at `indices`, by default 8 evenly spaced over the span [start_s, end_s) of the file. Only those are
    decoded as far as the container allows (decode_frames), converted and kept (a 1544-frame 1080p clip would take
    9 GB in full).
    """
    if indices is None:
        positions = positions_in_span(path, start_s, end_s)
        if not len(positions):
            span = "" if start_s is None and end_s is None else f" in [{start_s}, {end_s}) s"
            raise ValueError(f"{path}: no video frames{span}")
        indices = positions[frame_indices(len(positions))]
    kept, _ = decode_frames(path, indices)
    if not kept:
        raise ValueError(f"{path}: no decodable video frames")
    # Where the container over-reported its length, the last sample decoded stands in for the missing ones.
    indices = np.array([max(i for i in kept if i <= index) for index in indices])
    return np.stack([kept[i] for i in indices]), indices


def sampling_interval_s(path: str, indices: np.ndarray) -> float | None:
    """Mean seconds between the sampled frames at `indices` (at least one frame period); None without a frame rate."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
    if not rate:
        return None
    frames_apart = (int(indices[-1]) - int(indices[0])) / max(len(indices) - 1, 1)
    return max(frames_apart, 1.0) / rate


def clip_duration(path: str) -> float:
    """Seconds from the first frame's start to the last frame's end, from the container's own metadata."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        rate = float(stream.average_rate or 0)
        frames = stream.frames or sum(1 for _ in container.decode(video=0))
    if not rate or not frames:
        raise ValueError(f"{path}: neither a duration nor a frame rate in the container")
    return frames / rate


def write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that appears whole or not at all: a crash must not leave a truncated file under the final name."""
    directory = os.path.dirname(path)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz.tmp", delete=False) as f:
        try:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            os.replace(f.name, path)
        except BaseException:
            os.remove(f.name)
            raise


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str) -> dict[str, Any]:
    """Which bytes a clip's path held: its path, size, modification time and sha256 (stored with its embedding)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def same_file(path: str, recorded: dict[str, Any]) -> bool:
    """Whether `path` holds the bytes `recorded` (file_identity) describes.

    The recorded file untouched (same path, size and modification time) is trusted without reading it, so a rerun
    costs a stat per clip; a copy or a move is compared by content (it keeps its embedding), an edit in place too.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return False
    if stat.st_size != recorded["size"]:
        return False
    if os.path.abspath(path) == recorded["path"] and stat.st_mtime_ns == recorded["mtime_ns"]:
        return True
    return _sha256(path) == recorded["sha256"]


def read_source(path: str) -> dict[str, Any] | None:
    """The source record of a stored embedding (None for one stored before embeddings recorded their source)."""
    with np.load(path) as stored:
        return json.loads(str(stored[SOURCE])) if SOURCE in stored.files else None


def _what_changed(job: ClipJob, source: dict[str, Any]) -> str | None:
    """How `job` differs from what a stored embedding was made from (`source`), or None when it does not."""
    recorded = {key: source[key] for key in job.inputs()}
    changed = [f"{key} {recorded[key]!r} -> {value!r}" for key, value in job.inputs().items() if recorded[key] != value]
    if not same_file(job.path, source["clip"]):
        where = "" if os.path.abspath(job.path) == source["clip"]["path"] else f" (was {source['clip']['path']})"
        changed.insert(0, f"clip {job.path} is not the file it was made from{where}")
    return "; ".join(changed) or None


def stored_state(directory: str, job: ClipJob) -> tuple[str, str]:
    """(state, detail) of `job`'s embedding in `directory`: 'current', 'missing', 'changed' or 'unverified'.

    'changed': the stored embedding was made from other inputs (detail says which); 'unverified': it was stored
    before embeddings recorded their source, so nothing can be compared.
    """
    path = os.path.join(directory, job.name + ".npz")
    if not os.path.exists(path):
        return "missing", f"no {path}"
    source = read_source(path)
    if source is None:
        return "unverified", f"{path} predates source records"
    changed = _what_changed(job, source)
    return ("changed", changed) if changed else ("current", "")


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    """One clip's sampled frames, or why it could not be decoded."""

    job: ClipJob
    frames: np.ndarray | None = None  # [8, H, W, 3] uint8; None once prepared into model inputs, or on error
    indices: np.ndarray | None = None  # [8] their positions in the file
    interval_s: float | None = None  # seconds between sampled frames (None: the container has no frame rate)
    error: str | None = None  # set exactly when the clip could not be decoded
    file: dict[str, Any] | None = None  # file_identity of the clip, read before its frames


def decode(job: ClipJob) -> DecodedClip:
    """The clip's 8 sampled frames (read_frames), or the error that stopped them."""
    try:
        file = file_identity(job.path)
        frames, indices = read_frames(job.path, start_s=job.start_s, end_s=job.end_s)
        interval_s = sampling_interval_s(job.path, indices)
    except Exception as error:  # noqa: BLE001  PyAV raises many types; every one is reported
        return DecodedClip(job, error=f"{type(error).__name__}: {error}")
    return DecodedClip(job, frames, indices, interval_s, file=file)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Decoded clips -> the model's input tensors, by the family's conventions; runs in the decode workers."""

    family: video_families.Family
    processor: Any
    soft_tokens: int = 0  # a learned prompt's tokens, written after each context (Extractor.attach_prompt)

    def prompt(self, context: str) -> str:
        """The whole prompt of a clip read with `context`: the family's layout, and the learned prompt if any."""
        return self.family.prompt(soft_prompt.context_with(context, self.soft_tokens))

    def __call__(self, clips: Sequence[DecodedClip]) -> dict[str, Any]:
        texts = [self.prompt(clip.job.context) for clip in clips]
        videos = [clip.frames for clip in clips]
        return dict(self.family.inputs(self.processor, videos, texts, [clip.interval_s for clip in clips]))


class Extractor:
    """Turns batches of clips into the stored embedding kinds, for any family of data_builders/video_families.py.

    Loads the HF model once (at `revision`, a hub commit, when given; safetensors only, no remote code), its family
    read from its config before the weights; or takes one already built (`model_and_processor`, as the GPU
    benchmark's random Video-LLaVA-7B). On CUDA it runs in bfloat16, on the CPU in float32: embeddings to be
    compared must come from the same kind of device.
    """

    def __init__(
        self,
        model_id: str,
        device: str,
        model_and_processor: tuple[Any, Any] | None = None,
        revision: str | None = None,
    ):
        import torch

        self._torch = torch
        self.device = device
        loaded = model_and_processor is None
        if loaded:
            model_and_processor = _load(model_id, device, revision)
        model, processor = model_and_processor
        self.family = video_families.of_config(model.config, model_id)
        self.model = model.to(device).eval()
        processor.tokenizer.padding_side = "left"  # the last position is every prompt's last token
        self.preprocess = Preprocess(self.family, processor)
        self.num_layers = self.model.config.text_config.num_hidden_layers
        self.middle_layer = self.num_layers // 2  # index into hidden_states (0 = embeddings)
        self.video_token_id = self.model.config.video_token_id
        self.model_id = model_id
        self.revision = _revision(model_id) if loaded else "built in process, not loaded"
        self.soft_prompt: soft_prompt.SoftPrompt | None = None
        self._learned_prompt: dict[str, Any] = {}

    def attach_prompt(self, vectors: np.ndarray, metadata: dict[str, Any]) -> soft_prompt.SoftPrompt:
        """Reads clips with a learned soft prompt; one made for another model, family or width is refused."""
        expected = {"model": self.model_id, "family": self.family.name, "hidden_size": self.hidden_size}
        for key, value in expected.items():
            if metadata.get(key) != value:
                raise errors.UserError(
                    f"the learned prompt was made for {key} {metadata.get(key)!r}, but this extraction's is {value!r}"
                )
        if self.soft_prompt is not None:
            self.soft_prompt.detach()
        self.soft_prompt = soft_prompt.SoftPrompt(self.model, self.preprocess.processor, vectors)
        self.preprocess = dataclasses.replace(self.preprocess, soft_tokens=self.soft_prompt.count)
        self._learned_prompt = soft_prompt.record(vectors, metadata)
        return self.soft_prompt

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    def metadata(self, model_id: str, prompt_set: str, contexts: dict[str, str]) -> dict[str, Any]:
        """What the stored embeddings depend on; `contexts`: every context used, by what selects it."""
        return {
            "model": model_id,
            "family": self.family.name,
            "revision": self.revision,
            "prompt_set": prompt_set,
            "prompts": {key: self.preprocess.prompt(context) for key, context in contexts.items()},
            "layers": {"last": self.num_layers, "middle": self.middle_layer},
            "hidden_size": self.hidden_size,
            "num_frames": NUM_FRAMES,
            "frame_sampling": FRAME_SAMPLING,
            "frame_input": self.family.frame_input,
            "kinds": list(EMBEDDING_KINDS),
            "dtype": "float16",
        } | ({"learned_prompt": self._learned_prompt} if self._learned_prompt else {})

    def source(self, clip: DecodedClip, prompt_set: str) -> dict[str, Any]:
        """What a decoded clip's embedding is made from, stored with it (stored_state compares a rerun with it)."""
        return {
            "clip": clip.file,
            **clip.job.inputs(),
            "prompt": self.preprocess.prompt(clip.job.context),
            "model": self.model_id,
            "revision": self.revision,
            "family": self.family.name,
            "prompt_set": prompt_set,
            "frame_indices": clip.indices.tolist(),
            "frame_sampling": FRAME_SAMPLING,
            "learned_prompt_sha256": self._learned_prompt.get("sha256"),
        }

    def embeddings(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The embedding kinds of a prepared batch as float32 torch tensors, one dict per clip.

        Differentiable with respect to a soft prompt (prompt tuning) when called outside inference mode.
        """
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        captured = {}
        layer = self.model.model.language_model.layers[self.middle_layer - 1]  # its output is hidden_states[mid]
        hook = layer.register_forward_hook(
            lambda module, args, output: captured.__setitem__(
                "middle", output[0] if isinstance(output, tuple) else output
            )
        )
        try:
            last = self.model.model(**inputs, use_cache=False).last_hidden_state  # [B, L, d], final norm
        finally:
            hook.remove()
        video_mask = inputs["input_ids"] == self.video_token_id  # [B, L]: one contiguous run per clip
        results = []
        for clip in range(last.shape[0]):
            frames_last = self.family.frame_tokens(last[clip, video_mask[clip]], inputs, clip).float()  # [8, t, d]
            frames_middle = self.family.frame_tokens(captured["middle"][clip, video_mask[clip]], inputs, clip)
            results.append(
                {
                    "video_mean_last": frames_last.mean(dim=(0, 1)),
                    "video_mean_middle": frames_middle.float().mean(dim=(0, 1)),
                    "last_token": last[clip, -1].float(),
                    "frame_means": frames_last.mean(dim=1),  # [8, d]
                }
            )
        return results

    def forward(self, inputs: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        """One dict of embedding kinds per clip of a prepared batch (Preprocess), as stored (float16)."""
        with self._torch.inference_mode():
            results = self.embeddings(inputs)
        return [{name: value.cpu().numpy().astype(np.float16) for name, value in arrays.items()} for arrays in results]

    def embed(self, clips: Sequence[DecodedClip]) -> list[dict[str, np.ndarray]]:
        """One dict of embedding kinds per decoded clip."""
        return self.forward(self.preprocess(clips))

    def embed_clip(self, job: ClipJob) -> dict[str, np.ndarray]:
        """One clip's stored arrays, exactly as `extract` writes them (prediction from a raw clip uses this)."""
        clip = decode(job)
        if clip.error:
            raise ValueError(f"{job.path}: {clip.error}")
        (arrays,) = self.embed([clip])
        return {**arrays, "frame_indices": clip.indices.astype(np.int32)}


def _load(model_id: str, device: str, revision: str | None) -> tuple[Any, Any]:
    """(model, processor) from a hub id or folder; an unsupported family is refused before the weights are read.

    What the user can fix (a folder that is not there or holds no safetensors weights, a config that does not parse,
    a hub that cannot be reached) is a UserError naming the model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    hub_id = model_id.count("/") == 1 and not model_id.startswith((".", "/", "~"))
    if not os.path.isdir(model_id) and not hub_id:
        raise errors.UserError(f"--model={model_id}: no such folder, and not a hub id (organisation/name)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise errors.UserError(f"--device={device}: no CUDA device is available here; use --device=cpu")
    supported = ", ".join(sorted(video_families.BY_MODEL_TYPE))
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=False, revision=revision)
        video_families.of_config(config, model_id)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(
            model_id, dtype=dtype, use_safetensors=True, trust_remote_code=False, revision=revision
        )
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=False, revision=revision)
    except errors.UserError:
        raise
    except (OSError, ValueError) as error:  # missing files, unreadable config, unknown model_type, no network
        first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise errors.UserError(
            f"--model={model_id}: cannot be loaded ({first_line}); harjax loads a supported family ({supported}) "
            "from config.json and safetensors weights only"
        ) from None
    return model, processor


def _revision(model_id: str) -> str:
    """The hub commit the weights came from (the snapshot folder's name), or 'local' for a directory."""
    if os.path.isdir(model_id):
        return "local"
    from transformers.utils.hub import cached_file

    parts = os.path.normpath(cached_file(model_id, "config.json")).split(os.sep)
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"


def default_decode_workers() -> int:
    """Decode processes beside the model: every core but the one driving it (at least one, at most 8).

    On a 2-core machine with the tiny model two workers are faster (benchmarks/RESULTS.md), but they share the
    model's core: with a real model that core drives it.
    """
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _DecodedClips:
    """The clips of a list decoded one by one, in a DataLoader worker."""

    def __init__(self, jobs: Sequence[ClipJob]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> DecodedClip:
        return decode(self.jobs[index])


@dataclasses.dataclass(frozen=True)
class _Collate:
    """A batch's decoded clips -> (the clips without their frames, their model inputs or None): in the worker.

    Only the inputs cross to the main process, as torch tensors in shared memory (8 frames of 1080p are 50 MB, the
    model's inputs a tenth of that).
    """

    preprocess: Preprocess | None

    def __call__(self, clips: list[DecodedClip]) -> tuple[list[DecodedClip], dict[str, Any] | None]:
        if self.preprocess is None:
            return clips, None
        decoded = [clip for clip in clips if clip.error is None]
        inputs = self.preprocess(decoded) if decoded else None
        return [dataclasses.replace(clip, frames=None) for clip in clips], inputs


def _decode_context(preprocess: Preprocess | None) -> Any:
    """How decode workers start: forks of this process, unless it has loaded JAX.

    A fork is PyTorch's default on Linux and works from any script, guarded by `if __name__ == "__main__"` or not.
    JAX's threads make a fork unsafe (a lock held mid-fork stays held in the child), so a process that loaded it
    (the demos, tests) forks workers from a fresh server instead (which needs the main-module guard harjax's entry
    points have). The server imports torch, PyAV and the processor's modules once, not each worker (3 s apiece).
    """
    import multiprocessing

    if "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    processor = preprocess.processor if preprocess else None
    parts = [processor] + [
        getattr(processor, name, None) for name in ("tokenizer", "image_processor", "video_processor")
    ]
    context.set_forkserver_preload(["torch", "av", __name__] + [type(part).__module__ for part in parts if part])
    return context


def decoded_batches(
    jobs: Sequence[ClipJob], batch_size: int, workers: int, preprocess: Preprocess | None = None
) -> Iterable[tuple[list[DecodedClip], dict[str, Any] | None]]:
    """Batches of `jobs` in their order, decoded (and prepared by `preprocess`) in `workers` processes (0: here).

    Yields (clips, inputs): with `preprocess`, the model inputs of the batch's decodable clips (None if none is) and
    the clips without their frames; without it, the clips with their frames. Each worker keeps two batches ready,
    so a model whose decoders keep up with it never waits for them (how workers start: _decode_context).
    """
    import torch.utils.data

    loader = torch.utils.data.DataLoader(
        _DecodedClips(jobs),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_Collate(preprocess),
        prefetch_factor=2 if workers else None,
        multiprocessing_context=_decode_context(preprocess) if workers else None,
        worker_init_fn=functools.partial(_end_with, os.getpid()) if workers else None,
    )
    with _terminate_as_exit():
        yield from loader


def _end_with(pid: int, worker_id: int) -> None:
    """Ends this decode worker when process `pid` (the one it decodes for) is gone, even after its SIGKILL.

    A worker started by a fork server is that server's child, so torch's own check of its parent never sees the
    extraction die; each worker holds about 700 MB. Linux's pidfd says when `pid` exits (where it has none, the
    worker lives on as before).
    """
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already (it was killed while this worker started)
        os._exit(1)
    except (AttributeError, OSError):
        return

    def wait() -> None:
        select.select([handle], [], [])
        os._exit(1)

    threading.Thread(target=wait, daemon=True, name=f"end-with-{pid}").start()


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (kill's default, SLURM's preemption) unwinds like Ctrl-C, so the decode workers are shut down.

    Exits with status 143, a shell's for SIGTERM. Only the main thread can hold a signal handler; elsewhere nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        print("interrupted (SIGTERM): stopping the decode workers", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_metadata(directory: str) -> dict[str, Any]:
    """The metadata.json of one prompt set's extraction; its absence says what to run.

    A folder written before the metadata named a family is Video-LLaVA's (video_families.LEGACY_METADATA).
    """
    path = os.path.join(directory, METADATA)
    if not os.path.exists(path):
        raise errors.UserError(
            f"{path} is missing: extract the '{os.path.basename(directory)}' embeddings first "
            "(python -m data_builders.<dataset>.extract_embeddings) or pass embeddings_dir"
        )
    with open(path) as f:
        return video_families.LEGACY_METADATA | json.load(f)


def embedding_dim(directory: str) -> int:
    """The hidden size d of one prompt set's extraction.

    From its metadata, or (for extractions made before the metadata recorded it) from the first stored clip.
    """
    metadata = read_metadata(directory)
    if "hidden_size" in metadata:
        return int(metadata["hidden_size"])
    stored = sorted(name for name in os.listdir(directory) if name.endswith(".npz"))
    if not stored:
        raise errors.UserError(f"{directory} holds no embeddings (*.npz) to take their size from")
    with np.load(os.path.join(directory, stored[0])) as first:
        return int(first[EMBEDDING_KINDS[0]].shape[-1])


def check_metadata(directory: str, metadata: dict[str, Any]) -> None:
    """Writes metadata.json, or checks that an earlier run (or a parallel shard) used the same settings.

    Every setting must match, and a context both runs use must give the same prompt; a context the earlier runs did
    not use (a manifest row's new context) is added to its 'prompts'. Shards take turns through a lock file.
    """
    path = os.path.join(directory, METADATA)
    with open(os.path.join(directory, ".metadata.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        if not os.path.exists(path):
            _write_json_atomic(path, metadata)
            return
        existing, metadata = read_metadata(directory), video_families.LEGACY_METADATA | metadata
        prompts = existing.get("prompts", {}) | metadata.get("prompts", {})
        different = sorted(
            key
            for key in existing.keys() | metadata.keys()
            if key != "prompts" and existing.get(key) != metadata.get(key)
        ) + [
            f"the prompt of context {key!r}"
            for key in existing.get("prompts", {})
            if prompts[key] != existing["prompts"][key]
        ]
        if different:
            raise errors.UserError(
                f"{path} was written with other settings ({', '.join(different)}); "
                "extract into another --output_dir or delete it"
            )
        if prompts != existing.get("prompts", {}):
            _write_json_atomic(path, existing | {"prompts": prompts})


def _write_json_atomic(path: str, value: Any) -> None:
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), suffix=".json.tmp", delete=False) as f:
        json.dump(value, f, indent=1)
    os.replace(f.name, path)


def undecodable(directory: str, jobs: Sequence[ClipJob] | None = None) -> set[str]:
    """Names of the clips some shard could not decode (what a builder counts as undecodable, not missing).

    With `jobs`, only the failures that still hold for them: a clip whose file or inputs changed since it failed is
    missing, not undecodable.
    """
    names = set()
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if entry.startswith("failures_shard") and entry.endswith(".jsonl"):
            path = os.path.join(directory, entry)
            failures = _recorded_failures(path) if jobs is None else _unchanged_failures(path, jobs)
            names |= {failure["clip"] for failure in failures}
    return names


def _recorded_failures(path: str) -> list[dict[str, Any]]:
    """The entries of a failures_shard<i>.jsonl (none when there is no such file)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _file_state(path: str) -> list[int] | None:
    """(size, mtime in ns) of a clip's file: a failed clip is decoded again only once this changes."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _failure(clip: DecodedClip) -> dict[str, Any]:
    """A failures_shard<i>.jsonl entry: the clip, its error, and the file state and inputs it failed with."""
    job = clip.job
    return {
        "clip": job.name,
        "path": job.path,
        "error": clip.error,
        "file": _file_state(job.path),
        "inputs": job.inputs(),
    }


def _unchanged_failures(failures_path: str, jobs: Sequence[ClipJob]) -> list[dict[str, Any]]:
    """The failures recorded in `failures_path` of clips among `jobs` whose file and inputs have not changed since.

    Decoding is deterministic, so such a clip would fail again; retrying it would cost a model load when it is the
    only clip left. An entry written before failures recorded their inputs is retried.
    """
    by_name = {job.name: job for job in jobs}
    return [
        failure
        for failure in _recorded_failures(failures_path)
        if failure["clip"] in by_name
        and failure.get("file") is not None
        and failure["file"] == _file_state(by_name[failure["clip"]].path)
        and failure.get("inputs") == by_name[failure["clip"]].inputs()
    ]


def _check_arguments(directory: str, batch_size: int, num_shards: int, shard_index: int, workers: int | None) -> None:
    """The flags and the output folder, checked before a model is loaded."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise errors.ConfigError(
            f"--shard_index={shard_index} must be in [0, --num_shards={num_shards}) with --num_shards >= 1"
        )
    if batch_size < 1:
        raise errors.ConfigError(f"--batch_size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise errors.ConfigError(f"--decode_workers must be 0 (decode here) or more, got {workers}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:  # a file where a folder should be
        raise errors.UserError(f"--output_dir: cannot make the folder {directory}: {error.strerror}") from None


def extract(
    jobs: Sequence[ClipJob],
    directory: str,
    model_id: str,
    prompt_set: str,
    contexts: dict[str, str],
    batch_size: int = 8,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str = "cpu",
    extractor: Extractor | None = None,
    decode_workers: int | None = None,
    learned_prompt: str | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet, or whose inputs changed, into `directory`.

    Returns counts and the clips that failed. A clip whose stored embedding was made from other inputs (stored_state:
    another file or other bytes at its path, another span or context) is extracted again, its old embedding removed
    first; one stored before embeddings recorded their source is kept and counted as unverified. A clip that failed
    to decode before is tried again only if its file (size or modification time) or inputs changed since: touch it,
    or delete the shard's failures_shard<i>.jsonl, to force a retry.

    `jobs` in a stable order (shards are cut from it); `contexts`: every context the listing can use, by what
    selects it (their prompts are recorded in the metadata); `extractor`: one already loaded (model_id then only
    names it); `decode_workers`: processes decoding the next batches while the model runs
    (None: default_decode_workers(), 0: decode in this process between forwards); `learned_prompt`: a soft prompt
    file (data_builders/prompt_tuning.py) read after each context, recorded whole in the metadata.
    """
    _check_arguments(directory, batch_size, num_shards, shard_index, decode_workers)
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise errors.UserError(f"clip names must be unique in one extraction; repeated: {repeated[:5]}")
    shard = list(jobs)[shard_index::num_shards]
    states = {job.name: stored_state(directory, job) for job in shard}
    changed = [{"clip": name, "changed": detail} for name, (state, detail) in states.items() if state == "changed"]
    todo = [job for job in shard if states[job.name][0] in ("missing", "changed")]
    done = len(shard) - len(todo)
    failures_path = os.path.join(directory, f"failures_shard{shard_index}.jsonl")
    failures = _unchanged_failures(failures_path, todo)
    known = {failure["clip"] for failure in failures}
    todo = [job for job in todo if job.name not in known]
    logging.info(
        "shard %d/%d: %d clips, %d already done, %d changed since, %d undecodable and unchanged since",
        shard_index,
        num_shards,
        len(shard),
        done,
        len(changed),
        len(known),
    )
    summary = {
        "clips_in_shard": len(shard),
        "skipped_done": done,
        "unverified": sum(state == "unverified" for state, _ in states.values()),
        "changed": changed,
        "skipped_undecodable": len(known),
        "failed": failures,
    }
    if not todo:
        return summary | {"extracted": 0}  # the failures file already lists the known failures
    extractor = extractor or Extractor(model_id, device)
    decode_workers = default_decode_workers() if decode_workers is None else decode_workers
    if learned_prompt:
        extractor.attach_prompt(*soft_prompt.load(learned_prompt))
    check_metadata(directory, extractor.metadata(model_id, prompt_set, contexts))
    for entry in changed:  # gone before its replacement is made: never read as the changed row's embedding
        os.remove(os.path.join(directory, entry["clip"] + ".npz"))
    with tqdm.tqdm(total=len(todo), unit="clip", desc=f"extract {prompt_set}") as progress:
        for clips, inputs in decoded_batches(todo, batch_size, decode_workers, extractor.preprocess):
            decoded = [clip for clip in clips if clip.error is None]
            failures += [_failure(clip) for clip in clips if clip.error]
            if decoded:
                for clip, arrays in zip(decoded, extractor.forward(inputs), strict=True):
                    source = extractor.source(clip, prompt_set)
                    write_atomic(
                        os.path.join(directory, clip.job.name + ".npz"),
                        {
                            **arrays,
                            "frame_indices": clip.indices.astype(np.int32),
                            SOURCE: np.array(json.dumps(source)),
                        },
                    )
            progress.update(len(clips))
    if failures:  # the known and this run's failures are exactly the clips still missing
        with open(failures_path, "w") as f:
            f.writelines(json.dumps(failure) + "\n" for failure in failures)
    elif os.path.exists(failures_path):
        os.remove(failures_path)
    return summary | {"extracted": len(todo) - len(failures) + len(known)}


def base_prompt_set(metadata: dict[str, Any]) -> str:
    """The prompt set whose contexts an extraction folder's clips were read with (its metadata's).

    A learned prompt's folder ('learned_<protocol>') read them with the set the prompt was learned after.
    """
    learned = metadata.get("learned_prompt")
    return learned["base_prompt_set"] if learned else metadata["prompt_set"]


def resolve_prompt_set(prompt_set: str, learned_prompt: str | None) -> tuple[str, str]:
    """(the extraction's prompt set, the prompt set whose contexts its clips get) for --prompt_set/--learned_prompt.

    A learned prompt belongs to the protocol it was trained on: its extraction is 'learned_<protocol>', read with
    the contexts of the prompt set it was learned after.
    """
    if prompt_set != "learned":
        if learned_prompt:
            raise errors.ConfigError(
                f"--learned_prompt is read with --prompt_set=learned, not --prompt_set={prompt_set}"
            )
        return prompt_set, prompt_set
    if not learned_prompt:
        raise errors.ConfigError(
            "--prompt_set=learned needs --learned_prompt=P (made by python -m data_builders.prompt_tuning)"
        )
    _, metadata = soft_prompt.load(learned_prompt)
    return soft_prompt.prompt_set(metadata["protocol"]), metadata["base_prompt_set"]


def print_summary(summary: dict[str, Any]) -> None:
    """The extraction's counts, the clips extracted again because their inputs changed, and every failure."""
    print(
        f"extracted {summary['extracted']} ({len(summary['changed'])} of them again: their inputs changed), "
        f"already done {summary['skipped_done']}, failed {len(summary['failed'])} of {summary['clips_in_shard']} "
        f"clips in this shard ({summary['skipped_undecodable']} of them failed before and are unchanged: not retried)"
    )
    if summary["unverified"]:
        print(
            f"  {summary['unverified']} stored embeddings predate source records: kept, unverified "
            "(delete them to extract them again)"
        )
    for entry in summary["changed"]:
        print(f"  changed since extracted: {entry['clip']}: {entry['changed']}")
    for failure in summary["failed"]:
        print(f"  could not decode {failure['path']}: {failure['error']}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every dataset's extractor shares: where to write, which model, batches, shards, device."""
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local path")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--shard_index", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu")
    parser.add_argument(
        "--learned_prompt", default=None, help="with --prompt_set=learned: a soft prompt (data_builders.prompt_tuning)"
    )
    parser.add_argument(
        "--decode_workers",
        type=int,
        default=None,
        help="processes decoding the next batches while the model runs (default: every core but one, 1 to 8; "
        "0: decode between forwards)",
    )
