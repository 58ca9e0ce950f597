"""The Extractor: clips in, the stored embedding kinds out, for every video-language family harjax reads.

One class drives every family of harjax/video/families.py (Video-LLaVA, Qwen2-VL / Qwen2.5-VL, LLaVA-OneVision),
picked from the model's config before its weights are read. Extraction jobs (data_builders/extraction.py), prompt
tuning (data_builders/prompt_tuning.py) and prediction from a raw clip (harjax/serving/recordings.py) all embed
through it, so a clip is read the same way everywhere. The kinds, per clip:
    video_mean_last    [d]     mean hidden state over the video tokens, last layer (after the final norm)
    video_mean_middle  [d]     the same at the middle layer (often the better feature)
    last_token         [d]     hidden state of the last prompt token, last layer: reads the clip after the
                               question, so it depends on the whole prompt
    frame_means        [8, d]  per-frame means over each frame's tokens, last layer
torch and transformers are imported on first use (the `extract` extra): the training install has neither.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from harjax import errors
from harjax.video import families, soft_prompt
from harjax.video.decoding import ClipJob, DecodedClip, decode
from harjax.video.families import NUM_FRAMES

DEFAULT_MODEL = "LanguageBind/Video-LLaVA-7B-hf"
EMBEDDING_KINDS = ("video_mean_last", "video_mean_middle", "last_token", "frame_means")
FRAME_SAMPLING = "np.arange(0, n, n / 8).astype(int)"  # over the n frames of the clip's span


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Decoded clips -> the model's input tensors, by the family's conventions; runs in the decode workers."""

    family: families.Family
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
    """Turns batches of clips into the stored embedding kinds, for any family of data_builders/families.py.

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
        self.family = families.of_config(model.config, model_id)
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
    supported = ", ".join(sorted(families.BY_MODEL_TYPE))
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=False, revision=revision)
        families.of_config(config, model_id)
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
