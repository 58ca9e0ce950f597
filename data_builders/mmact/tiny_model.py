"""A tiny, randomly initialised Video-LLaVA with an offline tokenizer, saved like the real model.

Nothing here downloads: tests and the demo run the extractor on it exactly as on LanguageBind/Video-LLaVA-7B-hf
(same classes, same 8 x 224 px preprocessing, same token layout), only smaller and untrained.

    python -m data_builders.mmact.tiny_model --output_dir=DIR
"""

from __future__ import annotations

import argparse

from data_builders.mmact import prompts

SPECIAL_TOKENS = ["<image>", "<video>", "<unk>", "<pad>"]  # ids 0..3, as the model config below expects
HIDDEN_SIZE = 32
PATCH_SIZE = 56  # 224 px frames -> 4 x 4 patches + CLS = 17 tokens per frame
NUM_FRAMES = 8


def save_tiny_model(output_dir: str, seed: int = 0) -> str:
    """Writes config, safetensors weights, tokenizer and processor to `output_dir`; returns it."""
    import tokenizers
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast,
                              VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaProcessor,
                              VideoLlavaVideoProcessor)

    words = SPECIAL_TOKENS + [word for word in prompts.vocabulary() if word not in SPECIAL_TOKENS]
    vocab = {word: index for index, word in enumerate(words)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split("<video>", "isolated"), tokenizers.pre_tokenizers.WhitespaceSplit()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        padding_side="left", extra_special_tokens={"image_token": "<image>",
                                                                                   "video_token": "<video>"})
    tokens_per_frame = (224 // PATCH_SIZE) ** 2 + 1
    config = VideoLlavaConfig(
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=HIDDEN_SIZE, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=4, intermediate_size=37,
                                max_position_embeddings=4096, pad_token_id=3),
        vision_config=CLIPVisionConfig(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=37, image_size=224, patch_size=PATCH_SIZE),
        image_token_index=0, video_token_index=1, vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=tokens_per_frame,
        video_seq_length=tokens_per_frame * NUM_FRAMES)
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config).eval()
    model.save_pretrained(output_dir, safe_serialization=True)
    processor = VideoLlavaProcessor(image_processor=CLIPImageProcessor(), video_processor=VideoLlavaVideoProcessor(),
                                    tokenizer=tokenizer, patch_size=PATCH_SIZE)
    processor.save_pretrained(output_dir)
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    print(save_tiny_model(parser.parse_args().output_dir))


if __name__ == "__main__":
    main()
