"""Video embeddings of every clip a recordings manifest names, with the same core, kinds and resume as MMAct's.

    python -m data_builders.recordings.extract_embeddings --manifest=M --output_dir=E --prompt_set=context \
        [--model=LanguageBind/Video-LLaVA-7B-hf --batch_size=8 --num_shards=N --shard_index=I --device=cuda]

Writes E/<prompt_set>/<row id>.npz per row with a clip (the row's span of it, clip_start_s to clip_end_s), the
metadata and the failure report of data_builders/extraction.py. Prompt sets: 'plain' (no context) and 'context'
(each row's own `context` text before the video, as MMAct's scene prompts).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from absl import flags

from data_builders import extraction
from harjax import cli
from harjax.recordings import manifest
from harjax.video import extractor as extractor_lib


def extract(
    manifest_path: str,
    output_dir: str,
    model_id: str,
    prompt_set: str,
    batch_size: int = 8,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str = "cpu",
    extractor: extractor_lib.Extractor | None = None,
    decode_workers: int | None = None,
    learned_prompt: str | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet into output_dir/prompt_set; returns counts and failures.

    prompt_set 'learned' with `learned_prompt` writes output_dir/learned_<the prompt's protocol>.
    """
    prompt_set, base_prompt_set = extraction.resolve_prompt_set(prompt_set, learned_prompt)
    listed = manifest.clip_jobs(manifest.read(manifest_path), base_prompt_set)
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


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the demos harjax.main runs, the benchmarks) have flags of these names, and absl's flags are
    process-wide. The flags both extraction commands take are data_builders/extraction_flags.py's.
    """
    from data_builders import extraction_flags

    flags.adopt_module_key_flags(extraction_flags)
    flags.DEFINE_string("manifest", None, "a recordings manifest (.csv or .jsonl)", required=True)
    flags.DEFINE_enum(
        "prompt_set",
        None,
        [*manifest.PROMPT_SETS, "learned"],
        "plain, context (each row's own context before the video), or learned (--learned_prompt)",
        required=True,
    )


def main(argv: list[str]) -> None:
    """Extracts the embeddings of one shard from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
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
    define_flags()
    cli.run(main)
