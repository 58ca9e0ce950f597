"""Randomly initialised video-language models with an offline tokenizer: tiny test models, and the 7B for timing.

Nothing here downloads. Tests, the demos and benchmarks of every dataset run the extractor on the tiny Video-LLaVA
exactly as on LanguageBind/Video-LLaVA-7B-hf (same classes, same 8 x 224 px preprocessing, same token layout), only
smaller and untrained; `save_tiny_model(..., family=...)` builds the same for each family of harjax/video/families.py
(qwen2_vl, qwen2_5_vl, llava_onevision: their own classes, processors and token layouts at tiny sizes).
`random_model(VIDEO_LLAVA_7B)` (and `random_model(QWEN2_VL_7B, family='qwen2_vl')`) builds the 7B model from its
published configuration with random weights, for extraction throughput on a GPU without the hub
(benchmarks/extraction.py): the same layers and sizes, so the same cost; only the special-token ids are the
offline tokenizer's (0 and 1, not 32000 and 32001).

The tokenizer is word-level: it knows the words of every family's prompt layout and the words a caller names (its
dataset's contexts: `families.words(contexts)`, or data_builders/mmact/prompts.py's `vocabulary()`); any other word
reads as <unk>.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harjax.video import families

SPECIAL_TOKENS = ["<image>", "<video>", "<unk>", "<pad>"]  # ids 0..3, as the model configs below expect
HIDDEN_SIZE = 32
PATCH_SIZE = 56  # 224 px frames -> 4 x 4 patches + CLS = 17 tokens per frame
NUM_FRAMES = 8

# Sizes of the language model (text) and vision tower; the vocabulary is the offline tokenizer's unless given.
TINY = {
    "text": dict(
        hidden_size=HIDDEN_SIZE, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=37
    ),
    "vision": dict(
        hidden_size=32,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        patch_size=PATCH_SIZE,
    ),
    "vision_feature_layer": -1,
}
# LanguageBind/Video-LLaVA-7B-hf's config.json: Vicuna-7B (LLaMA) and the LanguageBind CLIP ViT-L/14 towers.
VIDEO_LLAVA_7B = {
    "text": dict(
        vocab_size=32064,
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=11008,
        rms_norm_eps=1e-5,
    ),
    "vision": dict(
        hidden_size=1024,
        projection_dim=768,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        patch_size=14,
    ),
    "vision_feature_layer": -2,
}


def _tokenizer(extra_words: Sequence[str] = (), specials: Sequence[str] = SPECIAL_TOKENS, **named: str) -> Any:
    """A word-level tokenizer of the prompts' words; `specials` first (ids 0.., '<unk>' and '<pad>' among them).

    Every other special token is an added one, so a processor's run of video placeholders splits token by token;
    `named`: the ones a processor looks up by attribute (video_token='<video>').
    """
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    known = sorted(set(families.template_words()) | set(extra_words))
    words = list(specials) + [word for word in known if word not in specials]
    vocab = {word: index for index, word in enumerate(words)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens=named,
    )
    tokenizer.add_tokens([token for token in specials if token not in ("<unk>", "<pad>")], special_tokens=True)
    return tokenizer


def _model_and_processor(sizes: dict[str, Any], extra_words: Sequence[str] = ()) -> tuple[Any, Any]:
    """(the config, the processor) of a Video-LLaVA with `sizes` and the offline tokenizer."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaProcessor,
        VideoLlavaVideoProcessor,
    )

    tokenizer = _tokenizer(extra_words, image_token="<image>", video_token="<video>")
    patch_size = sizes["vision"]["patch_size"]
    tokens_per_frame = (224 // patch_size) ** 2 + 1
    text = {"vocab_size": len(tokenizer), **sizes["text"]}
    config = VideoLlavaConfig(
        text_config=LlamaConfig(max_position_embeddings=4096, pad_token_id=3, **text),
        vision_config=CLIPVisionConfig(image_size=224, **sizes["vision"]),
        image_token_index=0,
        video_token_index=1,
        vision_feature_layer=sizes["vision_feature_layer"],
        vision_feature_select_strategy="default",
        image_seq_length=tokens_per_frame,
        video_seq_length=tokens_per_frame * NUM_FRAMES,
    )
    processor = VideoLlavaProcessor(
        image_processor=CLIPImageProcessor(),
        video_processor=VideoLlavaVideoProcessor(),
        tokenizer=tokenizer,
        patch_size=patch_size,
    )
    return config, processor


QWEN_SPECIAL_TOKENS = [
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
    "<pad>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|im_start|>",
    "<|im_end|>",
]
ONEVISION_SPECIAL_TOKENS = ["<image>", "<video>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
# Qwen's vision towers at tiny sizes: 4 px patches, pairs of frames, 2 x 2 merge (real: 14 px, 2, 2 x 2).
QWEN_VISION = dict(patch_size=4, temporal_patch_size=2, spatial_merge_size=2)


QWEN2_VL_TINY = {
    "text": dict(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=37,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},  # sum: head_dim / 2
    ),
    "vision": dict(depth=2, embed_dim=32, hidden_size=HIDDEN_SIZE, num_heads=4, mlp_ratio=2, **QWEN_VISION),
    "video_processor": dict(patch_size=4, size={"shortest_edge": 16 * 16, "longest_edge": 32 * 32}),
}
QWEN2_5_VL_TINY = QWEN2_VL_TINY | {  # the same text model; Qwen2.5-VL's windowed vision tower
    "vision": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=37,
        num_heads=4,
        out_hidden_size=HIDDEN_SIZE,
        window_size=16,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        **QWEN_VISION,
    ),
}
# Qwen/Qwen2-VL-7B-Instruct's config.json: Qwen2-7B and its 675 M-parameter vision tower (14 px patches).
QWEN2_VL_7B = {
    "text": dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    ),
    "vision": dict(
        depth=32,
        embed_dim=1280,
        hidden_size=3584,
        num_heads=16,
        mlp_ratio=4,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
    ),
    "video_processor": dict(patch_size=14),  # the processor's own pixel range, which harjax caps (video_families)
}


def _qwen_vl(sizes: dict[str, Any], extra_words: Sequence[str] = (), version: str = "2") -> tuple[Any, Any]:
    """(config, processor) of a Qwen2-VL (version '2') or Qwen2.5-VL ('2.5') of `sizes` and the offline tokenizer."""
    import transformers

    tokenizer = _tokenizer(extra_words, QWEN_SPECIAL_TOKENS)
    text = {
        "vocab_size": len(tokenizer),  # the 7B's own replaces it: the same embedding cost
        "max_position_embeddings": 32768,
        "pad_token_id": 3,
        "bos_token_id": None,
        "eos_token_id": 7,
        **sizes["text"],
    }
    if version == "2":
        config_class, processor_class = transformers.Qwen2VLConfig, transformers.Qwen2VLProcessor
    else:
        config_class, processor_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLProcessor
    config = config_class(
        text_config=text,
        vision_config=sizes["vision"],
        image_token_id=0,
        video_token_id=1,
        vision_start_token_id=4,
        vision_end_token_id=5,
    )
    pixels = dict(temporal_patch_size=2, merge_size=2, **sizes["video_processor"])
    processor = processor_class(
        image_processor=transformers.Qwen2VLImageProcessor(**pixels),
        video_processor=transformers.Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
    )
    return config, processor


def _llava_onevision(extra_words: Sequence[str]) -> tuple[Any, Any]:
    """(config, processor) of a tiny LLaVA-OneVision: Qwen2 text, SigLIP vision, frames resized to 32 px."""
    import transformers

    tokenizer = _tokenizer(extra_words, ONEVISION_SPECIAL_TOKENS, image_token="<image>", video_token="<video>")
    image_size, patch_size = 32, 8  # the video processor must resize to exactly image_size (the pooling assumes it)
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = transformers.LlavaOnevisionConfig(
        text_config=transformers.Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN_SIZE,
            intermediate_size=37,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=3,
            bos_token_id=None,
            eos_token_id=5,
        ),
        vision_config=transformers.SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
            vision_use_head=False,
        ),
        image_token_index=0,
        video_token_index=1,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    size = {"height": image_size, "width": image_size}
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=transformers.LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
    )
    return config, processor


# model_type -> (config, processor) at tiny sizes; every family of harjax/video/families.py has one.
TINY_FAMILIES = {
    "video_llava": lambda words: _model_and_processor(TINY, words),
    "qwen2_vl": lambda words: _qwen_vl(QWEN2_VL_TINY, words),
    "qwen2_5_vl": lambda words: _qwen_vl(QWEN2_5_VL_TINY, words, "2.5"),
    "llava_onevision": _llava_onevision,
}
# family -> (config, processor) of given sizes: what random_model builds (the 7B of each, for timing).
SIZED_FAMILIES = {"video_llava": _model_and_processor, "qwen2_vl": _qwen_vl}


def save_tiny_model(
    output_dir: str, seed: int = 0, extra_words: Sequence[str] = (), family: str = "video_llava"
) -> str:
    """Writes config, safetensors weights, tokenizer and processor of a tiny `family` model to `output_dir`.

    Returns `output_dir`. The tokenizer knows every family's prompt layout and `extra_words` (the contexts' words:
    families.words).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny model for family {family!r}; one of {sorted(TINY_FAMILIES)}")
    config, processor = TINY_FAMILIES[family](extra_words)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    return output_dir


def random_model(
    sizes: dict[str, Any], device: str, dtype: str = "bfloat16", seed: int = 0, family: str = "video_llava"
) -> tuple[Any, Any]:
    """(model, processor): a model of `family` (one of SIZED_FAMILIES) and `sizes` with random weights.

    Built directly on `device`: a 7B model initialised on the CPU would take minutes.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in SIZED_FAMILIES:
        raise ValueError(f"random_model builds {sorted(SIZED_FAMILIES)}, not {family!r}")
    config, processor = SIZED_FAMILIES[family](sizes)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
    return model.eval(), processor
