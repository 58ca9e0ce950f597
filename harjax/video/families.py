"""The video-language model families extraction reads, each behind one adapter: prompt layout, inputs, frame tokens.

A family is picked from the model's own config.json (`model_type`) before any weight or clip is read:

    video_llava               Video-LLaVA (the paper's model)       8 frames at 224 px, 257 tokens each
    qwen2_vl, qwen2_5_vl      Qwen2-VL, Qwen2.5-VL                  8 frames, each given twice, <= 448x448 px
    llava_onevision           LLaVA-OneVision                       8 frames at 384 px, 196 tokens each + 1

Every family sees the same 8 sampled frames of a clip and stores the same embedding kinds
(harjax/video/extractor.py), so families compare on equal input. Where a family's own convention differs, harjax
fixes it and records it in the metadata (`frame_input`):
- Qwen2-VL merges two consecutive frames into one temporal patch; 8 distinct frames would give 4 per-frame rows.
  Each sampled frame is given twice (the way Qwen encodes a still image), so its 8 temporal groups are the 8
  frames, frame_means has 8 rows like every family's, and the token count (8 x 256 at 448x448) matches
  Video-LLaVA's 2056. Qwen's native sampling (2 frames per second, resolution up to 768 x 28 x 28 pixels per
  frame) is not used: a 6 s clip would cost 3x the tokens for frames 0.5 s apart.
- Qwen2.5-VL places frames in time by their timestamps: it is told the real interval between sampled frames
  (second_per_grid_ts), not the 24 fps the processor assumes without metadata.
- LLaVA-OneVision ends a video with one `image_newline` token; it belongs to no frame and is left out of the
  means.
A context goes before the video in every family: the language models are causal, and only text before the video
tokens can change them. Each prompt is written out by hand rather than by a chat template (LLaVA-OneVision's
template would put the context after the video).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from harjax import errors

NUM_FRAMES = 8  # frames sampled per clip, for every family (Video-LLaVA was trained on exactly 8)
QUESTION = "Which activity is the person performing? Answer in one word:"


class Family:
    """One family's adapter: what the extractor asks of a model beyond HF's common interface.

    The defaults hold for processors that take frames as given and lay each frame's tokens out in one block, in
    frame order (Video-LLaVA's and LLaVA-OneVision's); a family overrides where its model differs.
    """

    name: str  # recorded in the metadata
    model_types: tuple[str, ...]  # config.json's model_type values it reads
    template: str  # the prompt, with {context} before the video placeholder and {question} after it
    frame_input: str  # how the 8 sampled frames are given to the model (recorded in the metadata)

    def prompt(self, context: str) -> str:
        """The full prompt of a clip whose scene is described by `context` ('' for none)."""
        return self.template.format(context=context, question=QUESTION)

    def inputs(
        self, processor: Any, videos: Sequence[Any], texts: Sequence[str], intervals_s: Sequence[float | None]
    ) -> Any:
        """The model's inputs for clips (frames [8, H, W, 3] uint8), their prompts and seconds between frames."""
        return processor(text=list(texts), videos=list(videos), return_tensors="pt", padding=True)

    def frame_tokens(self, video_tokens: Any, inputs: Any, clip: int) -> Any:
        """One clip's video tokens [n, d] -> [8, tokens per frame, d] (frame-major, as the processor lays them out)."""
        return video_tokens.view(NUM_FRAMES, -1, video_tokens.shape[-1])


class VideoLlava(Family):
    name = "video_llava"
    model_types = ("video_llava",)
    template = "USER: {context}<video>\n{question} ASSISTANT:"
    frame_input = "8 frames, 224 px (the processor's resize and crop)"


class QwenVL(Family):
    name = "qwen_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    template = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "{context}<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    max_pixels_per_frame = 448 * 448  # 256 tokens per frame after Qwen's 2 x 2 merge of 14 px patches
    frame_input = f"8 frames, each given twice (temporal patch of 2), at most {max_pixels_per_frame} pixels each"

    def inputs(
        self, processor: Any, videos: Sequence[Any], texts: Sequence[str], intervals_s: Sequence[float | None]
    ) -> Any:
        import numpy as np
        from transformers.video_utils import VideoMetadata

        video_processor = processor.video_processor
        repeat = video_processor.temporal_patch_size
        longest = min(video_processor.size["longest_edge"], self.max_pixels_per_frame)
        if None in intervals_s:
            raise ValueError("a clip's container gives no frame rate: Qwen-VL needs the time between sampled frames")
        # The interval between temporal groups is the interval between sampled frames (Qwen2.5-VL's time axis).
        metadata = [
            VideoMetadata(total_num_frames=repeat * len(video), fps=repeat / interval, frames_indices=None)
            for video, interval in zip(videos, intervals_s, strict=True)
        ]
        return processor(
            text=list(texts),
            videos=[np.repeat(video, repeat, axis=0) for video in videos],  # [8, H, W, 3] -> [16, H, W, 3]
            return_tensors="pt",
            padding=True,
            videos_kwargs={
                "size": {"shortest_edge": min(video_processor.size["shortest_edge"], longest), "longest_edge": longest},
                "cap_pixels_per_frame": False,  # the cap is ours, above
                "video_metadata": metadata,
            },
        )

    def frame_tokens(self, video_tokens: Any, inputs: Any, clip: int) -> Any:
        groups = int(inputs["video_grid_thw"][clip][0])  # the grid is (temporal groups, height, width) in patches
        return video_tokens.view(groups, -1, video_tokens.shape[-1])  # [n, d] -> [8, tokens per frame, d], t-major


class LlavaOneVision(Family):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    template = "<|im_start|>user\n{context}<video>\n{question}<|im_end|>\n<|im_start|>assistant\n"
    frame_input = "8 frames, 384 px (the processor's resize), 196 pooled tokens each; the trailing newline left out"

    def frame_tokens(self, video_tokens: Any, inputs: Any, clip: int) -> Any:
        return super().frame_tokens(video_tokens[:-1], inputs, clip)  # [:-1]: the image_newline after the frames


FAMILIES = (VideoLlava(), QwenVL(), LlavaOneVision())
BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}
# What an extraction folder written before families were recorded was made with.
LEGACY_METADATA = {"family": VideoLlava.name, "frame_input": VideoLlava.frame_input}


def of_config(config: Any, model: str) -> Family:
    """The family of a model's config; an unsupported type is refused naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in BY_MODEL_TYPE:
        raise errors.UserError(
            f"video model {model!r} has model_type {model_type!r}, which is not a supported video-language family; "
            f"supported: {', '.join(sorted(BY_MODEL_TYPE))} (harjax/video/families.py)"
        )
    return BY_MODEL_TYPE[model_type]


def template_words() -> list[str]:
    """The words every family's prompt layout and the question add to a context (for offline test tokenizers).

    The families' special tokens (<video>, <|im_start|>, ...) are not words: a tokenizer adds them apart.
    """
    texts = [re.sub(r"<\|?[a-z_]+\|?>", " ", family.prompt("")) for family in FAMILIES]
    return sorted({word for text in texts for word in text.split()})


def words(contexts: Iterable[str]) -> list[str]:
    """Every word a prompt of any family holds with these contexts (what an offline test tokenizer must know)."""
    return sorted(set(template_words()) | {word for context in contexts for word in context.split()})
