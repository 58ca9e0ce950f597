"""Embedding extraction clips/s: decoding (PyAV), the model's forward, and the whole extractor with its writes.

    python benchmarks/extraction.py                      # the tiny offline Video-LLaVA on CPU, 1 decode worker
    python benchmarks/extraction.py --family=qwen2_5_vl  # another family's tiny model
    python benchmarks/extraction.py --model=LanguageBind/Video-LLaVA-7B-hf --device=cuda --batch_size=8
    python benchmarks/extraction.py --model=random-7b --device=cuda --batch_size=16 \
        --frame_width=1920 --frame_height=1080          # Video-LLaVA-7B's architecture, random weights, no hub

Writes a synthetic MMAct tree (data_builders.mmact.synthetic_tree; --frame_width/--frame_height set the clips'
size, --clip_frames their length: MMAct's are 1920x1080, median 183 frames) to a temporary folder (its
deliberately undecodable clip is left out of the timed sets), then times
decoding the 8 sampled frames of every clip alone in this process (seeking to them, and in order from the start:
with the frames each way decodes per clip); decoding and preparing the model inputs in --decode_workers worker
processes alone (extraction.decoded_batches, what the extractor overlaps with the model); the forward alone on
prepared inputs, on --model_threads torch threads; and `extract_embeddings.extract` end to end (workers + model +
atomic npz writes). On a 2-core CPU the defaults split the cores: one decode worker, one model thread; the target
is end to end >= 0.8x the slower of the two alone (printed as `overlap`). --model=random-7b builds the 7B
model from its published configuration with random weights in bfloat16 on the device (data_builders/mmact/
tiny_models.py), so its cost can be measured where the hub cannot be reached; --model=random-qwen2-vl-7b does the
same for Qwen2-VL-7B, random-tiny and random-tiny-qwen2-vl at the tiny sizes (the --smoke path of
benchmarks/accelerator.sh). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from data_builders import extraction
from data_builders.mmact import extract_embeddings, layout, prompts, synthetic_tree  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.video import (
    decoding,  # noqa: E402
    extractor as extractor_lib,  # noqa: E402
    tiny_models,  # noqa: E402
)

RANDOM = {  # --model name -> (family, sizes) of a model built with random weights, nothing loaded
    "random-7b": ("video_llava", tiny_models.VIDEO_LLAVA_7B),
    "random-qwen2-vl-7b": ("qwen2_vl", tiny_models.QWEN2_VL_7B),
    "random-tiny": ("video_llava", tiny_models.TINY),
    "random-tiny-qwen2-vl": ("qwen2_vl", tiny_models.QWEN2_VL_TINY),
}


flags.DEFINE_string(
    "model",
    "",
    "HF id or folder; empty: the tiny offline model of --family; "
    f"{', '.join(RANDOM)}: built from sizes with random weights, nothing loaded",
)
flags.DEFINE_string("device", "cpu", "where the model runs: cpu, cuda, cuda:1")
cli.define_positive_integers(
    "batch_size",
    "8",
    "clips per forward; several, comma-separated, are timed one after the other on one model and one tree",
)
flags.DEFINE_integer("frame_width", 640, "the synthetic clips' width")
flags.DEFINE_integer("frame_height", 360, "the synthetic clips' height")
flags.DEFINE_integer("clip_frames", 90, "the synthetic clips' length in frames")
flags.DEFINE_integer("gop_size", 0, "frames per keyframe interval (0: libx264's default, 250)")
flags.DEFINE_enum("prompt_set", "context", sorted(prompts.PROMPT_SETS), "MMAct's prompts the clips are read with")
flags.DEFINE_enum("family", "video_llava", sorted(tiny_models.TINY_FAMILIES), "the tiny offline model's family")
flags.DEFINE_integer("subjects", 2, "subjects of the synthetic tree (31 clips per 2)")
flags.DEFINE_integer("decode_workers", 1, "processes decoding and preparing the model inputs")
flags.DEFINE_integer("model_threads", 1, "torch threads of the forward (0: torch's own)")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # the flags' values
    batch_sizes = [int(size) for size in args.batch_size]

    import torch

    if args.model_threads:
        torch.set_num_threads(args.model_threads)

    spec = synthetic_tree.TreeSpec(
        subjects=tuple(range(1, args.subjects + 1)),
        scenes=(1, 2),
        sessions=(1,),
        actions_per_scene=2,
        clip_frames=args.clip_frames,
        frame_size=(args.frame_width, args.frame_height),
        gop_size=args.gop_size or None,
    )
    model_rates, prepare_rates, end_to_end_rates = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        manual_dir = os.path.join(scratch, "manual")
        if args.model in RANDOM:
            dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
            family, sizes = RANDOM[args.model]
            built = tiny_models.random_model(sizes, args.device, dtype, family=family)
            model = args.model
        else:
            built = None
            model = args.model or tiny_models.save_tiny_model(
                os.path.join(scratch, "tiny"), extra_words=prompts.vocabulary(), family=args.family
            )

        manifest = synthetic_tree.write_tree(manual_dir, spec)
        broken = {os.path.normpath(path) for path in manifest["quirks"]["undecodable_clip"]}
        clips = [
            clip
            for clip in extract_embeddings.list_clips(manual_dir, synthetic_tree.VIDEO_ROOT)
            if os.path.normpath(clip.path) not in broken
        ]
        # The 8 sampled frames, reached by seeking (the extractor's way) and decoding in order from the start.
        sampled = [decoding.positions_in_span(clip.path, None, None) for clip in clips]
        sampled = [positions[decoding.frame_indices(len(positions))] for positions in sampled]
        frames_decoded, decode_rates = {}, {}
        for way, seek in (("in_order", False), ("seek", True)):
            start = time.perf_counter()
            pairs = zip(clips, sampled, strict=True)
            counts = [decoding.decode_frames(clip.path, indices, seek)[1] for clip, indices in pairs]
            decode_rates[way] = len(clips) / (time.perf_counter() - start)
            frames_decoded[way] = sum(counts)
        decode_rate, in_order_rate = decode_rates["seek"], decode_rates["in_order"]
        jobs = [
            decoding.ClipJob(clip.name, clip.path, prompts.context(args.prompt_set, clip.trial.scene)) for clip in clips
        ]

        for batch_size in batch_sizes:
            extractor = extractor_lib.Extractor(model, args.device, built)
            start = time.perf_counter()
            prepared = [
                inputs
                for _, inputs in extraction.decoded_batches(jobs, batch_size, args.decode_workers, extractor.preprocess)
            ]
            prepare_rates[batch_size] = len(clips) / (time.perf_counter() - start)
            extractor.forward(prepared[0])  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for inputs in prepared:
                extractor.forward(inputs)
            model_rates[batch_size] = len(clips) / (time.perf_counter() - start)  # forward() returns numpy
            start = time.perf_counter()
            summary = extract_embeddings.extract(
                manual_dir,
                os.path.join(scratch, f"embeddings_{batch_size}"),
                model,
                args.prompt_set,
                batch_size=batch_size,
                device=args.device,
                video_root=synthetic_tree.VIDEO_ROOT,
                extractor=extractor,
                decode_workers=args.decode_workers,
            )
            end_to_end_rates[batch_size] = len(clips) / (time.perf_counter() - start)
            if len(summary["failed"]) != len(broken) or summary["extracted"] != len(clips):
                raise RuntimeError(
                    f"extraction should embed {len(clips)} clips and fail on the tree's "
                    f"{len(broken)} undecodable ones: {summary}"
                )

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x {os.cpu_count()}"
    print(
        f"{len(clips)} clips of {args.clip_frames} frames at {args.frame_width}x{args.frame_height}, "
        f"model {args.model or f'tiny {args.family} (harjax/video/tiny_models.py)'} on {device}"
    )
    per_clip = {way: count / len(clips) for way, count in frames_decoded.items()}
    for way, rate in (("seek", decode_rate), ("in_order", in_order_rate)):
        label = f"decode 8 frames (PyAV), {way.replace('_', ' ')}"
        print(f"{label:<48} {rate:>10.2f} clips/s  {per_clip[way]:.1f} frames decoded per clip")
    overlap = {b: end_to_end_rates[b] / min(prepare_rates[b], model_rates[b]) for b in batch_sizes}
    workers, threads = args.decode_workers, args.model_threads or torch.get_num_threads()
    for batch_size in batch_sizes:
        rows = (
            (f"decode + prepare inputs, {workers} worker(s), batch {batch_size}", prepare_rates[batch_size]),
            (f"model forward, {threads} thread(s), batch {batch_size}", model_rates[batch_size]),
            (f"extract() end to end, batch {batch_size}", end_to_end_rates[batch_size]),
        )
        for label, rate in rows:
            print(f"{label:<48} {rate:>10.2f} clips/s")
        print(f"{f'overlap: end to end / slower of the two, batch {batch_size}':<48} {overlap[batch_size]:>10.2f}")
    print(
        json.dumps(
            {
                "benchmark": "extraction",
                "model": args.model or "tiny",
                "device": device,
                "clips": len(clips),
                "batch_sizes": batch_sizes,
                "clip_frames": args.clip_frames,
                "gop_size": args.gop_size or "libx264 default",
                "frame_size": [args.frame_width, args.frame_height],
                "cameras": len(layout.CAMERAS),
                "family": extractor.family.name,
                "decode_workers": workers,
                "model_threads": threads,
                "frames_decoded_per_clip": {way: round(count, 1) for way, count in per_clip.items()},
                "clips_per_s": {
                    "decode": round(decode_rate, 2),
                    "decode_in_order": round(in_order_rate, 2),
                    "prepare_in_workers": {str(b): round(rate, 2) for b, rate in prepare_rates.items()},
                    "model": {str(b): round(rate, 2) for b, rate in model_rates.items()},
                    "end_to_end": {str(b): round(rate, 2) for b, rate in end_to_end_rates.items()},
                },
                "overlap": {str(b): round(ratio, 2) for b, ratio in overlap.items()},
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
