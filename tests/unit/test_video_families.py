"""Every video-language family extraction supports, each through its tiny random model built in code.

Per family: a context before the video reaches the video tokens, batching with other prompt lengths (left padding,
Qwen's 3-D positions) changes nothing, the stored middle layer is the model's own hidden state, and frame_means row
k is frame k (changing the last frame changes only the last row: each family's vision tower sees one frame, or
Qwen's one temporal group, at a time). Then the whole path per family: extraction -> TFDS build -> training.
"""

import json
import os

import numpy as np
import pytest

from data_builders import extraction
from data_builders.mmact import prompts, synthetic_tree
from harjax import errors
from harjax.video import decoding, extractor as extractor_lib, families, tiny_models

FAMILIES = sorted(tiny_models.TINY_FAMILIES)


CONTEXT = "The person is in a crowded office with other people walking around. "


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for index in range(2):
        paths.append(str(root / f"clip{index}.mp4"))
        synthetic_tree.write_clip(paths[-1], index, np.random.default_rng(index), frames=24)
    return paths


@pytest.fixture(scope="module", params=FAMILIES)
def family_extractor(request, tmp_path_factory):
    model_dir = tiny_models.save_tiny_model(
        str(tmp_path_factory.mktemp(request.param)), extra_words=prompts.vocabulary(), family=request.param
    )
    return request.param, extractor_lib.Extractor(model_dir, "cpu")


def test_the_family_comes_from_the_models_config(family_extractor):
    model_type, extractor = family_extractor
    assert extractor.family is families.BY_MODEL_TYPE[model_type]
    metadata = extractor.metadata("m", "context", {"1": CONTEXT})
    assert metadata["family"] == extractor.family.name and metadata["frame_input"] == extractor.family.frame_input
    assert CONTEXT in metadata["prompts"]["1"]


def test_context_before_the_video_reaches_its_tokens_and_batching_changes_nothing(family_extractor, clips):
    _, extractor = family_extractor
    plain, context = decoding.ClipJob("a", clips[0], ""), decoding.ClipJob("a", clips[0], CONTEXT)
    (alone,) = extractor.embed([decoding.decode(plain)])
    batched = extractor.embed([decoding.decode(job) for job in (context, plain)])
    for kind in extractor_lib.EMBEDDING_KINDS:
        assert alone[kind].shape == ((8, 32) if kind == "frame_means" else (32,)), kind
        np.testing.assert_allclose(alone[kind], batched[1][kind], atol=3e-3, err_msg=kind)
        assert np.abs(batched[0][kind].astype(np.float32) - alone[kind].astype(np.float32)).max() > 1e-3, kind


def test_the_middle_layer_is_the_models_own_hidden_state(family_extractor, clips):
    import torch

    _, extractor = family_extractor
    decoded = decoding.decode(decoding.ClipJob("a", clips[1], CONTEXT))
    (ours,) = extractor.embed([decoded])
    inputs = extractor.preprocess([decoded])
    with torch.inference_mode():
        hidden = extractor.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    video = hidden[extractor.middle_layer][0, inputs["input_ids"][0] == extractor.video_token_id]
    frames = extractor.family.frame_tokens(video, inputs, 0)  # [8, tokens per frame, d]
    assert frames.shape[0] == 8 and frames.shape[0] * frames.shape[1] >= video.shape[0] - 1
    np.testing.assert_allclose(ours["video_mean_middle"], frames.mean((0, 1)).numpy(), atol=3e-3)
    np.testing.assert_allclose(ours["last_token"], hidden[-1][0, -1].numpy(), atol=3e-3)


def test_frame_means_row_k_is_frame_k(family_extractor, clips):
    _, extractor = family_extractor
    decoded = decoding.decode(decoding.ClipJob("a", clips[0], CONTEXT))
    changed_frames = decoded.frames.copy()
    changed_frames[-1] = 255 - changed_frames[-1]
    changed = decoding.DecodedClip(decoded.job, changed_frames, decoded.indices, decoded.interval_s)
    before, after = (extractor.embed([clip])[0]["frame_means"].astype(np.float32) for clip in (decoded, changed))
    np.testing.assert_allclose(before[:-1], after[:-1], atol=1e-3)  # causal: earlier frames cannot see the last
    assert np.abs(before[-1] - after[-1]).max() > 1e-3


def test_an_unsupported_model_type_is_refused_before_any_clip_is_read(tmp_path):
    model_dir = tmp_path / "image_only"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llava"}))
    job = decoding.ClipJob("a", str(tmp_path / "no_such_clip.mp4"), "")
    with pytest.raises(ValueError, match=r"model_type 'llava'.*supported: llava_onevision, qwen2_5_vl, qwen2_vl"):
        extraction.extract([job], str(tmp_path / "out"), str(model_dir), "plain", {"0": ""})
    assert not os.path.exists(tmp_path / "out" / "metadata.json")
    (model_dir / "config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    with pytest.raises(errors.UserError, match=r"no_such_family.*a supported family \(llava_onevision, qwen2_5_vl"):
        extraction.extract([job], str(tmp_path / "out"), str(model_dir), "plain", {"0": ""})


def test_a_folder_without_a_family_is_video_llavas(tmp_path):
    """Extractions written before families were recorded keep working, and another family's rerun is refused."""
    (tmp_path / "metadata.json").write_text(json.dumps({"model": "m", "prompt_set": "plain"}))
    assert extraction.read_metadata(str(tmp_path))["family"] == "video_llava"
    extraction.check_metadata(str(tmp_path), {"model": "m", "prompt_set": "plain", **families.LEGACY_METADATA})
    other = {"model": "m", "prompt_set": "plain", "family": "qwen_vl", "frame_input": families.QwenVL.frame_input}
    with pytest.raises(ValueError, match=r"other settings \(family, frame_input\)"):
        extraction.check_metadata(str(tmp_path), other)
