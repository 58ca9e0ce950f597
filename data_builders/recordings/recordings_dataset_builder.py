"""A recordings manifest as a TFDS dataset in MMAct's format, so every reader, cache, evaluator and suite works on it.

Built without TensorFlow, to array_record (python -m data_builders.recordings.build), read by
harjax/data/tfds_source.py with config.data.source='recordings'. One record per manifest row: the sensors aligned
on the clip's grid (harjax/recordings/sensors.py) with the steps every stream recorded, the row's clip
embedding (one camera), label, subject, session and its id. Splits '<protocol>_train' / '<protocol>_test' for the
manifest's own split column (protocol `split_protocol`) and, on request, one leave-subjects-out fold per subject
('loso_s<subject>'). What was skipped, and what alignment found per example, is in the build report.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_builders import extraction
from harjax import errors
from harjax.data import resampling, tfds_format
from harjax.recordings import manifest, sensors
from harjax.video import extractor as extractor_lib, families

LOSO_PREFIX = "loso_s"


@dataclasses.dataclass
class RecordingsConfig(tfds.core.BuilderConfig):
    prompt_set: str = "context"  # '' for a build without video
    embedding: str = "video_mean_last"  # one of extractor_lib.EMBEDDING_KINDS
    sensor_rate_hz: float = tfds_format.DEFAULT_RATE_HZ


@dataclasses.dataclass(frozen=True)
class _Example:
    recording: manifest.Recording
    aligned: sensors.Aligned
    embedding: str | None  # its .npz, None without one


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A lab's own recordings (a manifest) with their clips' embeddings; `named` gives it another dataset name."""

    name = "recordings"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Manifest rows aligned on their clips' grids, MMAct's record format and metadata."}
    BUILDER_CONFIGS = [
        RecordingsConfig(name=tfds_format.config_name(prompt_set, kind), prompt_set=prompt_set, embedding=kind)
        for prompt_set in manifest.PROMPT_SETS
        for kind in extractor_lib.EMBEDDING_KINDS
    ] + [RecordingsConfig(name=tfds_format.SENSORS_ONLY, prompt_set="", description="sensors only, no video")]
    DEFAULT_CONFIG_NAME = tfds_format.config_name("context", "video_mean_last")

    def __init__(
        self,
        *,
        manifest_path: str,
        embeddings_dir: str | None = None,
        class_names: Sequence[str] | None = None,
        split_protocol: str = "manifest",
        leave_subjects_out: bool = False,
        min_coverage: float = sensors.DEFAULT_MIN_COVERAGE,
        max_gap_periods: float = resampling.DEFAULT_MAX_GAP_PERIODS,
        embedding_states: dict[str, tuple[str, str]] | None = None,
        allow_missing_embeddings: bool = False,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._manifest_path = manifest_path
        self._embedding_states = embedding_states or {}  # row id -> extraction.stored_state (build.embedding_states)
        self._allow_missing_embeddings = allow_missing_embeddings
        self._inputs = inputs  # what the build read (data_builders/recordings/build.py), kept in its metadata
        self._embeddings_dir = embeddings_dir  # the extractor's --output_dir (one folder per prompt set inside)
        self._class_names = tuple(class_names) if class_names else None
        self._split_protocol = split_protocol
        self._leave_subjects_out = leave_subjects_out
        self._min_coverage = min_coverage
        self._max_gap_periods = max_gap_periods
        super().__init__(**kwargs)
        if bool(self.builder_config.prompt_set) != bool(embeddings_dir):
            raise errors.ConfigError(
                f"TFDS config {self.builder_config.name!r} "
                + ("needs --embeddings_dir" if embeddings_dir is None else "has no video: drop --embeddings_dir")
            )

    @classmethod
    def named(cls, name: str) -> type[Builder]:
        """This builder under another dataset name (e.g. 'utd_mhad'): its folder under data_dir."""
        if not name.isidentifier() or name != name.lower():
            raise errors.ConfigError(f"--name={name!r}: a dataset name is lower-case letters, digits and '_'")
        namespace = {"name": name, "__module__": cls.__module__}  # TFDS finds its files by the module
        return cls if name == cls.name else type(f"Builder_{name}", (cls,), namespace, skip_registration=True)

    @property
    def _extraction_dir(self) -> str | None:
        return os.path.join(self._embeddings_dir, self.builder_config.prompt_set) if self._embeddings_dir else None

    @functools.cached_property
    def _parsed(self) -> tuple[list[_Example], tuple[str, ...], dict[str, Any]]:
        return _parse(
            manifest.read(self._manifest_path),
            self._extraction_dir,
            self._embedding_states,
            self.builder_config,
            self._class_names,
            self._min_coverage,
            self._max_gap_periods,
        )

    def _embedding_shape(self) -> tuple[int, ...] | None:
        if self._extraction_dir is None:
            return None
        dim = extraction.embedding_dim(self._extraction_dir)
        return (1, families.NUM_FRAMES, dim) if self.builder_config.embedding == "frame_means" else (1, dim)

    def _info(self) -> tfds.core.DatasetInfo:
        examples, class_names, _ = self._parsed
        channels = examples[0].aligned.channel_names if examples else ()
        streams = examples[0].recording.streams if examples else ()
        features = tfds_format.features(
            channels,
            streams,
            class_names,
            self.builder_config.sensor_rate_hz,
            1,
            self._embedding_shape(),
            f"'{self.builder_config.embedding}' of the row's clip",
        )
        features["sensor_mask"] = tfds.features.Tensor(shape=(None,), dtype=np.bool_, doc="steps every stream recorded")
        features["groups"] = tfds.features.Text(doc="the row's grouping columns, JSON")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features), metadata=tfds.core.MetadataDict(), disable_shuffling=True
        )

    def _protocols(self, examples: list[_Example]) -> dict[str, dict[str, list[_Example]]]:
        """protocol -> {'train': [...], 'test': [...]}: the manifest's split column, then one fold per subject."""
        protocols = {}
        if any(example.recording.split for example in examples):
            protocols[self._split_protocol] = {
                part: [example for example in examples if example.recording.split == part] for part in manifest.SPLITS
            }
        if self._leave_subjects_out:
            unknown = [example.recording.row for example in examples if example.recording.subject is None]
            if unknown:
                raise manifest.ManifestError(
                    f"{self._manifest_path}: rows {unknown[:10]} have no 'subject' (leave-subjects-out needs one)"
                )
            for subject in sorted({example.recording.subject for example in examples}):
                protocols[f"{LOSO_PREFIX}{subject}"] = {
                    "train": [example for example in examples if example.recording.subject != subject],
                    "test": [example for example in examples if example.recording.subject == subject],
                }
        for name, parts in protocols.items():
            empty = [part for part, items in parts.items() if not items]
            if empty:
                raise manifest.ManifestError(
                    f"{self._manifest_path}: protocol {name!r} has no usable {' or '.join(empty)} examples "
                    f"(check the 'split' column and the subjects; rows skipped: {_skip_counts(self._parsed[2])})"
                )
        if not protocols:
            raise manifest.ManifestError(
                f"{self._manifest_path}: no protocol: give the rows a 'split' column (train/test) or build with "
                "--leave_subjects_out"
            )
        return protocols

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        examples, class_names, report = self._parsed
        if not examples:
            first = next((rows[0] for rows in report["skipped"].values()), {})
            raise manifest.ManifestError(
                f"{self._manifest_path}: no row could be used (rows skipped: {_skip_counts(report)}; "
                f"row {first.get('row')}: {first.get('detail')})"
            )
        self._refuse_missing_embeddings(report)
        protocols = self._protocols(examples)
        metadata = self.info.metadata
        metadata["normalization"] = {name: _normalization(parts["train"]) for name, parts in protocols.items()}
        channels = examples[0].aligned.channel_names
        report["constant_channels"] = {
            name: constant
            for name, stats in metadata["normalization"].items()
            if (constant := tfds_format.constant_channels(stats, channels))
        }
        metadata["build_report"] = report
        metadata["protocols"] = list(protocols)
        if self._inputs is not None:  # the manifest (path, sha256) and every other input of the build
            metadata["inputs"] = self._inputs
        metadata["sensor_channels"] = list(channels)
        metadata["stream_channels"] = list(examples[0].aligned.stream_channels)  # streams may differ in width
        metadata["sensor_rate_hz"] = self.builder_config.sensor_rate_hz
        metadata["cameras"] = [1]
        metadata["alignment"] = {"min_coverage": self._min_coverage, "max_gap_periods": self._max_gap_periods}
        if self._extraction_dir is not None:
            metadata["embeddings"] = extraction.read_metadata(self._extraction_dir)
        members = {f"{name}_{part}": items for name, parts in protocols.items() for part, items in parts.items()}
        metadata[tfds_format.INDEX] = {
            split: tfds_format.listing(
                [[example.embedding is not None] for example in items],
                [len(example.aligned.sensor) for example in items],
                [class_names.index(example.recording.label) for example in items],
                [_subject(example.recording) for example in items],
            )
            for split, items in members.items()
        }
        return {split: self._generate_examples(items) for split, items in members.items()}

    def _refuse_missing_embeddings(self, report: dict[str, Any]) -> None:
        """Rows with a clip but no current embedding are built without video only when the build is told to."""
        lacking = report["without_embedding"]
        if not lacking or self._allow_missing_embeddings:
            return
        kinds = collections.Counter(row["reason"] for row in lacking)
        raise errors.UserError(
            f"{len(lacking)} rows name a clip but {self._extraction_dir} holds no current embedding of it "
            f"({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))}; row {lacking[0]['row']} "
            f"({lacking[0]['id']}): {lacking[0]['detail']}): extract them (python -m "
            "data_builders.recordings.extract_embeddings, which re-extracts what changed), or build those rows "
            "without video with --allow_missing_embeddings"
        )

    def _generate_examples(self, items: list[_Example]) -> Iterator:
        shape = self._embedding_shape()
        for example in items:
            recording = example.recording
            record = {
                "sensor": example.aligned.sensor,
                "sensor_mask": example.aligned.mask,
                "sensor_present": np.ones(len(recording.streams), bool),
                "camera_mask": np.asarray([example.embedding is not None]),
                "label": recording.label,
                "subject": _subject(recording),
                "scene": 0,
                "session": recording.session,
                "trial": recording.id,
                "groups": json.dumps(recording.groups, sort_keys=True),
            }
            if shape is not None:
                embedding = np.zeros(shape, np.float16)
                if example.embedding is not None:
                    with np.load(example.embedding) as stored:
                        embedding[0] = stored[self.builder_config.embedding]
                record["embedding"] = embedding
            yield recording.id, record


def _subject(recording: manifest.Recording) -> int:
    return -1 if recording.subject is None else recording.subject


def _parse(
    recordings: list[manifest.Recording],
    extraction_dir: str | None,
    embedding_states: dict[str, tuple[str, str]],
    config: RecordingsConfig,
    class_names: tuple[str, ...] | None,
    min_coverage: float,
    max_gap_periods: float,
) -> tuple[list[_Example], tuple[str, ...], dict[str, Any]]:
    """(the usable rows aligned, the class names, the build report): every row skipped is listed with its reason.

    The example's channels are those most rows have, in the order most of them list them (a row listing the same
    streams in another order is reordered); a row with other channels is skipped. A row whose clip has no current
    embedding (`embedding_states`, by row id: never extracted, or extracted from other inputs than the row's now) is
    kept without video and listed.
    """
    counts: collections.Counter = collections.Counter(rows=len(recordings))
    skipped: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    alignment: dict[str, dict[str, int]] = {}
    names = class_names or tuple(sorted({r.label for r in recordings if r.label is not None}))
    aligned_rows, without_embedding = [], []

    def skip(recording: manifest.Recording, reason: str, detail: str) -> None:
        skipped[reason].append({"row": recording.row, "id": recording.id, "detail": detail})

    for recording in recordings:
        if recording.label is None:
            skip(recording, "no_label", "the 'label' column is empty")
            continue
        if recording.label not in names:
            skip(recording, "unknown_label", f"{recording.label!r} is none of the {len(names)} classes")
            continue
        try:
            aligned_rows.append(
                (recording, sensors.align(recording, config.sensor_rate_hz, min_coverage, max_gap_periods))
            )
        except errors.UserError as error:  # resampling's own refusals (too few timestamps) included
            skip(recording, getattr(error, "reason", "unreadable_sensors"), str(error))
    layouts = collections.Counter(frozenset(aligned.channel_names) for _, aligned in aligned_rows)
    majority = max(layouts, key=layouts.get) if layouts else frozenset()  # the first of equally common layouts
    orders = collections.Counter(
        aligned.channel_names for _, aligned in aligned_rows if frozenset(aligned.channel_names) == majority
    )
    order = max(orders, key=orders.get) if orders else ()  # the most common order of those channels
    reference = next((aligned for _, aligned in aligned_rows if aligned.channel_names == order), None)
    examples = []
    for recording, aligned in aligned_rows:
        if frozenset(aligned.channel_names) != majority:
            skip(
                recording,
                "different_channels",
                f"channels {list(aligned.channel_names)}, not {list(reference.channel_names)} "
                f"(those of {layouts[majority]} of {len(aligned_rows)} rows)",
            )
            continue
        if aligned.channel_names != reference.channel_names:
            aligned = sensors.in_channel_order(aligned, reference.channel_names)
            counts["streams_reordered"] += 1
        found = {kind: count for kind, count in aligned.report.items() if count and kind not in ("rows", "segments")}
        if found:
            alignment[recording.id] = found
        embedding = None
        if extraction_dir and recording.clip is not None:
            state, detail = embedding_states[recording.id]
            if state in ("current", "unverified"):
                embedding = os.path.join(extraction_dir, recording.id + ".npz")
                if state == "unverified":
                    counts["embeddings_unverified"] += 1
            elif state == "undecodable":
                counts["undecodable_clip"] += 1
            else:
                reason = "stale_embedding" if state == "changed" else "missing_embedding"
                counts[reason] += 1
                without_embedding.append({"row": recording.row, "id": recording.id, "reason": reason, "detail": detail})
        examples.append(_Example(recording, aligned, embedding))
    counts["examples"] = len(examples)
    counts.update({f"skipped_{reason}": len(rows) for reason, rows in skipped.items()})
    report = {
        **dict(sorted(counts.items())),
        "skipped": dict(skipped),
        "without_embedding": without_embedding,
        "alignment_per_example": alignment,
        "alignment_totals": dict(sum(map(collections.Counter, alignment.values()), collections.Counter())),
    }
    return examples, names, report


def _skip_counts(report: dict[str, Any]) -> str:
    """'3 low_coverage, 1 missing_file' (or 'none') for an error message."""
    return ", ".join(f"{len(rows)} {reason}" for reason, rows in sorted(report["skipped"].items())) or "none"


def _normalization(examples: list[_Example]) -> dict[str, list[float]]:
    """Per-channel mean and std over the recorded steps of a protocol's training examples."""
    statistics = tfds_format.Statistics(len(examples[0].aligned.channel_names))
    for example in examples:
        statistics.add(example.aligned.sensor[example.aligned.mask])  # [S, C]: the steps every stream recorded
    return statistics.result()
