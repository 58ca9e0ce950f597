"""Nothing lost, nothing mixed up in a workdir: one writer, the data a run was trained on, damaged checkpoints."""

import glob
import json
import os

import pytest

from harjax import errors
from harjax.serving import export
from harjax.training import checkpointing, loop, workdir as workdir_lib
from tests.conftest import read_metrics


def test_a_second_run_in_a_locked_workdir_stops_at_once_naming_the_holder(trained_full, tmp_path):
    workdir = trained_full.copy(tmp_path / "workdir")
    before = open(os.path.join(workdir, "metrics.jsonl")).read()
    with workdir_lib.locked(workdir):
        with pytest.raises(workdir_lib.WorkdirError, match=rf"in use by pid {os.getpid()} on host .* since "):
            loop.train_and_evaluate(trained_full.fresh_config(), workdir)
        with pytest.raises(workdir_lib.WorkdirError, match="in use by pid"):
            loop.evaluate(trained_full.fresh_config(), workdir)  # --mode=eval writes files too
        export.bundle_from_workdir(workdir, str(tmp_path / "bundle"), "latest")  # reading takes no lock
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == before


def test_a_workdir_that_is_a_file_or_cannot_be_made_says_so(tmp_path):
    (tmp_path / "file").write_text("notes")
    with pytest.raises(workdir_lib.WorkdirError, match=r"--workdir=.*file: exists and is a file"):
        workdir_lib.prepare(str(tmp_path / "file"))
    with pytest.raises(workdir_lib.WorkdirError, match=r"--workdir=.*file/run: cannot be made \(Not a directory\)"):
        workdir_lib.prepare(str(tmp_path / "file" / "run"))
    assert (tmp_path / "file").read_text() == "notes"


def _damage(step_dir, kind):
    if kind == "truncated array file":
        path = glob.glob(os.path.join(step_dir, "state", "d", "*"))[0]
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        return path
    path = os.path.join(
        step_dir, *{"missing metadata": ("state", "_METADATA"), "truncated signature": ("signature", "metadata")}[kind]
    )
    if kind == "missing metadata":
        os.remove(path)
    else:
        with open(path, "r+") as f:
            f.truncate(40)
    return path


@pytest.mark.parametrize("kind", ["truncated array file", "missing metadata", "truncated signature"])
def test_a_damaged_checkpoint_names_its_step_and_file_and_where_to_continue(trained_full, tmp_path, kind):
    workdir = trained_full.copy(tmp_path / "workdir")
    path = _damage(os.path.join(workdir, "checkpoints", "6"), kind)
    expected = rf"checkpoint step 6 in .* cannot be read: {path}.*; earlier checkpoints: 3; continue from one with "
    with pytest.raises(checkpointing.DamagedCheckpointError, match=expected):
        loop.train_and_evaluate(trained_full.fresh_config(), workdir)
    with pytest.raises(checkpointing.DamagedCheckpointError, match=expected + r".*harjax\.export takes --step=N"):
        export.bundle_from_workdir(workdir, str(tmp_path / "bundle"), "latest")
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))  # nothing moved without being asked


def test_restore_fallback_continues_from_the_last_intact_checkpoint_and_keeps_the_damaged_one(trained_full, tmp_path):
    workdir = trained_full.copy(tmp_path / "workdir")
    _damage(os.path.join(workdir, "checkpoints", "6"), "truncated array file")
    config = trained_full.fresh_config()
    loop.train_and_evaluate(config, workdir, restore_fallback=True)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", "6", "state"))  # moved aside, kept
    last_start = [json.loads(line) for line in open(os.path.join(workdir, "runs.jsonl"))][-1]
    assert last_start["start_step"] == 3
    assert last_start["events"]["checkpoint_fallback"] == {"damaged_steps_moved_aside": [6], "restored_step": 3}
    assert [line["step"] for line in read_metrics(workdir) if "train/loss" in line] == list(range(1, 7))
    assert loop.training_complete(config, workdir)


def test_restore_step_skips_only_damaged_checkpoints(trained_full, tmp_path):
    workdir = trained_full.copy(tmp_path / "workdir")
    config = trained_full.fresh_config()
    config.train.num_steps = 7
    with pytest.raises(errors.ConfigError, match=r"--restore_step=3: the later step 6 reads fine"):
        loop.train_and_evaluate(config, workdir, restore_step=3)
    _damage(os.path.join(workdir, "checkpoints", "6"), "missing metadata")
    loop.train_and_evaluate(config, workdir, restore_step=3)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "damaged"))) == ["6"]
    assert [line["step"] for line in read_metrics(workdir) if "train/loss" in line][-1] == 7
