"""Video-language embeddings of every MMAct clip, computed once on GPUs and stored for the dataset builder.

    python -m data_builders.mmact.extract_embeddings --manual_dir=M --output_dir=E --prompt_set=context \
        [--model=LanguageBind/Video-LLaVA-7B-hf --batch_size=8 --num_shards=N --shard_index=I --device=cuda \
         --decode_workers=K]

--model takes any family of harjax/video/families.py (Video-LLaVA, Qwen2-VL / Qwen2.5-VL, LLaVA-OneVision).
Writes E/<prompt_set>/<trial key>_cam<C>.npz per clip; what each file holds, the metadata, resume, shards and the
failure report are the extraction core's (data_builders/extraction.py). This module only lists MMAct's clips and
their contexts (by scene, data_builders/mmact/prompts.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

from absl import flags

from data_builders import extraction
from data_builders.mmact import layout, prompts
from harjax import cli
from harjax.video import decoding, extractor as extractor_lib


@dataclasses.dataclass(frozen=True)
class Clip:
    trial: layout.Trial
    camera: int
    path: str

    @property
    def name(self) -> str:
        return layout.clip_name(self.trial, self.camera)


def list_clips(manual_dir: str, video_root: str | None = None) -> list[Clip]:
    """Every clip of the release, in a stable order (the order shards are cut from)."""
    scan = layout.scan_videos(layout.find_video_root(manual_dir, video_root))
    clips = [Clip(trial, found.camera, found.path) for trial, files in scan.files.items() for found in files]
    return sorted(clips, key=lambda clip: (clip.trial, clip.camera, clip.path))


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
    extractor: extractor_lib.Extractor | None = None,
    decode_workers: int | None = None,
    learned_prompt: str | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet into output_dir/prompt_set; returns counts and failures.

    prompt_set 'learned' with `learned_prompt` writes output_dir/learned_<the prompt's protocol>.
    """
    prompt_set, base_prompt_set = extraction.resolve_prompt_set(prompt_set, learned_prompt)
    scene_contexts = {str(scene): prompts.context(base_prompt_set, scene) for scene in (1, 2, 3, 4)}  # fails early
    jobs = [
        decoding.ClipJob(clip.name, clip.path, scene_contexts[str(clip.trial.scene)])
        for clip in list_clips(manual_dir, video_root)
    ]
    return extraction.extract(
        jobs,
        os.path.join(output_dir, prompt_set),
        model_id,
        prompt_set,
        scene_contexts,
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
    flags.DEFINE_string("manual_dir", None, "the MMAct release (holds the video folder)", required=True)
    flags.DEFINE_enum(
        "prompt_set",
        None,
        [*sorted(prompts.PROMPT_SETS), "learned"],
        "the scene contexts the clips are read with (data_builders/mmact/prompts.py), or learned (--learned_prompt)",
        required=True,
    )
    flags.DEFINE_string("video_root", None, "the clips' folder under manual_dir (auto-detected)")


def main(argv: list[str]) -> None:
    """Extracts the embeddings of one shard from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
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
        decode_workers=args.decode_workers,
        learned_prompt=args.learned_prompt,
    )
    extraction.print_summary(summary)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
