"""Video embeddings of every clip a recordings manifest names, with the same core, kinds and resume as MMAct's.

    python -m data_builders.recordings.extract_embeddings --manifest=M --output_dir=E --prompt_set=context \
        [--model=LanguageBind/Video-LLaVA-7B-hf --batch_size=8 --num_shards=N --shard_index=I --device=cuda]

Writes E/<prompt_set>/<row id>.npz per row with a clip (the row's span of it, clip_start_s to clip_end_s), the
metadata and the failure report of data_builders/extraction.py. Prompt sets: 'plain' (no context) and 'context'
(each row's own `context` text before the video, as MMAct's scene prompts).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

from data_builders import extraction
from data_builders.recordings import manifest
from harjax import cli, errors

PROMPT_SETS = ("plain", "context")


def context(prompt_set: str, recording: manifest.Recording) -> str:
    """The context a row's clip is read with (the model family writes the prompt around it)."""
    if prompt_set not in PROMPT_SETS:
        raise errors.ConfigError(
            f"unknown prompt set {prompt_set!r} for a recordings manifest; choose one of {PROMPT_SETS}"
        )
    return recording.context if prompt_set == "context" else ""


def jobs(recordings: Sequence[manifest.Recording], prompt_set: str) -> list[extraction.ClipJob]:
    """One job per row with a clip, in manifest order (the order shards are cut from)."""
    return [
        extraction.ClipJob(
            recording.id, recording.clip, context(prompt_set, recording), recording.clip_start_s, recording.clip_end_s
        )
        for recording in recordings
        if recording.clip is not None
    ]


def extract(
    manifest_path: str,
    output_dir: str,
    model_id: str,
    prompt_set: str,
    batch_size: int = 8,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str = "cpu",
    extractor: extraction.Extractor | None = None,
    decode_workers: int | None = None,
    learned_prompt: str | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet into output_dir/prompt_set; returns counts and failures.

    prompt_set 'learned' with `learned_prompt` writes output_dir/learned_<the prompt's protocol>.
    """
    prompt_set, base_prompt_set = extraction.resolve_prompt_set(prompt_set, learned_prompt)
    listed = jobs(manifest.read(manifest_path), base_prompt_set)
    if not listed:
        raise manifest.ManifestError(f"{manifest_path}: no row names a 'clip' (a sensors-only build extracts nothing)")
    contexts = {text: text for text in sorted({job.context for job in listed})}  # a prompt per context, by its text
    return extraction.extract(
        listed,
        os.path.join(output_dir, prompt_set),
        model_id,
        prompt_set,
        contexts,
        batch_size,
        num_shards,
        shard_index,
        device,
        extractor,
        decode_workers,
        learned_prompt,
    )


def main(argv: list[str]) -> None:
    """Extracts the embeddings of one shard from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a recordings manifest (.csv or .jsonl)")
    extraction.add_arguments(parser)
    parser.add_argument("--prompt_set", required=True, choices=[*PROMPT_SETS, "learned"])
    args = parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO)
    extraction.print_summary(
        extract(
            args.manifest,
            args.output_dir,
            args.model,
            args.prompt_set,
            args.batch_size,
            args.num_shards,
            args.shard_index,
            args.device,
            decode_workers=args.decode_workers,
            learned_prompt=args.learned_prompt,
        )
    )


if __name__ == "__main__":
    cli.run(main, parser=cli.own_arguments)
