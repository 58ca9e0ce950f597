"""MMAct as a TFDS dataset: one example per trial with aligned sensors and per-camera Video-LLaVA embeddings.

Built without TensorFlow, to array_record:
    python -m data_builders.mmact.build --manual_dir=M --embeddings_dir=E --data_dir=D [--config=NAME]
and read with tfds.data_source / tfds.builder_from_directory (harjax.data.tfds_source does).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_builders import extraction
from data_builders.mmact import layout, prompts, sensors
from harjax.data import tfds_format
from harjax.video import decoding, extractor as extractor_lib, families

SENSOR_CHANNELS = tuple(
    f"{stream.removesuffix('_clip')}_{axis}" for stream in layout.SENSOR_STREAMS for axis in ("x", "y", "z")
)
SPLITS = tuple(f"{protocol}_{part}" for protocol in layout.PROTOCOLS for part in ("train", "test"))
_FRAME_SHORT_EDGE = 224  # what Video-LLaVA sees; frames are stored no larger


@dataclasses.dataclass
class MMActConfig(tfds.core.BuilderConfig):
    prompt_set: str = "context"  # a set of data_builders/mmact/prompts.py, or learned_<protocol> (prompt tuning)
    embedding: str = "video_mean_last"  # one of extractor_lib.EMBEDDING_KINDS
    frames: bool = False  # also store the 8 frames per camera the model saw, as JPEG
    sensor_rate_hz: float = tfds_format.DEFAULT_RATE_HZ


def _builder_configs() -> list[MMActConfig]:
    configs = [
        MMActConfig(
            name=tfds_format.config_name(prompt_set, kind),
            prompt_set=prompt_set,
            embedding=kind,
            description=f"video-language model '{kind}' embeddings under the '{prompt_set}' prompts",
        )
        for prompt_set in [*prompts.PROMPT_SETS, *map(tfds_format.learned_prompt_set, layout.PROTOCOLS)]
        for kind in extractor_lib.EMBEDDING_KINDS
    ]
    configs.append(
        MMActConfig(
            name="context-video_mean_last-frames",
            frames=True,
            description="the default config plus the 8 sampled frames per camera as JPEG",
        )
    )
    return configs


@dataclasses.dataclass
class _ParsedTrial:
    trial: layout.Trial
    sensor: np.ndarray  # [T, 12] float32; T = 0 when no stream is usable
    sensor_present: np.ndarray  # [4] bool
    embeddings: dict[int, str]  # camera -> .npz
    clips: dict[int, str]  # camera -> .mp4


class Builder(tfds.core.GeneratorBasedBuilder):
    """MMAct (Kong et al., ICCV 2019) trials with Video-LLaVA embeddings; manual download.

    The embedding width d is the extraction's own (its metadata.json), so embeddings of any model build without
    a code change: Video-LLaVA-7B gives 4096, the tiny test model 32.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Trials with aligned 50 Hz sensors, per-camera embeddings, four protocols.",
        "1.1.0": "Records in generation order with their listing (camera mask, sensor length, label, "
        "subject) "
        "in the metadata, so readers list views without decoding records; the embedding "
        "width is the extraction's own.",
    }
    BUILDER_CONFIGS = _builder_configs()
    DEFAULT_CONFIG_NAME = "context-video_mean_last"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    MMAct is for academic use only and distributed on request: https://mmact19.github.io/2019/
    Unpack the trimmed release into manual_dir so that it holds the four sensor folders
    (acc_phone_clip, acc_watch_clip, gyro_clip, orientation_clip) and the trimmed clips
    (<video folder>/subjectN/camC/sceneM/sessionL/<action>.mp4; the folder is found among RGB, Video_trimmed,
    trimmed, video or given with video_root=). Extract the embeddings first with
    python -m data_builders.mmact.extract_embeddings --manual_dir=M --output_dir=E --prompt_set=P
    and pass embeddings_dir=E.
    """

    def __init__(self, *, embeddings_dir: str, video_root: str | None = None, **kwargs: Any):
        self._embeddings_dir = embeddings_dir  # the extractor's --output_dir (one folder per prompt set inside)
        self._video_root = video_root
        super().__init__(**kwargs)

    def _embedding_dim(self) -> int:
        return extraction.embedding_dim(os.path.join(self._embeddings_dir, self.builder_config.prompt_set))

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        cameras = len(layout.CAMERAS)
        dim = self._embedding_dim()
        embedding_shape = (cameras, families.NUM_FRAMES, dim) if config.embedding == "frame_means" else (cameras, dim)
        features = tfds_format.features(
            SENSOR_CHANNELS,
            layout.SENSOR_STREAMS,
            layout.CLASSES,
            config.sensor_rate_hz,
            cameras,
            embedding_shape,
            f"'{config.embedding}' per camera {layout.CAMERAS}",
        )
        if config.frames:
            features["frames"] = tfds.features.Tensor(
                shape=(cameras, families.NUM_FRAMES),
                dtype=np.object_,
                doc="JPEG bytes of the frames the model saw (b'' for a camera without a clip)",
            )
        # Records stay in generation order, the order of the stored listing (metadata 'index') the reader lists
        # its views from without decoding any record.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            homepage="https://mmact19.github.io/2019/",
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        manual_dir = os.fspath(dl_manager.manual_dir)
        config = self.builder_config
        embeddings_dir = os.path.join(self._embeddings_dir, config.prompt_set)
        shape = self.info.features["embedding"].shape[1:]
        trials, report = _parse_release(manual_dir, embeddings_dir, config, shape, self._video_root)
        self.info.metadata["build_report"] = report
        self.info.metadata["normalization"] = {
            protocol: _normalization(trials, protocol) for protocol in layout.PROTOCOLS
        }
        self.info.metadata["sensor_channels"] = list(SENSOR_CHANNELS)
        self.info.metadata["sensor_rate_hz"] = config.sensor_rate_hz
        self.info.metadata["cameras"] = list(layout.CAMERAS)
        self.info.metadata["embeddings"] = extraction.read_metadata(embeddings_dir)
        members = {split: _split_members(trials, *split.rsplit("_", 1)) for split in SPLITS}
        self.info.metadata[tfds_format.INDEX] = {
            split: tfds_format.listing(
                [[c in parsed.embeddings and c in kept for c in layout.CAMERAS] for parsed, kept in pairs],
                [len(parsed.sensor) for parsed, _ in pairs],
                [layout.CLASSES.index(parsed.trial.action) for parsed, _ in pairs],
                [parsed.trial.subject for parsed, _ in pairs],
            )
            for split, pairs in members.items()
        }
        return {split: self._generate_examples(pairs) for split, pairs in members.items()}

    def _generate_examples(self, members: list[tuple[_ParsedTrial, list[int]]]) -> Iterator:
        config = self.builder_config
        for parsed, cameras in members:
            trial = parsed.trial
            example = {
                "sensor": parsed.sensor,
                "sensor_present": parsed.sensor_present,
                "label": trial.action,
                "subject": trial.subject,
                "scene": trial.scene,
                "session": trial.session,
                "trial": trial.key,
            }
            shape = self.info.features["embedding"].shape
            embedding = np.zeros(shape, np.float16)
            camera_mask = np.zeros(len(layout.CAMERAS), bool)
            frames = np.full((len(layout.CAMERAS), families.NUM_FRAMES), b"", dtype=object)
            for index, camera in enumerate(layout.CAMERAS):
                if camera not in cameras or camera not in parsed.embeddings:
                    continue
                with np.load(parsed.embeddings[camera]) as stored:
                    embedding[index], camera_mask[index] = stored[config.embedding], True  # shape checked in parsing
                    indices = stored["frame_indices"]
                if config.frames:
                    frames[index] = _jpeg_frames(parsed.clips[camera], indices)
            example |= {"embedding": embedding, "camera_mask": camera_mask}
            if config.frames:
                example["frames"] = frames
            yield trial.key, example


def _split_members(trials: list[_ParsedTrial], protocol: str, part: str) -> list[tuple[_ParsedTrial, list[int]]]:
    """The trials of one protocol split, in order, each with the cameras it may use there."""
    members = []
    for parsed in trials:
        trial = parsed.trial
        if layout.PROTOCOLS[protocol][0] == "camera":  # cross_view: every trial, cameras by split
            cameras = [c for c in layout.CAMERAS if layout.is_test(protocol, trial, c) == (part == "test")]
            members.append((parsed, cameras))
        elif layout.is_test(protocol, trial) == (part == "test"):
            members.append((parsed, list(layout.CAMERAS)))
    return members


def _jpeg_frames(path: str, indices: np.ndarray) -> list[bytes]:
    """The clip's frames at `indices` (those the model saw), as JPEG no larger than Video-LLaVA's input."""
    from PIL import Image

    frames, _ = decoding.read_frames(path, indices)
    encoded = []
    for frame in frames:
        image = Image.fromarray(frame)
        scale = _FRAME_SHORT_EDGE / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def _check_embedding_shape(path: str, kind: str, shape: tuple[int, ...]) -> None:
    """Checks that every stored clip has the extraction's width.

    A file from another model stops the build before any example is written.
    """
    with np.load(path) as stored:
        found = stored[kind].shape
    if found != shape:
        raise ValueError(
            f"{path}: '{kind}' has shape {found}, but the extraction's metadata.json gives {shape} "
            "(another model's embeddings in the same folder?); re-extract it"
        )


def _parse_release(
    manual_dir: str, embeddings_dir: str, config: MMActConfig, embedding_shape: tuple[int, ...], video_root: str | None
) -> tuple[list[_ParsedTrial], dict[str, Any]]:
    """Reads every trial's sensors once, finds its embeddings and checks their shapes.

    Sensor defects are repaired and counted.
    """
    counts: collections.Counter = collections.Counter()
    scans = {stream: layout.scan_sensor_stream(manual_dir, stream) for stream in layout.SENSOR_STREAMS}
    videos = layout.scan_videos(layout.find_video_root(manual_dir, video_root))
    counts["unknown_action_file"] = sum(len(scan.unknown_actions) for scan in [*scans.values(), videos])
    undecodable = extraction.undecodable(embeddings_dir)
    base_prompt_set = extraction.base_prompt_set(extraction.read_metadata(embeddings_dir))
    trials = []
    for trial in layout.iter_trials([*scans.values(), videos]):
        counts["trials_found"] += 1
        paths = []
        for stream in layout.SENSOR_STREAMS:
            files = sorted(scans[stream].files.get(trial, []), key=lambda found: -os.path.getsize(found.path))
            counts["duplicate_case_file"] += max(len(files) - 1, 0)  # keep the largest of case variants
            paths.append(files[0].path if files else None)
        aligned = sensors.read_trial(paths, config.sensor_rate_hz, counts, layout.ANGULAR_STREAMS)
        sensor, present = (
            aligned
            if aligned is not None
            else (np.zeros((0, len(SENSOR_CHANNELS)), np.float32), np.zeros(len(layout.SENSOR_STREAMS), bool))
        )
        clips = {}
        for found in sorted(videos.files.get(trial, []), key=lambda found: -os.path.getsize(found.path)):
            if found.camera in clips:
                counts["duplicate_case_file"] += 1  # the same clip under two spellings: the larger is kept
            else:
                clips[found.camera] = found.path
        counts["missing_camera"] += len(layout.CAMERAS) - len(clips)
        embeddings = {}
        for camera in clips:
            context = prompts.context(base_prompt_set, trial.scene)
            job = decoding.ClipJob(layout.clip_name(trial, camera), clips[camera], context)
            state, _ = extraction.stored_state(embeddings_dir, job)
            if state in ("current", "unverified"):
                path = os.path.join(embeddings_dir, job.name + ".npz")
                _check_embedding_shape(path, config.embedding, embedding_shape)
                embeddings[camera] = path
            elif state == "changed":  # made from another clip file or context: never read as this one's
                counts["stale_embedding"] += 1
            else:
                counts["undecodable_video" if job.name in undecodable else "missing_embedding"] += 1
        if not present.any() and not embeddings:
            counts["skipped_nothing_usable"] += 1
            continue
        counts["trials_kept"] += 1
        trials.append(_ParsedTrial(trial, sensor, present, embeddings, clips))
    return trials, dict(sorted(counts.items()))


def _normalization(trials: list[_ParsedTrial], protocol: str) -> dict[str, list[float]]:
    """Per-channel mean and std over the protocol's training trials, each stream only where it was recorded."""
    field = layout.PROTOCOLS[protocol][0]
    train = [parsed for parsed in trials if field == "camera" or not layout.is_test(protocol, parsed.trial)]
    statistics = tfds_format.Statistics(len(SENSOR_CHANNELS))
    for parsed in train:
        statistics.add(parsed.sensor, np.repeat(parsed.sensor_present, sensors.AXES))  # [12] channels of its streams
    return statistics.result()
