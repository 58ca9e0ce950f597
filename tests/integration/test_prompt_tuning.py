"""Prompt tuning on the tiny MMAct tree with the tiny Video-LLaVA: it learns, resumes, reproduces, and is guarded.

A learned prompt changes the stored embeddings, belongs to the protocol it was learned on (its extraction folder,
TFDS config and the runs that may read it) and is refused by a model of another family or width. Its command line
refuses, in one line and before any model is loaded, bad flags, a protocol the build would not make and an --output
holding files it did not write.
"""

import json
import os
import re
import shutil
import sys

import numpy as np
import pytest
from absl import flags

from data_builders import extraction, prompt_tuning
from data_builders.mmact import build, extract_embeddings, make_dummy_data, prompts, synthetic_tree
from data_builders.recordings import synthetic
from harjax import cli, errors
from harjax.data import tfds_source
from harjax.video import extractor as extractor_lib, soft_prompt, tiny_models
from tests.cli_runs import run_module
from tests.conftest import small_config

STEPS = 16


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt_tuning")
    manual_dir = str(root / "mmact")
    synthetic_tree.write_tree(manual_dir, make_dummy_data.SPEC)
    model = tiny_models.save_tiny_model(str(root / "model"), extra_words=prompts.vocabulary())
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
    extractor = extractor_lib.Extractor(tree[2], "cpu")
    metadata = _learn(tree, root / "prompt", extractor=extractor)
    return root / "prompt", metadata, extractor


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
    assert vectors.shape == (4, tiny_models.HIDDEN_SIZE) and saved["protocol"] == "cross_subject"
    assert saved["family"] == "video_llava" and saved["steps"] == STEPS


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
    with pytest.raises(errors.UserError, match=r"other settings \(seed: 1 there, 0 now\)"):
        _learn(tree, tree[0] / "seed1", steps=2)


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
        for kind in extractor_lib.EMBEDDING_KINDS:
            assert np.abs(plain[kind].astype(np.float32) - tuned[kind].astype(np.float32)).max() > 1e-3, kind

    build.build(manual_dir, embeddings_dir, data_dir, "learned_cross_subject-video_mean_last")
    config = small_config()
    config.data.update(source="mmact", data_dir=data_dir, prompt_set="learned", protocol="cross_subject")
    train_split, _ = tfds_source.load_splits(config)
    assert train_split.video_source["extraction"]["learned_prompt"]["sha256"] == metadata["learned_prompt"]["sha256"]
    config.data.update(protocol="cross_view", tfds_config="learned_cross_subject-video_mean_last")
    with pytest.raises(errors.ConfigError, match="prompt learned on cross_subject's training split"):
        tfds_source.load_splits(config)


def test_a_prompt_for_another_model_family_or_width_is_refused(tree, learned, tmp_path):
    vectors, metadata = soft_prompt.load(str(learned[0] / prompt_tuning.PROMPT_FILE))
    extractor = extractor_lib.Extractor(tree[2], "cpu")
    with pytest.raises(ValueError, match="made for hidden_size 64"):
        extractor.attach_prompt(vectors, metadata | {"hidden_size": 64})
    qwen = tiny_models.save_tiny_model(str(tmp_path / "qwen"), extra_words=prompts.vocabulary(), family="qwen2_vl")
    with pytest.raises(ValueError, match="made for model"):
        extractor_lib.Extractor(qwen, "cpu").attach_prompt(vectors, metadata)
    with pytest.raises(ValueError, match="made for family 'video_llava'"):
        extractor_lib.Extractor(qwen, "cpu").attach_prompt(vectors, metadata | {"model": qwen})


def test_bad_requests_are_refused_before_any_model_is_loaded(tmp_path):
    settings = prompt_tuning.Settings(model="no/such-model", dataset="d", protocol="cross_subject")
    with pytest.raises(errors.UserError, match="protocol 'cross_subject' has no training clip"):
        prompt_tuning.train(settings, [], ["a"], str(tmp_path / "p"), steps=1)
    with pytest.raises(errors.ConfigError, match="--embedding must be one of"):
        prompt_tuning.train(settings.__class__(**{**settings.__dict__, "embedding": "frame_means"}), [], [], "p", 1)
    with pytest.raises(errors.ConfigError, match="--protocol must be one of MMAct's"):
        prompt_tuning.mmact_training_clips(str(tmp_path), "cross_moon", "context")
    with pytest.raises(ValueError, match="--prompt_set=learned needs --learned_prompt"):
        extraction.resolve_prompt_set("learned", None)
    (tmp_path / "not_a_prompt.safetensors").write_bytes(b"nothing")
    with pytest.raises(ValueError, match="not a harjax soft prompt"):
        soft_prompt.load(str(tmp_path / "not_a_prompt.safetensors"))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A generated manifest (subjects 1-4, split column: 1-2 train) and a copy of it without the split column."""
    root = tmp_path_factory.mktemp("prompt_tuning_recordings")
    path = synthetic.write_recordings(str(root))["manifest"]
    rows = [json.loads(line) for line in open(path)]
    no_split = os.path.join(root, "no_split.jsonl")
    with open(no_split, "w") as f:
        f.writelines(json.dumps({key: value for key, value in row.items() if key != "split"}) + "\n" for row in rows)
    return path, no_split


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded for a request that should have been refused")


def _command(monkeypatch, capsys, *args):
    """Runs `python -m data_builders.prompt_tuning ARGS` in-process; (exit status, stderr lines).

    Its flags are defined once in this process; each run starts from their defaults (absl keeps a parse's values).
    """
    prompt_tuning.define_flags()
    flags.FLAGS.unparse_flags()
    monkeypatch.setattr(sys, "argv", ["data_builders.prompt_tuning", *args])
    with pytest.raises(SystemExit) as exited:
        cli.run(prompt_tuning.main)
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


def _manifest_flags(recordings, *args):
    return [f"--manifest={recordings[0]}", "--model=no/such-model", "--device=cpu", "--decode_workers=0", *args]


MANIFEST_PROTOCOLS = "manifest, loso_s1, loso_s2, loso_s3, loso_s4"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocol=manifest", "--steps=0"], "--steps must be at least 1, got 0"),
        (["--protocol=manifest", "--batch_size=0"], "--batch_size must be at least 1, got 0"),
        (["--protocol=manifest", "--num_tokens=0"], "--num_tokens must be at least 1, got 0"),
        (["--protocol=manifest", "--checkpoint_every=0"], "--checkpoint_every must be at least 1, got 0"),
        (["--protocol=manifest", "--learning_rate=0"], "--learning_rate must be a positive number, got 0.0"),
        (["--protocol=manifest", "--learning_rate=nan"], "--learning_rate must be a positive number, got nan"),
        (["--protocol=manifest", "--seed=-1"], "--seed must be 0 or more, got -1"),
        (
            ["--protocol=manifest", "--base_prompt_set=scene"],
            re.escape("--base_prompt_set must be one of ('plain', 'context')"),
        ),
        (["--protocol=cross_subjct"], f"--protocol 'cross_subjct' is not one of .*'s protocols: {MANIFEST_PROTOCOLS} "),
        (["--protocol=loso_sX"], f"--protocol 'loso_sX' is not one of .*'s protocols: {MANIFEST_PROTOCOLS} "),
        (["--protocol=loso_s"], f"--protocol 'loso_s' is not one of .*'s protocols: {MANIFEST_PROTOCOLS} "),
        (["--protocol=loso_s9"], f"--protocol 'loso_s9' is not one of .*'s protocols: {MANIFEST_PROTOCOLS} "),
        (["--protocol="], f"--protocol '' is not one of .*'s protocols: {MANIFEST_PROTOCOLS} "),
        (["--protocol=manifest", "--split_protocol=cs"], "--protocol 'manifest' is not one of .*'s protocols: cs, "),
    ],
)
def test_bad_flags_and_protocols_fail_in_one_line_before_any_model_is_loaded(
    recordings, tmp_path, monkeypatch, capsys, args, message
):
    """F4-F6: each refusal is one line naming the flag, exit status 2; nothing is written."""
    monkeypatch.setattr(extractor_lib, "Extractor", _no_model)
    flags = _manifest_flags(recordings, *args)
    if not any(flag.startswith("--output") for flag in args):
        flags.append(f"--output={tmp_path / 'prompt'}")
    status, lines = _command(monkeypatch, capsys, *flags)
    assert status == 2 and len(lines) == 1, lines
    assert re.search(message, lines[0]), lines[0]
    assert not os.path.exists(tmp_path / "prompt")


def test_mmact_flags_fail_in_one_line_before_any_model_is_loaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extractor_lib, "Extractor", _no_model)
    common = [f"--manual_dir={tmp_path}", f"--output={tmp_path / 'prompt'}", "--model=no/such-model", "--device=cpu"]
    for args, message in [
        (["--protocol=cross_moon"], "--protocol must be one of MMAct's"),
        (["--protocol=cross_subject", "--split_protocol=manifest"], "--split_protocol names a manifest's split"),
        (["--protocol=cross_subject"], f"--manual_dir {tmp_path}: no video folder"),
    ]:
        status, lines = _command(monkeypatch, capsys, *common, *args)
        assert status == 2 and len(lines) == 1 and message in lines[0], lines


def test_a_manifest_prompt_is_learned_only_for_a_protocol_its_build_makes(recordings):
    """F4, F6: the split column's protocol under the build's name, and loso_s<k> for the subjects it has."""
    manifest, no_split = recordings
    split, _ = prompt_tuning.manifest_training_clips(manifest, "manifest", "context")
    assert split and all(job.name.startswith(("s1_", "s2_")) for job, _ in split)  # the generator's training rows
    fold, _ = prompt_tuning.manifest_training_clips(manifest, "loso_s2", "context")
    assert len(fold) == 24 and not any(job.name.startswith("s2_") for job, _ in fold)
    for protocol in ("cross_subjct", "loso_s9", "loso_sX", "loso_s01", ""):
        with pytest.raises(errors.ConfigError, match=f"protocols: {MANIFEST_PROTOCOLS} "):
            prompt_tuning.manifest_training_clips(manifest, protocol, "context")
    renamed, _ = prompt_tuning.manifest_training_clips(manifest, "cross_subject", "context", "cross_subject")
    assert renamed == split
    with pytest.raises(errors.ConfigError, match="protocols: loso_s1, loso_s2, loso_s3, loso_s4 "):
        prompt_tuning.manifest_training_clips(no_split, "manifest", "context")


def test_output_holding_what_it_did_not_write_is_refused_and_left_alone(recordings, tmp_path, monkeypatch, capsys):
    """F7, F8: a file, or a folder with a user's files (even under this command's names), is refused in one line."""
    monkeypatch.setattr(extractor_lib, "Extractor", _no_model)
    user = tmp_path / "user"
    user.mkdir()
    (user / prompt_tuning.LOG_FILE).write_text('{"my": "own notes"}\n')
    (user / prompt_tuning.PROMPT_FILE).write_text("keep\n")
    examples, classes = prompt_tuning.manifest_training_clips(recordings[0], "manifest", "context")
    settings = prompt_tuning.Settings(model="no/such-model", dataset=recordings[0], protocol="manifest")
    with pytest.raises(errors.UserError, match="which prompt tuning did not write"):
        prompt_tuning.train(settings, examples, classes, str(user), steps=1, decode_workers=0)
    status, lines = _command(
        monkeypatch, capsys, *_manifest_flags(recordings, "--protocol=manifest", f"--output={user}")
    )
    assert status == 2 and len(lines) == 1, lines
    assert f"--output {user} holds log.jsonl, prompt.safetensors, which prompt tuning did not write" in lines[0]
    assert (user / prompt_tuning.LOG_FILE).read_text() == '{"my": "own notes"}\n'
    assert (user / prompt_tuning.PROMPT_FILE).read_text() == "keep\n"

    (user / prompt_tuning.STATE_FILE).write_text("not a state\n")
    status, lines = _command(
        monkeypatch, capsys, *_manifest_flags(recordings, "--protocol=manifest", f"--output={user}")
    )
    assert status == 2 and len(lines) == 1 and "holds a state.pt that prompt tuning did not write" in lines[0], lines
    assert (user / prompt_tuning.STATE_FILE).read_text() == "not a state\n"

    a_file = tmp_path / "userfile.txt"
    a_file.write_text("mine\n")
    status, lines = _command(
        monkeypatch, capsys, *_manifest_flags(recordings, "--protocol=manifest", f"--output={a_file}")
    )
    assert status == 2 and len(lines) == 1 and f"--output {a_file} is a file, not a folder" in lines[0], lines
    assert a_file.read_text() == "mine\n"


def test_ctrl_c_ends_in_one_line_with_status_130(recordings, tmp_path, monkeypatch, capsys):
    """F3: an interrupted run says so in one line (what it saved is resumed by the same command)."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extractor_lib, "Extractor", interrupted)
    output = tmp_path / "prompt"
    status, lines = _command(
        monkeypatch, capsys, *_manifest_flags(recordings, "--protocol=manifest", f"--output={output}")
    )
    assert status == 130 and len(lines) == 1 and "interrupted" in lines[0], lines


def test_the_command_resumes_its_own_folder_and_refuses_other_settings_in_one_line(
    tree, learned, tmp_path, monkeypatch, capsys
):
    """F9: another --num_tokens into an earlier prompt's folder is one line; the same settings resume it (0 steps)."""
    output = learned[0]
    before = {name: (output / name).read_bytes() for name in (prompt_tuning.LOG_FILE, prompt_tuning.STATE_FILE)}
    flags = [f"--manual_dir={tree[1]}", "--protocol=cross_subject", f"--model={tree[2]}", "--device=cpu"]
    flags += ["--decode_workers=0", f"--steps={STEPS}", "--learning_rate=0.03", "--checkpoint_every=4"]
    with monkeypatch.context() as patched:
        patched.setattr(extractor_lib, "Extractor", _no_model)
        status, lines = _command(monkeypatch, capsys, *flags, "--num_tokens=8", f"--output={output}")
    assert status == 2 and len(lines) == 1, lines
    assert "state.pt was learned with other settings (num_tokens: 4 there, 8 now)" in lines[0]
    annotated = tmp_path / "annotated"
    shutil.copytree(output, annotated)
    (annotated / "notes.txt").write_text("mine\n")
    with monkeypatch.context() as patched:
        patched.setattr(extractor_lib, "Extractor", _no_model)
        status, lines = _command(monkeypatch, capsys, *flags, "--num_tokens=4", f"--output={annotated}")
    assert status == 2 and f"--output {annotated} holds notes.txt, which prompt tuning did not write" in lines[0]
    status, _ = _command(monkeypatch, capsys, *flags, "--num_tokens=4", f"--output={output}")
    assert not status
    assert {name: (output / name).read_bytes() for name in before} == before
    assert soft_prompt.load(str(output / prompt_tuning.PROMPT_FILE))[1]["steps"] == STEPS


def test_python_m_runs_through_harjax_cli(recordings, tmp_path):
    """F11 as a user meets it: `python -m data_builders.prompt_tuning` refuses a flag given twice, in one line."""
    done = run_module(
        "data_builders.prompt_tuning",
        *_manifest_flags(recordings, "--protocol=manifest"),
        f"--output={tmp_path / 'a'}",
        f"--output={tmp_path / 'b'}",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"data_builders.prompt_tuning: error: --output is given twice (--output={tmp_path / 'a'} and "
        f"--output={tmp_path / 'b'}); give each flag once"
    ]
