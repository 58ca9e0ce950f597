"""Builds the MMAct dataset from dummy_data/ (a synthetic tree with the release's defects) and checks it.

tfds.testing.DatasetBuilderTestCase needs TensorFlow, so this is plain pytest building into a temporary dir.
"""

import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_builders.mmact  # noqa: F401  (registers 'mmact')
from data_builders import extraction
from data_builders.mmact import build, extract_embeddings, layout, make_dummy_data
from harjax import errors
from harjax.video import decoding, extractor as extractor_lib

CONFIG = make_dummy_data.TFDS_CONFIG


def _build(manual_dir, data_dir):
    return build.build(str(manual_dir), os.path.join(manual_dir, "embeddings"), str(data_dir), CONFIG)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory, report = _build(make_dummy_data.DUMMY_DATA, tmp_path_factory.mktemp("tfds"))
    return tfds.builder_from_directory(directory), report, directory


def test_split_sizes_follow_the_protocols(dataset):
    builder, report, _ = dataset
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    trials = 2 * 3 * 2 * 2  # subjects (1, 17) x scenes (1, 2, 3) x sessions (1, 5) x 2 actions
    assert sizes == {
        "cross_subject_train": 12,
        "cross_subject_test": 12,
        "cross_view_train": trials,
        "cross_view_test": trials,
        "cross_scene_train": 16,
        "cross_scene_test": 8,
        "cross_session_train": 12,
        "cross_session_test": 12,
    }
    assert report["examples"] == sizes


def test_examples_hold_labels_sensors_and_per_camera_embeddings(dataset):
    builder, _, _ = dataset
    source = builder.as_data_source("cross_subject_test")
    names = builder.info.features["label"].names
    assert tuple(names) == layout.CLASSES
    seen = set()
    for example in source:
        seen.add(names[example["label"]])
        assert example["subject"] == 17
        assert example["sensor"].shape[1] == 12 and 90 <= example["sensor"].shape[0] <= 200  # 2-4 s at 50 Hz
        assert example["sensor"].dtype == np.float32 and example["sensor_present"].shape == (4,)
        assert example["embedding"].shape == (4, 32) and example["embedding"].dtype == np.float16
        assert (np.abs(example["embedding"][~example["camera_mask"]]) == 0).all()
        assert (np.abs(example["embedding"][example["camera_mask"]]).sum(-1) > 0).all()
    assert {"using_phone_desk", "talking_on_phone_desk", "walking"} <= seen


def test_cross_view_splits_cameras_not_trials(dataset):
    builder, _, _ = dataset
    train, test = builder.as_data_source("cross_view_train"), builder.as_data_source("cross_view_test")
    assert all(not example["camera_mask"][3] for example in train)
    assert all(not example["camera_mask"][:3].any() for example in test)
    assert sum(example["camera_mask"][3] for example in test) == len(test) - 1  # one trial lacks cam4


def test_every_defect_is_repaired_or_counted(dataset):
    _, report, directory = dataset
    manifest = json.load(open(os.path.join(make_dummy_data.DUMMY_DATA, "synthetic_manifest.json")))
    quirks = manifest["quirks"]
    assert report["trials_found"] == report["trials_kept"] == len(manifest["trials"])
    assert report["missing_file"] == len(quirks["missing_sensor_file"]) == 1
    assert report["empty_file"] == len(quirks["empty_sensor_file"]) == 1
    assert report["duplicate_timestamp"] == quirks["duplicate_rows"]
    assert report["unsorted_file"] >= 1 and report["timestamp_without_fraction"] > 0
    assert report["duplicate_case_file"] == quirks["duplicate_case_file"] == 1
    assert report["missing_camera"] == len(quirks["missing_camera"]) == 1
    assert report["undecodable_video"] == len(quirks["undecodable_clip"]) == 1
    assert json.load(open(os.path.join(directory, build.REPORT))) == report


def test_missing_and_empty_streams_are_masked_and_zero(dataset):
    builder, _, _ = dataset
    masks = [
        example["sensor_present"].tolist() + [example["sensor"]]
        for example in builder.as_data_source("cross_view_train")
    ]
    no_gyro = [mask for mask in masks if mask[:4] == [True, True, False, True]]
    no_orientation = [mask for mask in masks if mask[:4] == [True, True, True, False]]
    assert len(no_gyro) == len(no_orientation) == 1
    assert sum(False not in mask[:4] for mask in masks) == len(masks) - 2
    assert not no_gyro[0][4][:, 6:9].any() and not no_orientation[0][4][:, 9:].any()


def test_normalisation_statistics_come_from_each_protocols_train_split(dataset):
    builder, _, _ = dataset
    stats = builder.info.metadata["normalization"]
    assert set(stats) == set(layout.PROTOCOLS)
    for values in stats.values():
        assert len(values["mean"]) == len(values["std"]) == 12 and min(values["std"]) > 0
    train = builder.as_data_source("cross_subject_train")
    acc_phone_x = np.concatenate([example["sensor"][:, 0] for example in train if example["sensor_present"][0]])
    assert stats["cross_subject"]["mean"][0] == pytest.approx(acc_phone_x.mean(), rel=1e-4, abs=1e-4)
    assert stats["cross_subject"]["std"][0] == pytest.approx(acc_phone_x.std(), rel=1e-3)


def test_frames_are_the_jpegs_the_model_saw(dataset):
    builder, _, _ = dataset
    example = next(e for e in builder.as_data_source("cross_view_train") if e["camera_mask"][:3].sum() == 3)
    trial = example["trial"].decode()
    for camera in range(4):
        if not example["camera_mask"][camera]:
            assert all(frame == b"" for frame in example["frames"][camera])
            continue
        name = f"{trial}_cam{camera + 1}"
        with np.load(os.path.join(make_dummy_data.DUMMY_DATA, "embeddings", "context", name + ".npz")) as stored:
            indices = stored["frame_indices"]
        clip = next(c for c in extract_embeddings.list_clips(make_dummy_data.DUMMY_DATA) if c.name == name)
        originals, _ = decoding.read_frames(clip.path, indices)
        for jpeg, original in zip(example["frames"][camera], originals, strict=True):
            decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)
            assert decoded.shape == original.shape and np.abs(decoded - original).mean() < 8  # JPEG-close


def test_unusable_trials_are_skipped_and_missing_embeddings_counted(tmp_path):
    manual_dir = tmp_path / "mmact"
    shutil.copytree(make_dummy_data.DUMMY_DATA, manual_dir)
    embeddings = manual_dir / "embeddings" / "context"
    doomed = layout.Trial(17, 1, 1, "walking")  # a trial without injected defects
    for stream in layout.SENSOR_STREAMS:
        os.remove(manual_dir / stream / "subject17" / "scene1" / "session1" / "walking.csv")
    for name in os.listdir(embeddings):
        if name.startswith(doomed.key):
            os.remove(embeddings / name)
    os.remove(embeddings / "subject17_scene2_session5_walking_cam2.npz")
    _, report = _build(manual_dir, tmp_path / "tfds")
    assert report["skipped_nothing_usable"] == 1
    assert report["trials_kept"] == report["trials_found"] - 1
    assert report["missing_embedding"] == 4 + 1  # the skipped trial's four clips, and the one removed


def test_missing_embeddings_dir_says_what_to_run(tmp_path):
    with pytest.raises(errors.UserError, match="extract the 'context' embeddings first"):
        build.build(make_dummy_data.DUMMY_DATA, str(tmp_path / "nowhere"), str(tmp_path / "tfds"), CONFIG)


def test_importing_the_package_registers_mmact():
    assert "mmact" in tfds.list_builders(with_community_datasets=False)


def test_another_sensor_rate_builds_its_own_config(tmp_path):
    directory, _ = build.build(
        make_dummy_data.DUMMY_DATA,
        os.path.join(make_dummy_data.DUMMY_DATA, "embeddings"),
        str(tmp_path),
        CONFIG,
        sensor_rate_hz=25,
    )
    assert f"{CONFIG}-25hz" in directory
    example = tfds.builder_from_directory(directory).as_data_source("cross_subject_test")[0]
    assert 45 <= len(example["sensor"]) <= 100  # 2-4 s at 25 Hz


def _rewrite_width(path, width, rng):
    with np.load(path) as stored:
        arrays = {
            name: (
                rng.standard_normal((*stored[name].shape[:-1], width)).astype(np.float16)
                if name in extractor_lib.EMBEDDING_KINDS
                else stored[name]
            )
            for name in stored
        }
    np.savez(path, **arrays)


def test_the_embedding_width_is_the_extractions_own(tmp_path):
    """Embeddings of another model (here 48 wide) build without a code change: the width comes from metadata."""
    manual_dir = tmp_path / "mmact"
    shutil.copytree(make_dummy_data.DUMMY_DATA, manual_dir)
    embeddings = manual_dir / "embeddings" / "context"
    rng = np.random.default_rng(0)
    for name in os.listdir(embeddings):
        if name.endswith(".npz"):
            _rewrite_width(embeddings / name, 48, rng)
    metadata = json.load(open(embeddings / extraction.METADATA)) | {"hidden_size": 48}
    json.dump(metadata, open(embeddings / extraction.METADATA, "w"))
    directory, _ = build.build(
        str(manual_dir), str(manual_dir / "embeddings"), str(tmp_path / "tfds"), "context-last_token"
    )
    example = tfds.builder_from_directory(directory).as_data_source("cross_subject_test")[0]
    assert example["embedding"].shape == (4, 48)


def test_an_embedding_of_another_width_stops_the_build_naming_the_file(tmp_path):
    manual_dir = tmp_path / "mmact"
    shutil.copytree(make_dummy_data.DUMMY_DATA, manual_dir)
    odd = manual_dir / "embeddings" / "context" / "subject17_scene2_session5_walking_cam2.npz"
    _rewrite_width(odd, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match=rf"{odd}: 'video_mean_last' has shape \(64,\), but .* gives \(32,\)"):
        _build(manual_dir, tmp_path / "tfds")
    assert not glob.glob(str(tmp_path / "tfds" / "mmact" / "*" / "*" / "*.array_record*"))  # nothing generated


def test_the_stored_listing_matches_the_records_in_order(dataset):
    """Readers list views from metadata['index'] without decoding records, so it must describe them in order."""
    builder, _, _ = dataset
    for split in builder.info.splits:
        listing, source = builder.info.metadata["index"][split], builder.as_data_source(split)
        assert len(listing["label"]) == len(source)
        for index, example in enumerate(source):
            assert listing["camera_mask"][index] == example["camera_mask"].tolist()
            assert listing["sensor_length"][index] == len(example["sensor"])
            assert listing["label"][index] == example["label"]
            assert listing["subject"][index] == example["subject"]
