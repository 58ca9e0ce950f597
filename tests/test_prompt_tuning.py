"""Prompt tuning on the tiny MMAct tree with the tiny Video-LLaVA: it learns, resumes, reproduces, and is guarded.

A learned prompt changes the stored embeddings, belongs to the protocol it was learned on (its extraction folder,
TFDS config and the runs that may read it) and is refused by a model of another family or width.
"""

import json
import os

import numpy as np
import pytest

from data_builders import extraction, prompt_tuning, soft_prompt
from data_builders.mmact import build, extract_embeddings, make_dummy_data, synthetic_tree, tiny_model
from harjax import errors
from harjax.data import tfds_source
from tests.conftest import small_config

STEPS = 16


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt_tuning")
    manual_dir = str(root / "mmact")
    synthetic_tree.write_tree(manual_dir, make_dummy_data.SPEC)
    model = tiny_model.save_tiny_model(str(root / "model"))
    return root, manual_dir, model


def _settings(tree, **changes):
    _, manual_dir, model = tree
    return prompt_tuning.Settings(
        model=model, dataset=manual_dir, protocol="cross_subject", num_tokens=4, learning_rate=3e-2, **changes
    )


def _learn(tree, output, steps=STEPS, settings=None, extractor=None):
    examples, classes = prompt_tuning.mmact_training_clips(tree[1], "cross_subject", "context")
    settings = settings or _settings(tree)
    return prompt_tuning.train(
        settings, examples, classes, str(output), steps, checkpoint_every=4, decode_workers=0, extractor=extractor
    )


@pytest.fixture(scope="module")
def learned(tree):
    root = tree[0]
    extractor = extraction.Extractor(tree[2], "cpu")
    metadata = _learn(tree, root / "prompt", extractor=extractor)
    return root / "prompt", metadata, extractor


@pytest.mark.slow
def test_the_loss_falls_and_only_training_clips_are_read(tree, learned):
    output, metadata, extractor = learned
    assert all(parameter.grad is None for parameter in extractor.model.parameters())  # the model stays frozen
    assert extractor.soft_prompt.vectors.grad is not None
    log = [json.loads(line) for line in open(output / prompt_tuning.LOG_FILE)]
    assert [row["step"] for row in log] == list(range(1, STEPS + 1))
    losses = [row["loss"] for row in log]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    examples, _ = prompt_tuning.mmact_training_clips(tree[1], "cross_subject", "context")
    assert metadata["training_clips"] == len(examples) and all("subject17" not in job.name for job, _ in examples)
    vectors, saved = soft_prompt.load(str(output / prompt_tuning.PROMPT_FILE))
    assert vectors.shape == (4, tiny_model.HIDDEN_SIZE) and saved["protocol"] == "cross_subject"
    assert saved["family"] == "video_llava" and saved["steps"] == STEPS


@pytest.mark.slow
def test_a_run_is_reproducible_from_its_seed_and_resumes_exactly(tree, learned):
    output = learned[0]
    final, _ = soft_prompt.load(str(output / prompt_tuning.PROMPT_FILE))
    _learn(tree, tree[0] / "resumed", steps=STEPS // 2)  # stopped halfway ...
    _learn(tree, tree[0] / "resumed")  # ... and run again to the end
    resumed, _ = soft_prompt.load(str(tree[0] / "resumed" / prompt_tuning.PROMPT_FILE))
    np.testing.assert_allclose(resumed, final, rtol=1e-5, atol=1e-6)
    log = [json.loads(line) for line in open(tree[0] / "resumed" / prompt_tuning.LOG_FILE)]
    assert [row["step"] for row in log] == list(range(1, STEPS + 1))
    other_seed = _learn(tree, tree[0] / "seed1", steps=2, settings=_settings(tree, seed=1))
    assert other_seed["settings"]["seed"] == 1
    with pytest.raises(ValueError, match=r"other settings \(seed\)"):
        _learn(tree, tree[0] / "seed1", steps=2)


@pytest.mark.slow
def test_the_learned_prompt_changes_the_embeddings_and_belongs_to_its_protocol(tree, learned):
    root, manual_dir, model = tree
    prompt_file = str(learned[0] / prompt_tuning.PROMPT_FILE)
    embeddings_dir, data_dir = str(root / "embeddings"), str(root / "data")
    extract_embeddings.extract(manual_dir, embeddings_dir, model, "context", batch_size=8)
    summary = extract_embeddings.extract(
        manual_dir, embeddings_dir, model, "learned", batch_size=8, learned_prompt=prompt_file
    )
    assert summary["extracted"] == summary["clips_in_shard"] - 1
    metadata = extraction.read_metadata(os.path.join(embeddings_dir, "learned_cross_subject"))
    assert (
        metadata["prompt_set"] == "learned_cross_subject" and metadata["learned_prompt"]["protocol"] == "cross_subject"
    )
    assert "<harjax_soft_3>" in metadata["prompts"]["1"]
    name = sorted(n for n in os.listdir(os.path.join(embeddings_dir, "context")) if n.endswith(".npz"))[0]
    with (
        np.load(os.path.join(embeddings_dir, "context", name)) as plain,
        np.load(os.path.join(embeddings_dir, "learned_cross_subject", name)) as tuned,
    ):
        for kind in extraction.EMBEDDING_KINDS:
            assert np.abs(plain[kind].astype(np.float32) - tuned[kind].astype(np.float32)).max() > 1e-3, kind

    build.build(manual_dir, embeddings_dir, data_dir, "learned_cross_subject-video_mean_last")
    config = small_config()
    config.data.update(source="mmact", data_dir=data_dir, prompt_set="learned", protocol="cross_subject")
    train_split, _ = tfds_source.load_splits(config)
    assert train_split.video_source["extraction"]["learned_prompt"]["sha256"] == metadata["learned_prompt"]["sha256"]
    config.data.update(protocol="cross_view", tfds_config="learned_cross_subject-video_mean_last")
    with pytest.raises(errors.ConfigError, match="prompt learned on cross_subject's training split"):
        tfds_source.load_splits(config)


@pytest.mark.slow
def test_a_prompt_for_another_model_family_or_width_is_refused(tree, learned, tmp_path):
    vectors, metadata = soft_prompt.load(str(learned[0] / prompt_tuning.PROMPT_FILE))
    extractor = extraction.Extractor(tree[2], "cpu")
    with pytest.raises(ValueError, match="made for hidden_size 64"):
        extractor.attach_prompt(vectors, metadata | {"hidden_size": 64})
    qwen = tiny_model.save_tiny_model(str(tmp_path / "qwen"), family="qwen2_vl")
    with pytest.raises(ValueError, match="made for model"):
        extraction.Extractor(qwen, "cpu").attach_prompt(vectors, metadata)
    with pytest.raises(ValueError, match="made for family 'video_llava'"):
        extraction.Extractor(qwen, "cpu").attach_prompt(vectors, metadata | {"model": qwen})


def test_bad_requests_are_refused_before_any_model_is_loaded(tmp_path):
    settings = prompt_tuning.Settings(model="no/such-model", dataset="d", protocol="cross_subject")
    with pytest.raises(ValueError, match="protocol 'cross_subject' has no training clip"):
        prompt_tuning.train(settings, [], ["a"], str(tmp_path / "p"), steps=1)
    with pytest.raises(ValueError, match="--embedding must be one of"):
        prompt_tuning.train(settings.__class__(**{**settings.__dict__, "embedding": "frame_means"}), [], [], "p", 1)
    with pytest.raises(ValueError, match="--protocol must be one of MMAct's"):
        prompt_tuning.mmact_training_clips(str(tmp_path), "cross_moon", "context")
    with pytest.raises(ValueError, match="--prompt_set=learned needs --learned_prompt"):
        extraction.resolve_prompt_set("learned", None)
    (tmp_path / "not_a_prompt.safetensors").write_bytes(b"nothing")
    with pytest.raises(ValueError, match="not a harjax soft prompt"):
        soft_prompt.load(str(tmp_path / "not_a_prompt.safetensors"))
