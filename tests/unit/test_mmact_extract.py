"""The embedding extractor end to end on the tiny offline Video-LLaVA: kinds, prompts, resume, shards, failures."""

import json
import os

import numpy as np
import pytest

from data_builders import extraction
from data_builders.mmact import extract_embeddings, prompts, synthetic_tree
from harjax import errors
from harjax.video import decoding, extractor as extractor_lib, tiny_models

SPEC = synthetic_tree.TreeSpec(subjects=(1, 2, 17), scenes=(1, 3), sessions=(1,), actions_per_scene=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    manual_dir, model_dir = str(root / "mmact"), str(root / "model")
    manifest = synthetic_tree.write_tree(manual_dir, SPEC)
    tiny_models.save_tiny_model(model_dir, extra_words=prompts.vocabulary())
    return manual_dir, model_dir, manifest, root


def _extract(setup, output, prompt_set="context", **kwargs):
    manual_dir, model_dir, _, root = setup
    return extract_embeddings.extract(manual_dir, str(root / output), model_dir, prompt_set, batch_size=4, **kwargs)


def test_extracts_every_decodable_clip_and_reports_the_rest(setup):
    _, _, manifest, root = setup
    summary = _extract(setup, "full")
    clips = extract_embeddings.list_clips(setup[0])
    assert summary["clips_in_shard"] == len(clips) == len(manifest["trials"]) * 4 - 1
    (failure,) = summary["failed"]
    assert failure["path"] == manifest["quirks"]["undecodable_clip"][0]
    directory = root / "full" / "context"
    stored = sorted(name for name in os.listdir(directory) if name.endswith(".npz"))
    assert len(stored) == summary["extracted"] == len(clips) - 1
    with np.load(directory / stored[0]) as arrays:
        assert {"video_mean_last", "video_mean_middle", "last_token", "frame_means", "frame_indices"} <= set(arrays)
        assert arrays["video_mean_last"].shape == (32,) and arrays["frame_means"].shape == (8, 32)
        assert arrays["video_mean_last"].dtype == np.float16
        np.testing.assert_allclose(
            arrays["frame_means"].astype(np.float32).mean(0), arrays["video_mean_last"].astype(np.float32), atol=2e-3
        )
        assert arrays["frame_indices"].tolist() == [0, 2, 4, 6, 8, 10, 12, 14]  # 16-frame clips
    metadata = json.load(open(directory / "metadata.json"))
    assert metadata["prompt_set"] == "context" and "crowded office" in metadata["prompts"]["1"]
    assert (directory / "failures_shard0.jsonl").exists()

    # A rerun finds everything done and the undecodable clip unchanged, so it loads no model (there is none at this
    # path) and reports the clip again; once the file changes it is decoded again, and fails again.
    manual_dir, _, _, _ = setup
    args = (manual_dir, str(root / "full"), str(root / "no_model_here"), "context")
    again = extract_embeddings.extract(*args, batch_size=4)
    assert again["skipped_done"] == len(clips) - 1 and again["extracted"] == 0
    assert again["skipped_undecodable"] == 1 and again["failed"] == summary["failed"]
    os.utime(failure["path"], ns=(0, 0))
    with pytest.raises(
        errors.UserError, match="no_model_here: no such folder"
    ):  # the changed clip is retried: the model is loaded
        extract_embeddings.extract(*args, batch_size=4)
    retried = _extract(setup, "full")
    assert retried["skipped_undecodable"] == 0 and [f["clip"] for f in retried["failed"]] == [failure["clip"]]


def test_context_prompts_change_the_embeddings(setup):
    """Context placed before <video> must reach the video tokens, and the last token reads the whole prompt."""
    _extract(setup, "prompts", prompt_set="plain")
    _extract(setup, "prompts", prompt_set="context")
    root = setup[3] / "prompts"
    name = next(n for n in os.listdir(root / "plain") if n.endswith(".npz"))
    with np.load(root / "plain" / name) as plain, np.load(root / "context" / name) as context:
        for kind in ("video_mean_last", "video_mean_middle", "last_token", "frame_means"):
            assert np.abs(plain[kind].astype(np.float32) - context[kind].astype(np.float32)).max() > 1e-3, kind


def test_shards_split_the_clips_and_together_cover_them(setup):
    first = _extract(setup, "sharded", num_shards=2, shard_index=0)
    second = _extract(setup, "sharded", num_shards=2, shard_index=1)
    assert first["clips_in_shard"] + second["clips_in_shard"] == len(extract_embeddings.list_clips(setup[0]))
    stored = [n for n in os.listdir(setup[3] / "sharded" / "context") if n.endswith(".npz")]
    assert len(stored) == first["extracted"] + second["extracted"]
    names = [clip.name for clip in extract_embeddings.list_clips(setup[0])]
    assert set(names[0::2]).isdisjoint(names[1::2]) and sorted(stored) == sorted(
        f"{name}.npz" for name in names if name + ".npz" in stored
    )
    with pytest.raises(ValueError, match="--shard_index=2 must be in"):
        _extract(setup, "sharded", num_shards=2, shard_index=2)


def test_decode_workers_give_the_batches_and_embeddings_of_decoding_in_process(setup):
    """Workers overlap decoding with the model; the batches keep the shard's order and the outputs are the same."""
    _, _, manifest, root = setup
    jobs = [decoding.ClipJob(clip.name, clip.path, "") for clip in extract_embeddings.list_clips(setup[0])]
    in_process = [clips for clips, _ in extraction.decoded_batches(jobs, 3, workers=0)]
    in_workers = [clips for clips, _ in extraction.decoded_batches(jobs, 3, workers=2)]
    assert [[clip.job for clip in batch] for batch in in_workers] == [jobs[i : i + 3] for i in range(0, len(jobs), 3)]
    for here, there in zip(sum(in_process, []), sum(in_workers, []), strict=True):
        assert here.error == there.error
        if here.error is None:
            assert np.array_equal(here.frames, there.frames) and np.array_equal(here.indices, there.indices)
    (broken,) = [clip for clip in sum(in_workers, []) if clip.error]
    assert broken.job.path == manifest["quirks"]["undecodable_clip"][0] and broken.frames is None

    summaries = {workers: _extract(setup, f"workers_{workers}", decode_workers=workers) for workers in (0, 2)}
    assert [len(summary["failed"]) for summary in summaries.values()] == [1, 1]
    names = sorted(n for n in os.listdir(root / "workers_0" / "context") if n.endswith(".npz"))
    assert names == sorted(n for n in os.listdir(root / "workers_2" / "context") if n.endswith(".npz"))
    for name in names:
        with (
            np.load(root / "workers_0" / "context" / name) as here,
            np.load(root / "workers_2" / "context" / name) as there,
        ):
            for kind in here.files:
                np.testing.assert_array_equal(here[kind], there[kind], err_msg=f"{name} {kind}")


def test_other_settings_into_the_same_folder_are_refused(setup, tmp_path):
    directory = tmp_path / "context"
    directory.mkdir()
    extraction.check_metadata(str(directory), {"model": "a", "prompt_set": "context"})
    with pytest.raises(ValueError, match=r"other settings \(model\)"):
        extraction.check_metadata(str(directory), {"model": "b", "prompt_set": "context"})


def test_frame_sampling_repeats_frames_of_short_clips():
    assert decoding.frame_indices(3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert decoding.frame_indices(183).tolist() == [0, 22, 45, 68, 91, 114, 137, 160]


def test_batching_prompts_of_different_lengths_changes_nothing(setup):
    """Left padding: a clip's embeddings are the same alone or batched with longer and shorter prompts."""
    manual_dir, model_dir, _, root = setup
    extract_embeddings.extract(manual_dir, str(root / "alone"), model_dir, "scene", batch_size=1)
    extract_embeddings.extract(manual_dir, str(root / "batched"), model_dir, "scene", batch_size=8)
    for name in sorted(os.listdir(root / "alone" / "scene"))[:12]:
        if not name.endswith(".npz"):
            continue
        with np.load(root / "alone" / "scene" / name) as alone, np.load(root / "batched" / "scene" / name) as batched:
            for kind in extractor_lib.EMBEDDING_KINDS:
                np.testing.assert_allclose(
                    alone[kind].astype(np.float32),
                    batched[kind].astype(np.float32),
                    atol=2e-3,
                    err_msg=f"{name} {kind}",
                )


def test_middle_layer_is_the_models_own_hidden_state(setup):
    import torch

    manual_dir, model_dir, _, _ = setup
    extractor = extractor_lib.Extractor(model_dir, "cpu")
    clip = extract_embeddings.list_clips(manual_dir)[0]
    decoded = decoding.decode(decoding.ClipJob(clip.name, clip.path, prompts.context("context", clip.trial.scene)))
    (ours,) = extractor.embed([decoded])
    inputs = extractor.preprocess([decoded])
    with torch.inference_mode():
        hidden = extractor.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    video = inputs["input_ids"][0] == extractor.video_token_id
    np.testing.assert_allclose(
        ours["video_mean_middle"].astype(np.float32),
        hidden[extractor.middle_layer][0, video].mean(0).numpy(),
        atol=2e-3,
    )
    np.testing.assert_allclose(ours["last_token"].astype(np.float32), hidden[-1][0, -1].numpy(), atol=2e-3)


@pytest.mark.parametrize(
    "codec, gop_size, suffix",
    [("libx264", 2, "mp4"), ("libx264", 250, "mp4"), ("mpeg4", 12, "avi")],  # short and long keyframe intervals
)
def test_seeking_to_the_sampled_frames_gives_the_frames_decoding_in_order_does(tmp_path, codec, gop_size, suffix):
    import av

    path = str(tmp_path / f"clip.{suffix}")
    synthetic_tree.write_clip(path, 3, np.random.default_rng(0), 120, (96, 64), 30.0, codec=codec, gop_size=gop_size)
    with av.open(path) as container:
        times = np.array([frame.time for frame in container.decode(video=0)])
    for start_s, end_s in [(None, None), (1.0, 3.0)]:
        positions = decoding.positions_in_span(path, start_s, end_s)
        inside = (times >= (start_s or 0)) & (times < (end_s or np.inf))
        np.testing.assert_array_equal(positions, np.flatnonzero(inside))  # the span from packets, not decoding
        indices = positions[decoding.frame_indices(len(positions))]
        sought, decoded = decoding.decode_frames(path, indices)
        in_order, decoded_in_order = decoding.decode_frames(path, indices, seek=False)
        assert sorted(sought) == sorted(in_order) == sorted(set(indices.tolist()))
        for position in sought:
            np.testing.assert_array_equal(sought[position], in_order[position])
        assert decoded <= decoded_in_order
        if gop_size == 2:  # a keyframe every other frame: about one or two frames decoded per sample
            assert decoded <= 2 * len(indices)
    frames, read = decoding.read_frames(path, start_s=1.0, end_s=3.0)
    assert frames.shape == (8, 64, 96, 3) and read.tolist() == sorted(read.tolist())
