"""Learnable prompt tuning: a soft prompt for a frozen video-language model, learned on one protocol's training split.

    python -m data_builders.prompt_tuning --manual_dir=M --protocol=cross_subject --output=P \
        [--model=LanguageBind/Video-LLaVA-7B-hf --base_prompt_set=context --num_tokens=8 --steps=500 \
         --batch_size=8 --learning_rate=3e-3 --embedding=video_mean_last --seed=0 --device=cuda]
    python -m data_builders.prompt_tuning --manifest=F --protocol=loso_s3 --output=P ...   # own recordings
        [--split_protocol=manifest]   # the split column's protocol, named as the recordings build names it

then extract with it into <E>/learned_<protocol>:

    python -m data_builders.mmact.extract_embeddings --manual_dir=M --output_dir=E --prompt_set=learned \
        --learned_prompt=P/prompt.safetensors

The paper names prompt tuning as future work. Here k vectors in the language model's input-embedding space
(harjax/video/soft_prompt.py) sit where the context prompt goes, after the scene context of --base_prompt_set,
so every video token attends to them. They are trained with a light head (LayerNorm, then one linear layer) on the
chosen embedding kind and cross-entropy on the activity labels, on the protocol's training clips only: MMAct's
test subjects, cameras, scenes or sessions, or a manifest's test rows (loso_s<k>: subject k), are never read. The
model stays frozen; on a GPU it runs in bfloat16 with gradient checkpointing (its activations are then recomputed
in the backward pass instead of held for all layers).

P holds prompt.safetensors (the vectors and, in its header, what they belong to: model, family, hidden size,
protocol, base prompt set, the training settings and losses), state.pt (vectors, head, optimizer, step: a rerun
resumes from it, and with a larger --steps trains on exactly as one longer run would) and log.jsonl (loss and
training accuracy per step). The batches follow from --seed alone, so a run is reproducible from it.

P must be a new or empty folder, or one an earlier run of this command wrote (its state.pt records the settings, and
a rerun must repeat them); a folder holding anything else is refused, naming what this command did not write. A
manifest's protocols are the ones data_builders/recordings/build.py makes of it: --split_protocol (default
`manifest`) when its rows have a split column, and loso_s<k> for each subject k. Bad flags, protocols and folders
fail in one line with exit status 2 before any model is loaded (harjax/cli.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm
from absl import flags

from data_builders import extraction
from harjax import cli, errors
from harjax.video import decoding, extractor as extractor_lib, soft_prompt

PROMPT_FILE = "prompt.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
HEAD_KINDS = ("video_mean_last", "video_mean_middle", "last_token")  # one vector per clip
LOSO_PREFIX = "loso_s"  # a manifest's leave-one-subject-out folds, as its builder names them
SPLIT_PROTOCOL = "manifest"  # the recordings build's name for a manifest's split column (its --split_protocol)
STATE_KEYS = ("settings", "step", "vectors", "head", "optimizer", "log", "failed")  # what save_state writes
# What a run writes into --output (and the .tmp files it renames into place); the state comes first.
WRITTEN = frozenset(name + suffix for name in (STATE_FILE, LOG_FILE, PROMPT_FILE) for suffix in ("", ".tmp"))


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
        raise errors.ConfigError(f"--protocol must be one of MMAct's {sorted(layout.PROTOCOLS)}, got {protocol!r}")
    if base_prompt_set not in prompts.PROMPT_SETS:
        raise errors.ConfigError(
            f"--base_prompt_set must be one of MMAct's {sorted(prompts.PROMPT_SETS)}, got {base_prompt_set!r}"
        )
    try:
        clips = extract_embeddings.list_clips(manual_dir)
    except FileNotFoundError as error:
        raise errors.UserError(f"--manual_dir {error}") from None
    classes = list(layout.CLASSES)
    examples = [
        (
            decoding.ClipJob(clip.name, clip.path, prompts.context(base_prompt_set, clip.trial.scene)),
            classes.index(clip.trial.action),
        )
        for clip in clips
        if not layout.is_test(protocol, clip.trial, clip.camera)
    ]
    return examples, classes


def manifest_protocols(recordings: Sequence[Any], split_protocol: str = SPLIT_PROTOCOL) -> list[str]:
    """The protocols the recordings build makes of these manifest.Recording rows: a prompt is only for one of them.

    `split_protocol` when any row has a split (data_builders/recordings/build.py --split_protocol), then loso_s<k>
    for each subject k (--leave_subjects_out).
    """
    subjects = sorted({row.subject for row in recordings if row.subject is not None})
    split = [split_protocol] if any(row.split for row in recordings) else []
    return split + [f"{LOSO_PREFIX}{subject}" for subject in subjects]


def manifest_training_clips(
    path: str, protocol: str, base_prompt_set: str, split_protocol: str = SPLIT_PROTOCOL
) -> tuple[list[tuple], list[str]]:
    """([(job, label index)], class names) of a manifest's training rows with a clip and a label.

    `split_protocol`: the rows the manifest's split column trains on; loso_s<k>: every row whose subject is not k.
    Any other name is refused, listing the manifest's protocols (manifest_protocols).
    """
    from harjax.recordings import manifest

    if not split_protocol:
        raise errors.ConfigError("--split_protocol must name the split column's protocol, got ''")
    if base_prompt_set not in manifest.PROMPT_SETS:
        raise errors.ConfigError(
            f"--base_prompt_set must be one of {manifest.PROMPT_SETS} for a manifest, got {base_prompt_set!r}"
        )
    recordings = [row for row in manifest.read(path) if row.clip is not None and row.label is not None]
    protocols = manifest_protocols(recordings, split_protocol)
    if protocol not in protocols:
        raise errors.ConfigError(
            f"--protocol {protocol!r} is not one of {path}'s protocols: {', '.join(protocols) or 'none'} "
            f"(--split_protocol={split_protocol} names its split column's, loso_s<k> one per subject of its rows "
            "with a clip and a label)"
        )
    if protocol == split_protocol:
        training = [row for row in recordings if row.split == "train"]
    else:
        held_out = int(protocol[len(LOSO_PREFIX) :])
        training = [row for row in recordings if row.subject != held_out]
    classes = sorted({row.label for row in recordings})
    examples = [
        (
            decoding.ClipJob(row.id, row.clip, manifest.context(base_prompt_set, row)),
            classes.index(row.label),
        )
        for row in training
    ]
    return examples, classes


def check_request(settings: Settings, steps: int, checkpoint_every: int, decode_workers: int | None) -> None:
    """Refuses settings no run can use before any clip is listed or model loaded; each message names its flag."""
    if settings.embedding not in HEAD_KINDS:
        raise errors.ConfigError(
            f"--embedding must be one of {HEAD_KINDS} (one vector per clip), got {settings.embedding!r}"
        )
    at_least_one = {
        "steps": steps,
        "batch_size": settings.batch_size,
        "num_tokens": settings.num_tokens,
        "checkpoint_every": checkpoint_every,
    }
    for flag, value in at_least_one.items():
        if value < 1:
            raise errors.ConfigError(f"--{flag} must be at least 1, got {value}")
    if not (math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
        raise errors.ConfigError(f"--learning_rate must be a positive number, got {settings.learning_rate}")
    if settings.seed < 0:
        raise errors.ConfigError(f"--seed must be 0 or more, got {settings.seed}")
    if decode_workers is not None and decode_workers < 0:
        raise errors.ConfigError(f"--decode_workers must be 0 or more, got {decode_workers}")


def _earlier_state(output: str, settings: Settings) -> dict[str, Any] | None:
    """The state an earlier run of these settings left in `output`, to resume from (None: a new or empty folder).

    A folder holding anything this command did not write, or learned with other settings, is refused: a run never
    writes over a file it did not write. An earlier run is known by its state.pt, the first file a run writes.
    """
    import torch

    if os.path.exists(output) and not os.path.isdir(output):
        raise errors.UserError(f"--output {output} is a file, not a folder: give a new or empty folder")
    entries = sorted(os.listdir(output)) if os.path.isdir(output) else []
    state_path = os.path.join(output, STATE_FILE)
    state = None
    if STATE_FILE in entries:
        try:
            state = torch.load(state_path, weights_only=False)
        except Exception as error:  # whatever torch cannot read was not written by save_state
            raise errors.UserError(
                f"--output {output} holds a {STATE_FILE} that prompt tuning did not write "
                f"({type(error).__name__}: {error}): give another --output"
            ) from None
        if not (isinstance(state, dict) and set(STATE_KEYS) <= set(state) and isinstance(state["settings"], dict)):
            raise errors.UserError(
                f"--output {output} holds a {STATE_FILE} that prompt tuning did not write (no settings record): "
                "give another --output"
            )
    own = WRITTEN if state is not None else {STATE_FILE + ".tmp"}  # a run stopped while writing its first state
    foreign = [entry for entry in entries if entry not in own]
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise errors.UserError(
            f"--output {output} holds {shown}, which prompt tuning did not write: give a new or empty folder, or "
            "one an earlier prompt-tuning run wrote"
        )
    if state is not None:
        wanted = dataclasses.asdict(settings)
        different = sorted(
            key for key in wanted.keys() | state["settings"].keys() if state["settings"].get(key) != wanted.get(key)
        )
        if different:
            described = "; ".join(
                f"{key}: {state['settings'].get(key)!r} there, {wanted.get(key)!r} now" for key in different
            )
            raise errors.UserError(
                f"--output {output}: {STATE_FILE} was learned with other settings ({described}): use another --output"
            )
    return state


def batch_schedule(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """[steps, batch_size] example indices; each epoch is one permutation drawn from (seed, epoch).

    So any step's batch is known without replaying the ones before it (resume needs no random state).
    """
    epochs = -(-steps * batch_size // num_examples) + 1
    order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(num_examples) for epoch in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def _initial_vectors(extractor: extractor_lib.Extractor, count: int, seed: int) -> np.ndarray:
    """The embedding rows of `count` vocabulary tokens drawn by `seed` (vectors start on the model's manifold)."""
    weights = extractor.model.get_input_embeddings().weight
    rows = np.random.default_rng(seed).choice(weights.shape[0], count, replace=False)
    return weights[rows].detach().float().cpu().numpy()


def _write_json_lines(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def _step(
    extractor: extractor_lib.Extractor, head: Any, optimizer: Any, inputs: dict[str, Any], targets: Any, embedding: str
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
    examples: Sequence[tuple[decoding.ClipJob, int]],
    classes: Sequence[str],
    output: str,
    steps: int,
    device: str = "cpu",
    checkpoint_every: int = 50,
    decode_workers: int | None = None,
    extractor: extractor_lib.Extractor | None = None,
) -> dict[str, Any]:
    """Learns (or resumes learning) the soft prompt into `output`; returns the prompt file's metadata."""
    import torch

    check_request(settings, steps, checkpoint_every, decode_workers)
    if not examples:
        raise errors.UserError(f"{settings.dataset}: protocol {settings.protocol!r} has no training clip with a label")
    state = _earlier_state(output, settings)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as error:
        raise errors.UserError(f"--output {output}: cannot make the folder ({error.strerror})") from None
    state_path = os.path.join(output, STATE_FILE)
    extractor = extractor or extractor_lib.Extractor(settings.model, device)
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
    prompt_path = os.path.join(output, PROMPT_FILE)
    soft_prompt.save(prompt_path + ".tmp", prompt.numpy(), metadata)
    os.replace(prompt_path + ".tmp", prompt_path)  # whole or not at all
    return metadata


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the MMAct demo, which harjax.main runs, the benchmarks) have flags of these names, and absl's
    flags are process-wide. A test running main in-process calls it first.
    """
    flags.DEFINE_string("manual_dir", None, "an MMAct release")
    flags.DEFINE_string("manifest", None, "a recordings manifest (.csv or .jsonl)")
    flags.mark_flags_as_mutual_exclusive(["manual_dir", "manifest"], required=True)
    flags.DEFINE_string(
        "protocol", None, "MMAct's cross_subject, ...; a manifest's --split_protocol or loso_s<k>", required=True
    )
    flags.DEFINE_string(
        "split_protocol", None, f"a manifest's split column's protocol, as its build names it ({SPLIT_PROTOCOL})"
    )
    flags.DEFINE_string("output", None, "a new or empty folder, or an earlier run's, for the prompt", required=True)
    flags.DEFINE_string("model", extractor_lib.DEFAULT_MODEL, "hub id or local path")
    flags.DEFINE_string("base_prompt_set", "context", "whose contexts come before the soft prompt")
    flags.DEFINE_integer("num_tokens", 8, "the soft prompt's vectors")
    flags.DEFINE_enum("embedding", "video_mean_last", HEAD_KINDS, "the embedding kind the head reads")
    flags.DEFINE_integer("steps", 500, "optimizer steps (a rerun into the same --output resumes)")
    flags.DEFINE_integer("batch_size", 8, "clips per step")
    flags.DEFINE_float("learning_rate", 3e-3, "the optimizer's learning rate")
    flags.DEFINE_integer("seed", 0, "draws the initial vectors and the batches")
    flags.DEFINE_integer("checkpoint_every", 50, "steps between saved states")
    flags.DEFINE_string("device", "cuda", "cuda, cuda:1, cpu")
    flags.DEFINE_integer("decode_workers", None, "as extraction's --decode_workers")


def main(argv: list[str]) -> None:
    """Learns a soft prompt from the command line (define_flags first; through harjax.cli.run: one-line errors)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    dataset = args.manual_dir or args.manifest
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
    check_request(settings, args.steps, args.checkpoint_every, args.decode_workers)
    if args.manual_dir:
        if args.split_protocol is not None:
            raise errors.ConfigError("--split_protocol names a manifest's split column; MMAct has none (--manual_dir)")
        examples, classes = mmact_training_clips(dataset, args.protocol, args.base_prompt_set)
    else:
        split_protocol = SPLIT_PROTOCOL if args.split_protocol is None else args.split_protocol
        examples, classes = manifest_training_clips(dataset, args.protocol, args.base_prompt_set, split_protocol)
    metadata = train(
        settings, examples, classes, args.output, args.steps, args.device, args.checkpoint_every, args.decode_workers
    )
    print(
        f"learned {metadata['steps']} steps on {metadata['training_clips']} clips of {args.protocol} (final loss "
        f"{metadata['final_loss']}, {len(metadata['failed_clips'])} undecodable clips): "
        f"{os.path.join(args.output, PROMPT_FILE)}"
    )


if __name__ == "__main__":
    define_flags()
    cli.run(main)
