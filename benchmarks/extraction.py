"""Embedding extraction clips/s: decoding (PyAV), Video-LLaVA forward, and the whole extractor with its writes.

    python benchmarks/extraction.py                      # the tiny offline Video-LLaVA on CPU
    python benchmarks/extraction.py --model=LanguageBind/Video-LLaVA-7B-hf --device=cuda --batch_size=8

Writes a synthetic MMAct tree (data_builders.mmact.synthetic_tree; --frame_width/--frame_height set the clips'
size, --clip_frames their length: MMAct's are 1920x1080, median 183 frames) to a temporary folder (its deliberately undecodable clip is left out of the timed sets), then times
decoding the 8 sampled frames of every clip alone, the model on already decoded clips alone, and
`extract_embeddings.extract` end to end (decode + model + atomic npz writes). Prints a table and, last, one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_builders.mmact import extract_embeddings, layout, prompts, synthetic_tree, tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="HF id or folder; empty: the tiny offline model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frame_width", type=int, default=640)
    parser.add_argument("--frame_height", type=int, default=360)
    parser.add_argument("--clip_frames", type=int, default=90)
    parser.add_argument("--prompt_set", default="context")
    args = parser.parse_args()

    import torch

    spec = synthetic_tree.TreeSpec(subjects=(1, 2), scenes=(1, 2), sessions=(1,), actions_per_scene=2,
                                   clip_frames=args.clip_frames, frame_size=(args.frame_width, args.frame_height))
    with tempfile.TemporaryDirectory() as scratch:
        manual_dir = os.path.join(scratch, "manual")
        model = args.model or tiny_model.save_tiny_model(os.path.join(scratch, "tiny_video_llava"))

        manifest = synthetic_tree.write_tree(manual_dir, spec)
        broken = {os.path.normpath(path) for path in manifest["quirks"]["undecodable_clip"]}
        clips = [clip for clip in extract_embeddings.list_clips(manual_dir, synthetic_tree.VIDEO_ROOT)
                 if os.path.normpath(clip.path) not in broken]
        start = time.perf_counter()
        decoded = [extract_embeddings.read_frames(clip.path)[0] for clip in clips]
        decode_rate = len(clips) / (time.perf_counter() - start)

        extractor = extract_embeddings.Extractor(model, args.device)
        texts = [prompts.prompt(args.prompt_set, clip.trial.scene) for clip in clips]
        extractor.embed(decoded[:args.batch_size], texts[:args.batch_size])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for offset in range(0, len(clips), args.batch_size):
            extractor.embed(decoded[offset:offset + args.batch_size], texts[offset:offset + args.batch_size])
        model_rate = len(clips) / (time.perf_counter() - start)  # embed() returns numpy: the device is done
        del extractor

        start = time.perf_counter()
        summary = extract_embeddings.extract(manual_dir, os.path.join(scratch, "embeddings"), model,
                                             args.prompt_set, batch_size=args.batch_size, device=args.device,
                                             video_root=synthetic_tree.VIDEO_ROOT)
        end_to_end_rate = len(clips) / (time.perf_counter() - start)  # includes loading the model once
        if len(summary["failed"]) != len(broken) or summary["extracted"] != len(clips):
            raise RuntimeError(f"extraction should embed {len(clips)} clips and fail on the tree's "
                               f"{len(broken)} undecodable ones: {summary}")

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x {os.cpu_count()}"
    rows = [("decode 8 frames (PyAV)", decode_rate), ("model forward, decoded clips", model_rate),
            ("extract() end to end, incl. model load", end_to_end_rate)]
    print(f"{len(clips)} clips of {args.clip_frames} frames at {args.frame_width}x{args.frame_height}, "
          f"model {args.model or 'tiny (data_builders/mmact/tiny_model.py)'} on {device}, batch {args.batch_size}")
    for name, rate in rows:
        print(f"{name:<40} {rate:>10.2f} clips/s")
    print(json.dumps({"benchmark": "extraction", "model": args.model or "tiny", "device": device,
                      "clips": len(clips), "batch_size": args.batch_size, "clip_frames": args.clip_frames,
                      "frame_size": [args.frame_width, args.frame_height], "cameras": len(layout.CAMERAS),
                      "clips_per_s": {"decode": round(decode_rate, 2), "model": round(model_rate, 2),
                                      "end_to_end": round(end_to_end_rate, 2)}}))


if __name__ == "__main__":
    main()
