"""Learnable prompt tuning: a soft prompt for a frozen video-language model, learned on one protocol's training split.

    python -m data_builders.prompt_tuning --manual_dir=M --protocol=cross_subject --output=P \
        [--model=LanguageBind/Video-LLaVA-7B-hf --base_prompt_set=context --num_tokens=8 --steps=500 \
         --batch_size=8 --learning_rate=3e-3 --embedding=video_mean_last --seed=0 --device=cuda]
    python -m data_builders.prompt_tuning --manifest=F --protocol=loso_s3 --output=P ...   # own recordings

then extract with it into <E>/learned_<protocol>:

    python -m data_builders.mmact.extract_embeddings --manual_dir=M --output_dir=E --prompt_set=learned \
        --learned_prompt=P/prompt.safetensors

The paper names prompt tuning as future work. Here k vectors in the language model's input-embedding space
(data_builders/soft_prompt.py) sit where the context prompt goes, after the scene context of --base_prompt_set,
so every video token attends to them. They are trained with a light head (LayerNorm, then one linear layer) on the
chosen embedding kind and cross-entropy on the activity labels, on the protocol's training clips only: MMAct's
test subjects, cameras, scenes or sessions, or a manifest's test rows (loso_s<k>: subject k), are never read. The
model stays frozen; on a GPU it runs in bfloat16 with gradient checkpointing (its activations are then recomputed
in the backward pass instead of held for all layers).

P holds prompt.safetensors (the vectors and, in its header, what they belong to: model, family, hidden size,
protocol, base prompt set, the training settings and losses), state.pt (vectors, head, optimizer, step: a rerun
resumes from it, and with a larger --steps trains on exactly as one longer run would) and log.jsonl (loss and
training accuracy per step). The batches follow from --seed alone, so a run is reproducible from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from data_builders import extraction, soft_prompt

PROMPT_FILE = "prompt.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
HEAD_KINDS = ("video_mean_last", "video_mean_middle", "last_token")  # one vector per clip
LOSO_PREFIX = "loso_s"  # a manifest's leave-one-subject-out folds, as its builder names them


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a learned prompt depends on; a rerun into the same folder must repeat them (steps may grow)."""

    model: str
    dataset: str  # the MMAct release or the manifest
    protocol: str
    base_prompt_set: str = "context"
    num_tokens: int = 8
    embedding: str = "video_mean_last"
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0


def mmact_training_clips(manual_dir: str, protocol: str, base_prompt_set: str) -> tuple[list[tuple], list[str]]:
    """([(job, label index)] of the protocol's training clips, class names) of an MMAct release."""
    from data_builders.mmact import extract_embeddings, layout, prompts

    if protocol not in layout.PROTOCOLS:
        raise ValueError(f"--protocol must be one of MMAct's {sorted(layout.PROTOCOLS)}, got {protocol!r}")
    classes = list(layout.CLASSES)
    examples = [
        (
            extraction.ClipJob(clip.name, clip.path, prompts.context(base_prompt_set, clip.trial.scene)),
            classes.index(clip.trial.action),
        )
        for clip in extract_embeddings.list_clips(manual_dir)
        if not layout.is_test(protocol, clip.trial, clip.camera)
    ]
    return examples, classes


def manifest_training_clips(path: str, protocol: str, base_prompt_set: str) -> tuple[list[tuple], list[str]]:
    """([(job, label index)], class names) of a manifest's training rows with a clip and a label.

    loso_s<k>: every row whose subject is not k; any other protocol: the rows the manifest's split column trains on.
    """
    from data_builders.recordings import extract_embeddings, manifest

    recordings = [row for row in manifest.read(path) if row.clip is not None and row.label is not None]
    if protocol.startswith(LOSO_PREFIX):
        held_out = int(protocol[len(LOSO_PREFIX) :])
        training = [row for row in recordings if row.subject != held_out]
    else:
        training = [row for row in recordings if row.split == "train"]
    classes = sorted({row.label for row in recordings})
    examples = [
        (
            extraction.ClipJob(row.id, row.clip, extract_embeddings.context(base_prompt_set, row)),
            classes.index(row.label),
        )
        for row in training
    ]
    return examples, classes


def batch_schedule(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """[steps, batch_size] example indices; each epoch is one permutation drawn from (seed, epoch).

    So any step's batch is known without replaying the ones before it (resume needs no random state).
    """
    epochs = -(-steps * batch_size // num_examples) + 1
    order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(num_examples) for epoch in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def _initial_vectors(extractor: extraction.Extractor, count: int, seed: int) -> np.ndarray:
    """The embedding rows of `count` vocabulary tokens drawn by `seed` (vectors start on the model's manifold)."""
    weights = extractor.model.get_input_embeddings().weight
    rows = np.random.default_rng(seed).choice(weights.shape[0], count, replace=False)
    return weights[rows].detach().float().cpu().numpy()


def _write_json_lines(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def _step(
    extractor: extraction.Extractor, head: Any, optimizer: Any, inputs: dict[str, Any], targets: Any, embedding: str
) -> tuple[float, float]:
    """One optimizer step of the prompt and head on a prepared batch; (loss, training accuracy)."""
    import torch

    features = torch.stack([kinds[embedding] for kinds in extractor.embeddings(inputs)])  # [B, d]
    logits = head(torch.nn.functional.layer_norm(features, features.shape[-1:]))
    loss = torch.nn.functional.cross_entropy(logits, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), float((logits.argmax(-1) == targets).float().mean())


def train(
    settings: Settings,
    examples: Sequence[tuple[extraction.ClipJob, int]],
    classes: Sequence[str],
    output: str,
    steps: int,
    device: str = "cpu",
    checkpoint_every: int = 50,
    decode_workers: int | None = None,
    extractor: extraction.Extractor | None = None,
) -> dict[str, Any]:
    """Learns (or resumes learning) the soft prompt into `output`; returns the prompt file's metadata."""
    import torch

    if settings.embedding not in HEAD_KINDS:
        raise ValueError(f"--embedding must be one of {HEAD_KINDS} (one vector per clip), got {settings.embedding!r}")
    if not examples:
        raise ValueError(f"{settings.dataset}: protocol {settings.protocol!r} has no training clip with a label")
    os.makedirs(output, exist_ok=True)
    state_path = os.path.join(output, STATE_FILE)
    state = torch.load(state_path, weights_only=False) if os.path.exists(state_path) else None
    if state is not None and state["settings"] != dataclasses.asdict(settings):
        different = sorted(
            key for key, value in dataclasses.asdict(settings).items() if state["settings"][key] != value
        )
        raise ValueError(f"{state_path} was learned with other settings ({', '.join(different)}): use another --output")
    extractor = extractor or extraction.Extractor(settings.model, device)
    if device.startswith("cuda"):
        extractor.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        extractor.model.train()  # checkpointing acts in training mode only; the families' dropout rates are 0
    described = {
        "model": settings.model,
        "family": extractor.family.name,
        "hidden_size": extractor.hidden_size,
        "protocol": settings.protocol,
        "base_prompt_set": settings.base_prompt_set,
        "settings": dataclasses.asdict(settings),
        "classes": list(classes),
        "training_clips": len(examples),
    }
    vectors = state["vectors"] if state else _initial_vectors(extractor, settings.num_tokens, settings.seed)
    prompt = extractor.attach_prompt(vectors, described)
    extractor.model.requires_grad_(False)  # after the prompt's tokens resized the embeddings: all of the model
    torch.manual_seed(settings.seed)  # the head's initialisation, however the model was loaded
    head = torch.nn.Linear(extractor.hidden_size, len(classes)).to(device)
    optimizer = torch.optim.AdamW([prompt.vectors, *head.parameters()], lr=settings.learning_rate, weight_decay=0.0)
    log, start, failed = [], 0, []
    if state:
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        log, start, failed = state["log"], state["step"], state["failed"]

    def save_state(step: int) -> None:
        saved = {
            "settings": dataclasses.asdict(settings),
            "step": step,
            "vectors": prompt.numpy(),
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "log": log,
            "failed": failed,
        }
        torch.save(saved, state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)  # whole or not at all
        _write_json_lines(os.path.join(output, LOG_FILE), log)

    schedule = batch_schedule(len(examples), settings.batch_size, steps, settings.seed)[start:]
    picked = [examples[index] for index in schedule.reshape(-1)]  # [steps * batch_size] (job, label)
    jobs = [job for job, _ in picked]  # read with the prompt after each context (extractor.preprocess)
    labels = np.array([label for _, label in picked]).reshape(schedule.shape)
    workers = extraction.default_decode_workers() if decode_workers is None else decode_workers
    batches = extraction.decoded_batches(jobs, settings.batch_size, workers, extractor.preprocess)
    for step, (clips, inputs) in enumerate(tqdm.tqdm(batches, total=len(schedule), desc="prompt tuning"), start):
        kept = [index for index, clip in enumerate(clips) if clip.error is None]
        failed += [clip.job.name for clip in clips if clip.error]  # counted; the step trains on the rest
        if kept:
            targets = torch.as_tensor(labels[step - start][kept], device=device)
            loss, accuracy = _step(extractor, head, optimizer, inputs, targets, settings.embedding)
            log.append({"step": step + 1, "loss": loss, "train_accuracy": accuracy, "clips": len(kept)})
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_state(step + 1)
    if start >= steps:
        logging.info("%s already holds %d steps", output, start)
    final_loss = log[-1]["loss"] if log else None
    metadata = described | {"steps": max(steps, start), "failed_clips": sorted(set(failed)), "final_loss": final_loss}
    soft_prompt.save(os.path.join(output, PROMPT_FILE), prompt.numpy(), metadata)
    return metadata


def main() -> None:
    """Learns a soft prompt from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manual_dir", help="an MMAct release")
    source.add_argument("--manifest", help="a recordings manifest (.csv or .jsonl)")
    parser.add_argument("--protocol", required=True, help="MMAct's cross_subject, ...; a manifest's split or loso_s<k>")
    parser.add_argument("--output", required=True, help="a folder for the prompt, its state and log")
    parser.add_argument("--model", default=extraction.DEFAULT_MODEL, help="hub id or local path")
    parser.add_argument("--base_prompt_set", default="context", help="whose contexts come before the soft prompt")
    parser.add_argument("--num_tokens", type=int, default=8)
    parser.add_argument("--embedding", default="video_mean_last", choices=HEAD_KINDS)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint_every", type=int, default=50)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu")
    parser.add_argument("--decode_workers", type=int, default=None, help="as extraction's --decode_workers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    dataset = args.manual_dir or args.manifest
    list_clips = mmact_training_clips if args.manual_dir else manifest_training_clips
    examples, classes = list_clips(dataset, args.protocol, args.base_prompt_set)
    settings = Settings(
        model=args.model,
        dataset=os.path.abspath(dataset),
        protocol=args.protocol,
        base_prompt_set=args.base_prompt_set,
        num_tokens=args.num_tokens,
        embedding=args.embedding,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    metadata = train(
        settings, examples, classes, args.output, args.steps, args.device, args.checkpoint_every, args.decode_workers
    )
    print(
        f"learned {metadata['steps']} steps on {metadata['training_clips']} clips of {args.protocol} (final loss "
        f"{metadata['final_loss']}, {len(metadata['failed_clips'])} undecodable clips): "
        f"{os.path.join(args.output, PROMPT_FILE)}"
    )


if __name__ == "__main__":
    main()
