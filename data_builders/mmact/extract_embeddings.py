"""Video-LLaVA embeddings of every MMAct clip, computed once on GPUs and stored for the dataset builder.

    python -m data_builders.mmact.extract_embeddings --manual_dir=M --output_dir=E --prompt_set=context \
        [--model=LanguageBind/Video-LLaVA-7B-hf --batch_size=8 --num_shards=N --shard_index=I --device=cuda]

Writes E/<prompt_set>/<trial key>_cam<C>.npz per clip (float16), atomically, so a rerun skips finished clips
and several GPUs or machines can share the work by shard. Each file holds:
    video_mean_last    [d]     mean hidden state over the video tokens, last layer (after the final norm)
    video_mean_middle  [d]     the same at the middle layer (often the better feature)
    last_token         [d]     hidden state of the last prompt token, last layer: reads the clip after the
                               question, so it depends on the whole prompt
    frame_means        [8, d]  per-frame means over each frame's tokens, last layer
E/<prompt_set>/metadata.json records the model, its revision, its hidden size d, the prompt texts, layers and frame
sampling; a rerun with other settings into the same folder is refused. Clips that cannot be decoded are listed in
E/<prompt_set>/failures_shard<I>.jsonl and reported at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tqdm

from data_builders.mmact import layout, prompts

DEFAULT_MODEL = "LanguageBind/Video-LLaVA-7B-hf"
NUM_FRAMES = 8  # Video-LLaVA was trained on exactly 8 frames
EMBEDDING_KINDS = ("video_mean_last", "video_mean_middle", "last_token", "frame_means")
METADATA = "metadata.json"


@dataclasses.dataclass(frozen=True)
class Clip:
    trial: layout.Trial
    camera: int
    path: str

    @property
    def name(self) -> str:
        return f"{self.trial.key}_cam{self.camera}"


def list_clips(manual_dir: str, video_root: str | None = None) -> list[Clip]:
    """Every clip of the release, in a stable order (the order shards are cut from)."""
    scan = layout.scan_videos(layout.find_video_root(manual_dir, video_root))
    clips = [Clip(trial, found.camera, found.path) for trial, files in scan.files.items() for found in files]
    return sorted(clips, key=lambda clip: (clip.trial, clip.camera, clip.path))


def frame_indices(num_frames: int, wanted: int = NUM_FRAMES) -> np.ndarray:
    """Evenly spaced indices; a clip shorter than `wanted` repeats frames."""
    return np.arange(0, num_frames, num_frames / wanted).astype(int)[:wanted]


def read_frames(path: str, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames [8, H, W, 3] uint8, their indices) with PyAV; raises on an undecodable or empty clip.

    Frames at `indices`, by default 8 evenly spaced. Only those are converted and kept (a 1544-frame 1080p clip
    would take 9 GB in full). When the container does not know its frame count, a first pass counts the frames.
    """
    import av

    if indices is None:
        with av.open(path) as container:
            total = container.streams.video[0].frames
            if not total:
                total = sum(1 for _ in container.decode(video=0))
        if not total:
            raise ValueError(f"{path}: no video frames")
        indices = frame_indices(total)
    kept: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position in indices:
                kept[position] = frame.to_ndarray(format="rgb24")
            if position >= indices[-1]:
                break
    if not kept:
        raise ValueError(f"{path}: no decodable video frames")
    # Where the container over-reported its length, the last sample decoded stands in for the missing ones.
    indices = np.array([max(i for i in kept if i <= index) for index in indices])
    return np.stack([kept[i] for i in indices]), indices


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(path)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz.tmp", delete=False) as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())  # a crash must not leave a truncated file under the final name
    os.replace(f.name, path)


class Extractor:
    """Turns batches of clips into the stored embedding kinds.

    Loads the HF model once, or takes one already built (`model_and_processor`, as the GPU benchmark's random
    Video-LLaVA-7B).
    """

    def __init__(self, model_id: str, device: str, model_and_processor: tuple[Any, Any] | None = None):
        import torch
        from transformers import VideoLlavaForConditionalGeneration, VideoLlavaProcessor

        self._torch = torch
        self.device = device
        loaded = model_and_processor is None
        if loaded:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            model = VideoLlavaForConditionalGeneration.from_pretrained(
                model_id, dtype=dtype, use_safetensors=True, trust_remote_code=False
            )
            model_and_processor = model, VideoLlavaProcessor.from_pretrained(model_id, trust_remote_code=False)
        model, self.processor = model_and_processor
        self.model = model.to(device).eval()
        self.processor.tokenizer.padding_side = "left"  # the last position is every prompt's last token
        self.num_layers = self.model.config.text_config.num_hidden_layers
        self.middle_layer = self.num_layers // 2  # index into hidden_states (0 = embeddings)
        self.video_token_id = self.model.config.video_token_index
        self.revision = _revision(model_id) if loaded else "built in process, not loaded"

    def metadata(self, model_id: str, prompt_set: str) -> dict[str, Any]:
        return {
            "model": model_id,
            "revision": self.revision,
            "prompt_set": prompt_set,
            "prompts": {str(scene): prompts.prompt(prompt_set, scene) for scene in (1, 2, 3, 4)},
            "layers": {"last": self.num_layers, "middle": self.middle_layer},
            "hidden_size": self.model.config.text_config.hidden_size,
            "num_frames": NUM_FRAMES,
            "frame_sampling": "np.arange(0, n, n / 8).astype(int)",
            "kinds": list(EMBEDDING_KINDS),
            "dtype": "float16",
        }

    def embed(self, videos: Sequence[np.ndarray], texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """One dict of embedding kinds per clip."""
        torch = self._torch
        inputs = self.processor(text=list(texts), videos=list(videos), return_tensors="pt", padding=True)
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
            with torch.inference_mode():
                last = self.model.model(**inputs, use_cache=False).last_hidden_state  # [B, L, d], final norm
        finally:
            hook.remove()
        video_mask = inputs["input_ids"] == self.video_token_id  # [B, L]; frame-major, equal count per clip
        batch, width = last.shape[0], last.shape[-1]

        def video_tokens(hidden):  # [B, L, d] -> [B, F, tokens per frame, d]
            return hidden[video_mask].view(batch, NUM_FRAMES, -1, width).float()

        frames_last = video_tokens(last).mean(dim=2)  # [B, F, d]
        results = {
            "video_mean_last": frames_last.mean(dim=1),
            "video_mean_middle": video_tokens(captured["middle"]).mean(dim=(1, 2)),
            "last_token": last[:, -1].float(),
            "frame_means": frames_last,
        }
        arrays = {name: value.cpu().numpy().astype(np.float16) for name, value in results.items()}
        return [{name: array[i] for name, array in arrays.items()} for i in range(batch)]


def _revision(model_id: str) -> str:
    """The hub commit the weights came from (the snapshot folder's name), or 'local' for a directory."""
    if os.path.isdir(model_id):
        return "local"
    from transformers.utils.hub import cached_file

    parts = os.path.normpath(cached_file(model_id, "config.json")).split(os.sep)
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"


def _batches(items: Sequence[Clip], size: int) -> Iterable[Sequence[Clip]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_metadata(directory: str) -> dict[str, Any]:
    """The metadata.json of one prompt set's extraction; its absence says what to run."""
    path = os.path.join(directory, METADATA)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: extract the '{os.path.basename(directory)}' embeddings first "
            "(python -m data_builders.mmact.extract_embeddings) or pass embeddings_dir"
        )
    with open(path) as f:
        return json.load(f)


def embedding_dim(directory: str) -> int:
    """The hidden size d of one prompt set's extraction.

    From its metadata, or (for extractions made before the metadata recorded it) from the first stored clip.
    """
    metadata = read_metadata(directory)
    if "hidden_size" in metadata:
        return int(metadata["hidden_size"])
    stored = sorted(name for name in os.listdir(directory) if name.endswith(".npz"))
    if not stored:
        raise FileNotFoundError(f"{directory} holds no embeddings (*.npz) to take their size from")
    with np.load(os.path.join(directory, stored[0])) as first:
        return int(first[EMBEDDING_KINDS[0]].shape[-1])


def check_metadata(directory: str, metadata: dict[str, Any]) -> None:
    """Writes metadata.json, or checks that an earlier run (or a parallel shard) used the same settings.

    Shards race to create it: each writes a private file and links it into place, which fails for all but one.
    """
    path = os.path.join(directory, METADATA)
    if not os.path.exists(path):
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".json.tmp", delete=False) as f:
            json.dump(metadata, f, indent=1)
        try:
            with contextlib.suppress(FileExistsError):  # another shard won the race: compare with its file
                os.link(f.name, path)
        finally:
            os.remove(f.name)
    with open(path) as f:
        existing = json.load(f)
    if existing != metadata:
        different = sorted(key for key in existing.keys() | metadata.keys() if existing.get(key) != metadata.get(key))
        raise ValueError(
            f"{path} was written with other settings ({', '.join(different)}); "
            "extract into another --output_dir or delete it"
        )


def extract(
    manual_dir: str,
    output_dir: str,
    model_id: str,
    prompt_set: str,
    batch_size: int = 8,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str = "cpu",
    video_root: str | None = None,
    extractor: Extractor | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet; returns counts and the clips that failed.

    `extractor`: one already loaded (model_id then only names it in the metadata).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard_index={shard_index} must be in [0, --num_shards={num_shards})")
    prompts.prompt(prompt_set, 1)  # a bad prompt set fails before the model loads
    directory = os.path.join(output_dir, prompt_set)
    os.makedirs(directory, exist_ok=True)
    shard = list_clips(manual_dir, video_root)[shard_index::num_shards]
    todo = [clip for clip in shard if not os.path.exists(os.path.join(directory, clip.name + ".npz"))]
    logging.info("shard %d/%d: %d clips, %d already done", shard_index, num_shards, len(shard), len(shard) - len(todo))
    failures: list[dict[str, str]] = []
    summary = {"clips_in_shard": len(shard), "skipped_done": len(shard) - len(todo), "failed": failures}
    if not todo:
        return summary | {"extracted": 0}
    extractor = extractor or Extractor(model_id, device)
    check_metadata(directory, extractor.metadata(model_id, prompt_set))
    with tqdm.tqdm(total=len(todo), unit="clip", desc=f"extract {prompt_set}") as progress:
        for batch in _batches(todo, batch_size):
            decoded = []
            for clip in batch:
                try:
                    decoded.append((clip, *read_frames(clip.path)))
                except Exception as error:  # noqa: BLE001  PyAV raises many types; every one is reported
                    failures.append({"clip": clip.name, "path": clip.path, "error": f"{type(error).__name__}: {error}"})
            if decoded:
                embeddings = extractor.embed(
                    [frames for _, frames, _ in decoded],
                    [prompts.prompt(prompt_set, clip.trial.scene) for clip, _, _ in decoded],
                )
                for (clip, _, indices), arrays in zip(decoded, embeddings, strict=True):
                    _write_atomic(
                        os.path.join(directory, clip.name + ".npz"),
                        {**arrays, "frame_indices": indices.astype(np.int32)},
                    )
            progress.update(len(batch))
    failures_path = os.path.join(directory, f"failures_shard{shard_index}.jsonl")
    if failures:  # this run's failures are exactly the clips still missing
        with open(failures_path, "w") as f:
            f.writelines(json.dumps(failure) + "\n" for failure in failures)
    elif os.path.exists(failures_path):
        os.remove(failures_path)
    return summary | {"extracted": len(todo) - len(failures)}


def main() -> None:
    """Extracts the embeddings of one shard from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="the MMAct release (holds the video folder)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local path")
    parser.add_argument("--prompt_set", required=True, choices=sorted(prompts.PROMPT_SETS))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--shard_index", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu")
    parser.add_argument("--video_root", default=None, help="the clips' folder under manual_dir (auto-detected)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    summary = extract(
        args.manual_dir,
        args.output_dir,
        args.model,
        args.prompt_set,
        args.batch_size,
        args.num_shards,
        args.shard_index,
        args.device,
        args.video_root,
    )
    print(
        f"extracted {summary['extracted']}, already done {summary['skipped_done']}, "
        f"failed {len(summary['failed'])} of {summary['clips_in_shard']} clips in this shard"
    )
    for failure in summary["failed"]:
        print(f"  could not decode {failure['path']}: {failure['error']}")


if __name__ == "__main__":
    main()
