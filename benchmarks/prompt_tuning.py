"""Prompt tuning's cost: seconds per step, clips per second and peak accelerator memory, per batch size.

    python benchmarks/prompt_tuning.py                                   # the tiny Video-LLaVA on the CPU
    python benchmarks/prompt_tuning.py --model=random-7b --device=cuda --batch_size=8,16   # the 7B's memory

Writes a small synthetic MMAct tree (1920x1080 clips: what MMAct's decoding costs) and runs
data_builders.prompt_tuning.train on its cross_subject training split for --steps steps per batch size, each from a
fresh folder; the first step (warm-up) is left out of the rate. --model=random-7b builds Video-LLaVA-7B from its
published configuration with random weights in bfloat16 on the device (harjax/video/tiny_models.py), with
gradient checkpointing as prompt tuning uses on CUDA; peak memory is torch.cuda.max_memory_allocated
(docs/workflows/learned_prompts.md estimates about 21 GB at batch 8). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from data_builders import prompt_tuning  # noqa: E402
from data_builders.mmact import (
    prompts,  # noqa: E402
    synthetic_tree,  # noqa: E402
)
from harjax import cli  # noqa: E402
from harjax.video import (
    extractor as extractor_lib,  # noqa: E402
    tiny_models,  # noqa: E402
)

flags.DEFINE_string("model", "", "empty: the tiny offline model; random-7b: the 7B's architecture")
flags.DEFINE_string("device", "cpu", "where the model runs: cpu, cuda, cuda:1")
cli.define_positive_integers("batch_size", "8", "comma-separated: each timed on the same model")
flags.DEFINE_integer("steps", 4, "timed steps per batch size, after one warm-up step")
flags.DEFINE_integer("frame_width", 1920, "the synthetic clips' width")
flags.DEFINE_integer("frame_height", 1080, "the synthetic clips' height")
flags.DEFINE_integer("clip_frames", 60, "the synthetic clips' length in frames")
flags.DEFINE_integer("decode_workers", None, "as prompt tuning's --decode_workers (default: its own)")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # the flags' values
    batch_sizes = [int(size) for size in args.batch_size]

    import torch

    cuda = args.device.startswith("cuda")
    spec = synthetic_tree.TreeSpec(
        subjects=(1, 2),
        scenes=(1,),
        sessions=(1,),
        actions_per_scene=3,
        clip_frames=args.clip_frames,
        frame_size=(args.frame_width, args.frame_height),
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        manual_dir = os.path.join(scratch, "mmact")
        synthetic_tree.write_tree(manual_dir, spec)
        if args.model == "random-7b":
            built = tiny_models.random_model(tiny_models.VIDEO_LLAVA_7B, args.device, "bfloat16" if cuda else "float32")
            model = args.model
        else:
            built, model = (
                None,
                tiny_models.save_tiny_model(os.path.join(scratch, "tiny"), extra_words=prompts.vocabulary()),
            )
        extractor = extractor_lib.Extractor(model, args.device, built)
        examples, classes = prompt_tuning.mmact_training_clips(manual_dir, "cross_subject", "context")
        for batch_size in batch_sizes:
            settings = prompt_tuning.Settings(
                model=model, dataset=manual_dir, protocol="cross_subject", batch_size=batch_size
            )
            output = os.path.join(scratch, f"prompt_{batch_size}")
            common = dict(device=args.device, decode_workers=args.decode_workers, extractor=extractor)
            warm = prompt_tuning.train(settings, examples, classes, output, 1, checkpoint_every=1, **common)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            steps = 1 + args.steps  # resumes after the warm-up step
            metadata = prompt_tuning.train(settings, examples, classes, output, steps, checkpoint_every=steps, **common)
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.steps
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            rows.append(
                {
                    "batch_size": batch_size,
                    "s_per_step": round(seconds, 3),
                    "clips_per_s": round(batch_size / seconds, 2),
                    "peak_gib": None if peak is None else round(peak, 2),
                    "first_loss": warm["final_loss"],
                    "final_loss": metadata["final_loss"],
                }
            )

    device = torch.cuda.get_device_name() if cuda else f"cpu x {os.cpu_count()}"
    print(f"prompt tuning, model {args.model or 'tiny'} on {device}, {len(examples)} training clips")
    for row in rows:
        memory = "" if row["peak_gib"] is None else f"  peak {row['peak_gib']:.2f} GiB"
        print(f"batch {row['batch_size']:>3}: {row['s_per_step']:.3f} s/step, {row['clips_per_s']:.2f} clips/s{memory}")
    print(json.dumps({"benchmark": "prompt_tuning", "model": args.model or "tiny", "device": device, "rows": rows}))


if __name__ == "__main__":
    cli.run(main)
