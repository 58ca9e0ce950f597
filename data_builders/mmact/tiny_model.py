"""Randomly initialised Video-LLaVA models with an offline tokenizer: the tiny test model, and the 7B for timing.

Nothing here downloads. Tests and the demo run the extractor on the tiny model exactly as on
LanguageBind/Video-LLaVA-7B-hf (same classes, same 8 x 224 px preprocessing, same token layout), only smaller and
untrained. `random_model(VIDEO_LLAVA_7B)` builds the 7B model from its published configuration with random
weights, for extraction throughput on a GPU without the hub (benchmarks/extraction.py): the same layers and sizes,
so the same cost; only the special-token ids are the offline tokenizer's (0 and 1, not 32000 and 32001).

    python -m data_builders.mmact.tiny_model --output_dir=DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from data_builders.mmact import prompts

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


def _tokenizer(extra_words: Sequence[str] = ()) -> Any:
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    known = sorted(set(prompts.vocabulary()) | set(extra_words))
    words = SPECIAL_TOKENS + [word for word in known if word not in SPECIAL_TOKENS]
    vocab = {word: index for index, word in enumerate(words)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [tokenizers.pre_tokenizers.Split("<video>", "isolated"), tokenizers.pre_tokenizers.WhitespaceSplit()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


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

    tokenizer = _tokenizer(extra_words)
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


def save_tiny_model(output_dir: str, seed: int = 0, extra_words: Sequence[str] = ()) -> str:
    """Writes config, safetensors weights, tokenizer and processor to `output_dir`; returns it.

    The tokenizer knows MMAct's prompts' words and `extra_words` (a manifest's contexts: extraction.words).
    """
    import torch
    from transformers import VideoLlavaForConditionalGeneration

    config, processor = _model_and_processor(TINY, extra_words)
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config).eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    return output_dir


def random_model(sizes: dict[str, Any], device: str, dtype: str = "bfloat16", seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): a Video-LLaVA of `sizes` with random weights.

    Built directly on `device`: a 7B model initialised on the CPU would take minutes.
    """
    import torch
    from transformers import VideoLlavaForConditionalGeneration

    config, processor = _model_and_processor(sizes)
    torch.manual_seed(seed)
    with torch.device(device):
        model = VideoLlavaForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype))
    return model.eval(), processor


def main() -> None:
    """Saves the tiny model from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    print(save_tiny_model(parser.parse_args().output_dir))


if __name__ == "__main__":
    main()
