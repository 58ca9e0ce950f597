"""The sharded extraction job: embeddings of a list of clips, written once per clip, resumable, shared by shard.

A dataset's extractor only lists its clips (harjax.video.decoding.ClipJob: a name, a file, an optional span in
seconds, the scene context) and calls `extract`; the job decodes the sampled frames and prepares the model's inputs
in worker processes while the model (harjax.video.extractor.Extractor, any family of harjax/video/families.py) runs
on the batch before, and writes <directory>/<clip name>.npz per clip (float16), atomically, so a rerun skips
finished clips and several GPUs or machines can share the work by shard. Each file holds the embedding kinds of
harjax/video/extractor.py and:
    frame_indices      [8]     the decoded frames the model saw (positions in the file)
    source             JSON    what the embedding was made from: the clip's path, size, modification time and
                               sha256, its span, the context and whole prompt, the model, family and prompt set
<directory>/metadata.json records the model, its family and revision, its hidden size d, the prompt texts, layers,
frame sampling and how the frames were given to the model; a rerun with other settings into the same folder is
refused. Clips that cannot be decoded are listed in <directory>/failures_shard<I>.jsonl and returned.

A rerun re-extracts exactly the clips whose inputs changed since their embedding was stored (another file or other
bytes under the clip's path, another span or context) and reports how many; embeddings stored before files
recorded their source are kept and counted as unverified. Builders read the same record (`stored_state`), so an
embedding of an earlier version of a row is never built as the row's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import select
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tqdm

from harjax import errors
from harjax.data import tfds_format
from harjax.video import extractor as extractor_lib, families, soft_prompt
from harjax.video.decoding import ClipJob, DecodedClip, decode, same_file
from harjax.video.extractor import EMBEDDING_KINDS, Preprocess

METADATA = "metadata.json"
SOURCE = "source"  # the stored array (JSON text) of what an embedding was made from


def write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that appears whole or not at all: a crash must not leave a truncated file under the final name."""
    directory = os.path.dirname(path)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz.tmp", delete=False) as f:
        try:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            os.replace(f.name, path)
        except BaseException:
            os.remove(f.name)
            raise


def read_source(path: str) -> dict[str, Any] | None:
    """The source record of a stored embedding (None for one stored before embeddings recorded their source)."""
    with np.load(path) as stored:
        return json.loads(str(stored[SOURCE])) if SOURCE in stored.files else None


def _what_changed(job: ClipJob, source: dict[str, Any]) -> str | None:
    """How `job` differs from what a stored embedding was made from (`source`), or None when it does not."""
    recorded = {key: source[key] for key in job.inputs()}
    changed = [f"{key} {recorded[key]!r} -> {value!r}" for key, value in job.inputs().items() if recorded[key] != value]
    if not same_file(job.path, source["clip"]):
        where = "" if os.path.abspath(job.path) == source["clip"]["path"] else f" (was {source['clip']['path']})"
        changed.insert(0, f"clip {job.path} is not the file it was made from{where}")
    return "; ".join(changed) or None


def stored_state(directory: str, job: ClipJob) -> tuple[str, str]:
    """(state, detail) of `job`'s embedding in `directory`: 'current', 'missing', 'changed' or 'unverified'.

    'changed': the stored embedding was made from other inputs (detail says which); 'unverified': it was stored
    before embeddings recorded their source, so nothing can be compared.
    """
    path = os.path.join(directory, job.name + ".npz")
    if not os.path.exists(path):
        return "missing", f"no {path}"
    source = read_source(path)
    if source is None:
        return "unverified", f"{path} predates source records"
    changed = _what_changed(job, source)
    return ("changed", changed) if changed else ("current", "")


def default_decode_workers() -> int:
    """Decode processes beside the model: every core but the one driving it (at least one, at most 8).

    On a 2-core machine with the tiny model two workers are faster (benchmarks/RESULTS.md), but they share the
    model's core: with a real model that core drives it.
    """
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _DecodedClips:
    """The clips of a list decoded one by one, in a DataLoader worker."""

    def __init__(self, jobs: Sequence[ClipJob]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> DecodedClip:
        return decode(self.jobs[index])


@dataclasses.dataclass(frozen=True)
class _Collate:
    """A batch's decoded clips -> (the clips without their frames, their model inputs or None): in the worker.

    Only the inputs cross to the main process, as torch tensors in shared memory (8 frames of 1080p are 50 MB, the
    model's inputs a tenth of that).
    """

    preprocess: Preprocess | None

    def __call__(self, clips: list[DecodedClip]) -> tuple[list[DecodedClip], dict[str, Any] | None]:
        if self.preprocess is None:
            return clips, None
        decoded = [clip for clip in clips if clip.error is None]
        inputs = self.preprocess(decoded) if decoded else None
        return [dataclasses.replace(clip, frames=None) for clip in clips], inputs


def _decode_context(preprocess: Preprocess | None) -> Any:
    """How decode workers start: forks of this process, unless it has loaded JAX.

    A fork is PyTorch's default on Linux and works from any script, guarded by `if __name__ == "__main__"` or not.
    JAX's threads make a fork unsafe (a lock held mid-fork stays held in the child), so a process that loaded it
    (the demos, tests) forks workers from a fresh server instead (which needs the main-module guard harjax's entry
    points have). The server imports torch, PyAV and the processor's modules once, not each worker (3 s apiece).
    """
    import multiprocessing

    if "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    processor = preprocess.processor if preprocess else None
    parts = [processor] + [
        getattr(processor, name, None) for name in ("tokenizer", "image_processor", "video_processor")
    ]
    context.set_forkserver_preload(["torch", "av", __name__] + [type(part).__module__ for part in parts if part])
    return context


def decoded_batches(
    jobs: Sequence[ClipJob], batch_size: int, workers: int, preprocess: Preprocess | None = None
) -> Iterable[tuple[list[DecodedClip], dict[str, Any] | None]]:
    """Batches of `jobs` in their order, decoded (and prepared by `preprocess`) in `workers` processes (0: here).

    Yields (clips, inputs): with `preprocess`, the model inputs of the batch's decodable clips (None if none is) and
    the clips without their frames; without it, the clips with their frames. Each worker keeps two batches ready,
    so a model whose decoders keep up with it never waits for them (how workers start: _decode_context).
    """
    import torch.utils.data

    loader = torch.utils.data.DataLoader(
        _DecodedClips(jobs),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_Collate(preprocess),
        prefetch_factor=2 if workers else None,
        multiprocessing_context=_decode_context(preprocess) if workers else None,
        worker_init_fn=functools.partial(_end_with, os.getpid()) if workers else None,
    )
    with _terminate_as_exit():
        yield from loader


def _end_with(pid: int, worker_id: int) -> None:
    """Ends this decode worker when process `pid` (the one it decodes for) is gone, even after its SIGKILL.

    A worker started by a fork server is that server's child, so torch's own check of its parent never sees the
    extraction die; each worker holds about 700 MB. Linux's pidfd says when `pid` exits (where it has none, the
    worker lives on as before).
    """
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already (it was killed while this worker started)
        os._exit(1)
    except (AttributeError, OSError):
        return

    def wait() -> None:
        select.select([handle], [], [])
        os._exit(1)

    threading.Thread(target=wait, daemon=True, name=f"end-with-{pid}").start()


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (kill's default, SLURM's preemption) unwinds like Ctrl-C, so the decode workers are shut down.

    Exits with status 143, a shell's for SIGTERM. Only the main thread can hold a signal handler; elsewhere nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        print("interrupted (SIGTERM): stopping the decode workers", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_metadata(directory: str) -> dict[str, Any]:
    """The metadata.json of one prompt set's extraction; its absence says what to run.

    A folder written before the metadata named a family is Video-LLaVA's (families.LEGACY_METADATA).
    """
    path = os.path.join(directory, METADATA)
    if not os.path.exists(path):
        raise errors.UserError(
            f"{path} is missing: extract the '{os.path.basename(directory)}' embeddings first "
            "(python -m data_builders.<dataset>.extract_embeddings) or pass embeddings_dir"
        )
    with open(path) as f:
        return families.LEGACY_METADATA | json.load(f)


def embedding_dim(directory: str) -> int:
    """The hidden size d of one prompt set's extraction.

    From its metadata, or (for extractions made before the metadata recorded it) from the first stored clip.
    """
    metadata = read_metadata(directory)
    if "hidden_size" in metadata:
        return int(metadata["hidden_size"])
    stored = sorted(name for name in os.listdir(directory) if name.endswith(".npz"))
    if not stored:
        raise errors.UserError(f"{directory} holds no embeddings (*.npz) to take their size from")
    with np.load(os.path.join(directory, stored[0])) as first:
        return int(first[EMBEDDING_KINDS[0]].shape[-1])


def check_metadata(directory: str, metadata: dict[str, Any]) -> None:
    """Writes metadata.json, or checks that an earlier run (or a parallel shard) used the same settings.

    Every setting must match, and a context both runs use must give the same prompt; a context the earlier runs did
    not use (a manifest row's new context) is added to its 'prompts'. Shards take turns through a lock file.
    """
    path = os.path.join(directory, METADATA)
    with open(os.path.join(directory, ".metadata.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        if not os.path.exists(path):
            _write_json_atomic(path, metadata)
            return
        existing, metadata = read_metadata(directory), families.LEGACY_METADATA | metadata
        prompts = existing.get("prompts", {}) | metadata.get("prompts", {})
        different = sorted(
            key
            for key in existing.keys() | metadata.keys()
            if key != "prompts" and existing.get(key) != metadata.get(key)
        ) + [
            f"the prompt of context {key!r}"
            for key in existing.get("prompts", {})
            if prompts[key] != existing["prompts"][key]
        ]
        if different:
            raise errors.UserError(
                f"{path} was written with other settings ({', '.join(different)}); "
                "extract into another --output_dir or delete it"
            )
        if prompts != existing.get("prompts", {}):
            _write_json_atomic(path, existing | {"prompts": prompts})


def _write_json_atomic(path: str, value: Any) -> None:
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), suffix=".json.tmp", delete=False) as f:
        json.dump(value, f, indent=1)
    os.replace(f.name, path)


def undecodable(directory: str, jobs: Sequence[ClipJob] | None = None) -> set[str]:
    """Names of the clips some shard could not decode (what a builder counts as undecodable, not missing).

    With `jobs`, only the failures that still hold for them: a clip whose file or inputs changed since it failed is
    missing, not undecodable.
    """
    names = set()
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if entry.startswith("failures_shard") and entry.endswith(".jsonl"):
            path = os.path.join(directory, entry)
            failures = _recorded_failures(path) if jobs is None else _unchanged_failures(path, jobs)
            names |= {failure["clip"] for failure in failures}
    return names


def _recorded_failures(path: str) -> list[dict[str, Any]]:
    """The entries of a failures_shard<i>.jsonl (none when there is no such file)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _file_state(path: str) -> list[int] | None:
    """(size, mtime in ns) of a clip's file: a failed clip is decoded again only once this changes."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _failure(clip: DecodedClip) -> dict[str, Any]:
    """A failures_shard<i>.jsonl entry: the clip, its error, and the file state and inputs it failed with."""
    job = clip.job
    return {
        "clip": job.name,
        "path": job.path,
        "error": clip.error,
        "file": _file_state(job.path),
        "inputs": job.inputs(),
    }


def _unchanged_failures(failures_path: str, jobs: Sequence[ClipJob]) -> list[dict[str, Any]]:
    """The failures recorded in `failures_path` of clips among `jobs` whose file and inputs have not changed since.

    Decoding is deterministic, so such a clip would fail again; retrying it would cost a model load when it is the
    only clip left. An entry written before failures recorded their inputs is retried.
    """
    by_name = {job.name: job for job in jobs}
    return [
        failure
        for failure in _recorded_failures(failures_path)
        if failure["clip"] in by_name
        and failure.get("file") is not None
        and failure["file"] == _file_state(by_name[failure["clip"]].path)
        and failure.get("inputs") == by_name[failure["clip"]].inputs()
    ]


def _check_arguments(directory: str, batch_size: int, num_shards: int, shard_index: int, workers: int | None) -> None:
    """The flags and the output folder, checked before a model is loaded."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise errors.ConfigError(
            f"--shard_index={shard_index} must be in [0, --num_shards={num_shards}) with --num_shards >= 1"
        )
    if batch_size < 1:
        raise errors.ConfigError(f"--batch_size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise errors.ConfigError(f"--decode_workers must be 0 (decode here) or more, got {workers}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:  # a file where a folder should be
        raise errors.UserError(f"--output_dir: cannot make the folder {directory}: {error.strerror}") from None


def extract(
    jobs: Sequence[ClipJob],
    directory: str,
    model_id: str,
    prompt_set: str,
    contexts: dict[str, str],
    batch_size: int = 8,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str = "cpu",
    extractor: extractor_lib.Extractor | None = None,
    decode_workers: int | None = None,
    learned_prompt: str | None = None,
) -> dict[str, Any]:
    """Embeds this shard's clips that are not done yet, or whose inputs changed, into `directory`.

    Returns counts and the clips that failed. A clip whose stored embedding was made from other inputs (stored_state:
    another file or other bytes at its path, another span or context) is extracted again, its old embedding removed
    first; one stored before embeddings recorded their source is kept and counted as unverified. A clip that failed
    to decode before is tried again only if its file (size or modification time) or inputs changed since: touch it,
    or delete the shard's failures_shard<i>.jsonl, to force a retry.

    `jobs` in a stable order (shards are cut from it); `contexts`: every context the listing can use, by what
    selects it (their prompts are recorded in the metadata); `extractor`: one already loaded (model_id then only
    names it); `decode_workers`: processes decoding the next batches while the model runs
    (None: default_decode_workers(), 0: decode in this process between forwards); `learned_prompt`: a soft prompt
    file (data_builders/prompt_tuning.py) read after each context, recorded whole in the metadata.
    """
    _check_arguments(directory, batch_size, num_shards, shard_index, decode_workers)
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise errors.UserError(f"clip names must be unique in one extraction; repeated: {repeated[:5]}")
    shard = list(jobs)[shard_index::num_shards]
    states = {job.name: stored_state(directory, job) for job in shard}
    changed = [{"clip": name, "changed": detail} for name, (state, detail) in states.items() if state == "changed"]
    todo = [job for job in shard if states[job.name][0] in ("missing", "changed")]
    done = len(shard) - len(todo)
    failures_path = os.path.join(directory, f"failures_shard{shard_index}.jsonl")
    failures = _unchanged_failures(failures_path, todo)
    known = {failure["clip"] for failure in failures}
    todo = [job for job in todo if job.name not in known]
    logging.info(
        "shard %d/%d: %d clips, %d already done, %d changed since, %d undecodable and unchanged since",
        shard_index,
        num_shards,
        len(shard),
        done,
        len(changed),
        len(known),
    )
    summary = {
        "clips_in_shard": len(shard),
        "skipped_done": done,
        "unverified": sum(state == "unverified" for state, _ in states.values()),
        "changed": changed,
        "skipped_undecodable": len(known),
        "failed": failures,
    }
    if not todo:
        return summary | {"extracted": 0}  # the failures file already lists the known failures
    extractor = extractor or extractor_lib.Extractor(model_id, device)
    decode_workers = default_decode_workers() if decode_workers is None else decode_workers
    if learned_prompt:
        extractor.attach_prompt(*soft_prompt.load(learned_prompt))
    check_metadata(directory, extractor.metadata(model_id, prompt_set, contexts))
    for entry in changed:  # gone before its replacement is made: never read as the changed row's embedding
        os.remove(os.path.join(directory, entry["clip"] + ".npz"))
    with tqdm.tqdm(total=len(todo), unit="clip", desc=f"extract {prompt_set}") as progress:
        for clips, inputs in decoded_batches(todo, batch_size, decode_workers, extractor.preprocess):
            decoded = [clip for clip in clips if clip.error is None]
            failures += [_failure(clip) for clip in clips if clip.error]
            if decoded:
                for clip, arrays in zip(decoded, extractor.forward(inputs), strict=True):
                    source = extractor.source(clip, prompt_set)
                    write_atomic(
                        os.path.join(directory, clip.job.name + ".npz"),
                        {
                            **arrays,
                            "frame_indices": clip.indices.astype(np.int32),
                            SOURCE: np.array(json.dumps(source)),
                        },
                    )
            progress.update(len(clips))
    if failures:  # the known and this run's failures are exactly the clips still missing
        with open(failures_path, "w") as f:
            f.writelines(json.dumps(failure) + "\n" for failure in failures)
    elif os.path.exists(failures_path):
        os.remove(failures_path)
    return summary | {"extracted": len(todo) - len(failures) + len(known)}


def base_prompt_set(metadata: dict[str, Any]) -> str:
    """The prompt set whose contexts an extraction folder's clips were read with (its metadata's).

    A learned prompt's folder ('learned_<protocol>') read them with the set the prompt was learned after.
    """
    learned = metadata.get("learned_prompt")
    return learned["base_prompt_set"] if learned else metadata["prompt_set"]


def resolve_prompt_set(prompt_set: str, learned_prompt: str | None) -> tuple[str, str]:
    """(the extraction's prompt set, the prompt set whose contexts its clips get) for --prompt_set/--learned_prompt.

    A learned prompt belongs to the protocol it was trained on: its extraction is 'learned_<protocol>', read with
    the contexts of the prompt set it was learned after.
    """
    if prompt_set != "learned":
        if learned_prompt:
            raise errors.ConfigError(
                f"--learned_prompt is read with --prompt_set=learned, not --prompt_set={prompt_set}"
            )
        return prompt_set, prompt_set
    if not learned_prompt:
        raise errors.ConfigError(
            "--prompt_set=learned needs --learned_prompt=P (made by python -m data_builders.prompt_tuning)"
        )
    _, metadata = soft_prompt.load(learned_prompt)
    return tfds_format.learned_prompt_set(metadata["protocol"]), metadata["base_prompt_set"]


def print_summary(summary: dict[str, Any]) -> None:
    """The extraction's counts, the clips extracted again because their inputs changed, and every failure."""
    print(
        f"extracted {summary['extracted']} ({len(summary['changed'])} of them again: their inputs changed), "
        f"already done {summary['skipped_done']}, failed {len(summary['failed'])} of {summary['clips_in_shard']} "
        f"clips in this shard ({summary['skipped_undecodable']} of them failed before and are unchanged: not retried)"
    )
    if summary["unverified"]:
        print(
            f"  {summary['unverified']} stored embeddings predate source records: kept, unverified "
            "(delete them to extract them again)"
        )
    for entry in summary["changed"]:
        print(f"  changed since extracted: {entry['clip']}: {entry['changed']}")
    for failure in summary["failed"]:
        print(f"  could not decode {failure['path']}: {failure['error']}")
