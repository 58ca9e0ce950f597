"""Experiment suites: checks before training, the report's arithmetic, and whole suites through the CLI."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs.suites import paper
from harjax.study import report, runner as runner_lib, suites
from tests.conftest import REPO

GROUPS = ("main", "ablations", "encoders", "prompts", "sweeps", "protocols", "distillation")  # the paper suite's


def _load(config, root="/tmp/suite", command_line=()):
    return suites.load_suite(config, "configs/suites/paper.py:synthetic", root, command_line)


def test_the_paper_suite_resolves_every_run():
    suite = _load(paper.get_config("synthetic"))
    assert [group.name for group in suite.groups] == list(GROUPS)
    skipped = {group.name: group.skipped for group in suite.groups if group.skipped}
    assert set(skipped) == {"prompts", "protocols"} and "MMAct" in skipped["prompts"]
    assert suite.configs["main/concat_fusion"].model.fusion == "concat"
    assert suite.configs["sweeps/tau_0.2"].loss.temperature == 0.2
    assert all(config.data.synthetic.task == "bursts" for config in suite.configs.values())
    assert suite.configs["encoders/sensor_only_inception"].model.encoder == "inception"
    assert len(suites.trials(suite, seeds=3)) == 3 * 19
    assert suite.runs()["distillation/student"].teacher == "main/full"
    mmact = suites.load_suite(paper.get_config("mmact"), "paper.py", "/tmp/suite", ())
    runs = mmact.runs()
    assert "protocols/sensor_only-cross_view" not in runs and "protocols/video_only-cross_view" in runs
    # prompts: 4 learned, one per protocol; students: cross_subject, cross_scene and cross_session (no cross_view)
    assert len(suites.trials(mmact, seeds=1)) == 5 + 5 + 2 + (5 + 4) + 6 + 14 + 3
    assert runs["distillation/student-cross_scene"].teacher == "protocols/full-cross_scene"
    learned = mmact.configs["prompts/prompt_learned-cross_view"]
    assert (learned.data.prompt_set, learned.data.protocol) == ("learned", "cross_view")
    assert runs["prompts/prompt_learned-cross_view"].reference == "protocols/full-cross_view"
    smoke = suites.load_suite(paper.get_config("smoke"), "p", "/tmp/s", ())
    assert set(smoke.groups[3].excluded) == {"prompt_plain", "prompt_scene", "prompt_learned"}
    assert [run.key for run in smoke.groups[3].runs] == ["prompts/embedding_frame_means"]


def test_the_utd_mhad_suite_cross_validates_its_loso_runs_over_the_eight_subjects():
    suite = suites.load_suite(paper.get_config("utd_mhad"), "paper.py:utd_mhad", "/tmp/suite", ())
    groups = {group.name: group for group in suite.groups}
    assert "UTD-MHAD" in groups["protocols"].skipped and "prompt_scene" in groups["prompts"].excluded
    folds = groups["loso"].rows()["loso/sensor_only"]
    assert [run.fold for run in folds] == [f"loso_s{subject}" for subject in range(1, 9)]
    assert {suite.configs[run.key].data.protocol for run in folds} == {run.fold for run in folds}
    assert all(config.data.dataset == "utd_mhad" for config in suite.configs.values())
    loso = suites.trials(suite, seeds=2, only=["loso"])
    assert len(loso) == 3 * 8 * 2
    assert loso[3].workdir("/tmp/suite") == "/tmp/suite/runs/loso/full/loso_s2/seed1"


def _with_loso_run(**run):
    """A change to the synthetic suite: a cross-validated group."""
    return lambda config: config.groups.append({"name": "loso", "runs": [{"name": "full", **run}]})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.__setitem__("colour", "red"), r"unknown key 'colour'"),
        (_with_loso_run(folds="loso_s1"), r"run 'full'.*'folds' must be a list of distinct"),
        (
            _with_loso_run(folds=["a", "b"], overrides={"data.protocol": "a"}),
            r"sets data.protocol by its 'folds'",
        ),
        (_with_loso_run(folds=["a", "b"], reference="main/full"), r"'loso/full' is compared with 'main/full'"),
        (
            lambda c: c.groups[1]["runs"].append({"name": "no_attention", "config": "configs/full.py"}),
            r"run 'ablations/no_attention' is given twice",
        ),
        (
            lambda c: c.groups[0]["runs"][1]["overrides"].update({"model.fusionn": "late"}),
            r"run main/video_only .*fusionn",
        ),
        (lambda c: c.groups[0]["runs"][0].update({"seeds": 4}), r"run 'full'.*unknown key 'seeds'"),
        (lambda c: c.groups[3]["shown"].append("main/nothing"), r"refers to run 'main/nothing'"),
    ],
)
def test_a_bad_suite_fails_before_training_naming_the_problem(change, message):
    config = paper.get_config("synthetic")
    config.unlock()
    change(config)
    with pytest.raises(suites.SuiteError, match=message):
        _load(config)


def test_command_line_overrides_reach_every_run_and_are_checked():
    suite = _load(paper.get_config("synthetic"), command_line=["train.learning_rate=0.01"])
    assert {config.train.learning_rate for config in suite.configs.values()} == {0.01}
    with pytest.raises(suites.SuiteError, match="learning_ratee"):
        _load(paper.get_config("synthetic"), command_line=["train.learning_ratee=0.01"])


def test_layered_overrides_give_one_value_per_key_the_last_winning():
    smoke = paper.get_config("smoke")  # its overrides set train.num_steps=4
    smoke.overrides["model.encoder_channels"] = (16, 32)  # a tuple in the suite's layer too
    suite = _load(smoke, command_line=["model.encoder_channels=(8,16)", "train.num_steps=7"])
    assert {tuple(config.model.encoder_channels) for config in suite.configs.values()} == {(8, 16)}  # not (16,32,8,16)
    command = suites.trials(suite, seeds=1)[0].command(suite, "/tmp/suite")
    overrides = [argument for argument in command if argument.startswith("--config.")]
    keys = [argument.split("=", 1)[0] for argument in overrides]
    assert len(keys) == len(set(keys))
    assert "--config.model.encoder_channels=(8,16)" in overrides and "--config.train.num_steps=7" in overrides


def test_a_run_recorded_before_overrides_were_merged_is_the_same_run(tmp_path):
    suite = _load(paper.get_config("synthetic"), root=str(tmp_path), command_line=["train.num_steps=9"])
    trial = suites.trials(suite, seeds=1)[0]
    command = trial.command(suite, str(tmp_path))
    # What the runner recorded before: every layer's overrides as given, the suite's 300 steps and then the 9.
    layered = [*suite.overrides, *trial.run.overrides, f"seed={trial.seed}"]
    recorded = [argument for argument in command if not argument.startswith("--config.")]
    recorded += ["--config." + override for override in layered]
    assert recorded.count("--config.train.num_steps=300") == recorded.count("--config.train.num_steps=9") == 1
    workdir = trial.workdir(str(tmp_path))
    os.makedirs(workdir)
    with open(os.path.join(workdir, suites.STATUS_FILE), "w") as f:
        json.dump({"status": "finished", "command": recorded}, f)
    runner_lib.Runner(suite, str(tmp_path), 1).check_commands([trial])  # the same run: accepted
    with open(os.path.join(workdir, suites.STATUS_FILE), "w") as f:
        json.dump({"status": "finished", "command": [*recorded, "--config.train.num_steps=8"]}, f)
    with pytest.raises(suites.SuiteError, match="with another command"):
        runner_lib.Runner(suite, str(tmp_path), 1).check_commands([trial])


@pytest.mark.parametrize(
    "ends, outcome",
    [
        ("sys.exit(130)", "interrupted"),  # harjax.main after Ctrl-C, its checkpoint written
        ("sys.exit(143)", "interrupted"),  # after SIGTERM (the runner's stop, a preemption)
        ("os.kill(os.getpid(), signal.SIGTERM)", "interrupted"),  # killed by it before training began
        ("sys.exit(1)", "failed"),
    ],
    ids=["ctrl_c", "sigterm", "killed_by_sigterm", "error"],
)
def test_a_run_stopped_by_a_signal_is_recorded_as_interrupted(tmp_path, ends, outcome):
    """A run that exits with the status of Ctrl-C or SIGTERM after its checkpoint is interrupted (a rerun resumes)."""
    suite = _load(paper.get_config("synthetic"), root=str(tmp_path))
    trial = suites.trials(suite, seeds=1)[0]
    os.makedirs(trial.workdir(str(tmp_path)))
    runner = runner_lib.Runner(suite, str(tmp_path), 1)
    process = subprocess.Popen([sys.executable, "-c", f"import os, signal, sys; {ends}"])
    process.wait()
    runner.running[process] = (trial, time.time(), ())
    runner._reap()
    status = suites.read_status(trial.workdir(str(tmp_path)))
    assert (status["status"], status["returncode"]) == (outcome, process.returncode)


def test_each_trial_is_a_harjax_main_command_with_its_seed():
    suite = _load(paper.get_config("synthetic"))
    trial = suites.trials(suite, seeds=2)[3]
    assert (trial.run.key, trial.seed) == ("main/video_only", 1)
    command = trial.command(suite, "/tmp/suite")
    assert command[:4] == ["python", "-m", "harjax.main", "--config=configs/video_only.py:synthetic"]
    assert "--workdir=/tmp/suite/runs/main/video_only/seed1" in command and command[-1] == "--config.seed=1"
    assert suites.format_value((16, 32)) == "(16,32)" and suites.format_value((4,)) == "(4,)"


def _fake_run(root, key, seed, f1, num_steps, status="finished", classes=3):
    """A workdir as harjax.main and the suite runner leave it, with the given final macro-F1."""
    group, name = key.split("/")
    workdir = os.path.join(root, "runs", group, name, f"seed{seed}")
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step, value in ((0, 0.1), (num_steps, f1)):
            f.write(
                json.dumps({"step": step, "eval/accuracy": value + 0.05, "eval/macro_f1": value, "train/loss": 1.0})
                + "\n"
            )
    with open(os.path.join(workdir, "eval", f"eval_step_{num_steps}.json"), "w") as f:
        json.dump(
            {
                "class_names": [f"c{i}" for i in range(classes)],
                "per_class_f1": [f1] * classes,
                "confusion_matrix": np.eye(classes, dtype=int).tolist(),
            },
            f,
        )
    if status is None:  # started by hand from --list's command: no suite status, a line being written
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write('{"step": 1, "train/lo')
        return
    with open(os.path.join(workdir, suites.STATUS_FILE), "w") as f:
        json.dump({"status": status, "log": os.path.join(workdir, suites.LOG_FILE), "command": []}, f)


def test_the_report_averages_seeds_pairs_them_and_lists_what_is_missing(tmp_path):
    suite = _load(paper.get_config("synthetic"), root=str(tmp_path))
    steps = suite.configs["main/full"].train.num_steps
    for seed, (full_f1, video_f1) in enumerate([(0.8, 0.5), (0.9, 0.7), (0.7, 0.75)]):
        _fake_run(str(tmp_path), "main/full", seed, full_f1, steps)
        _fake_run(str(tmp_path), "main/video_only", seed, video_f1, steps)
    _fake_run(str(tmp_path), "main/sensor_only", 0, 0.4, steps)
    _fake_run(str(tmp_path), "main/sensor_only", 1, 0.9, steps, status="failed")
    _fake_run(str(tmp_path), "main/concat_fusion", 0, 0.6, steps, status=None)
    report.write_report(suite, 3, str(tmp_path))
    rows = {row["run"]: row for row in csv.DictReader(open(tmp_path / "report" / "results.csv"))}
    video = rows["video_only"]
    assert float(video["macro_f1_mean"]) == pytest.approx(np.mean([0.5, 0.7, 0.75]))
    assert float(video["macro_f1_std"]) == pytest.approx(np.std([0.5, 0.7, 0.75], ddof=1))
    assert float(video["delta_macro_f1_mean"]) == pytest.approx(np.mean([-0.3, -0.2, 0.05]))
    assert (video["seeds_better"], video["seeds_worse"]) == ("1", "2")
    # A failed or missing seed is not in the mean: sensor_only is seed 0 alone, and says so.
    sensor = rows["sensor_only"]
    assert (sensor["seeds_finished"], float(sensor["macro_f1_mean"])) == ("1", pytest.approx(0.4))
    concat = rows["concat_fusion"]  # run by hand: its final evaluation counts
    assert (concat["seeds_finished"], float(concat["macro_f1_mean"])) == ("1", pytest.approx(0.6))
    text = open(tmp_path / "report" / "results.md").read()
    # accuracy = F1 + 0.05 on every seed: the same std
    assert (
        "| `main/video_only` | loss.contrastive_weight=0.0, model.modalities=video | 3/3 | 70.0 ± 13.2 | 65.0 ± 13.2 |"
    ) in text
    assert "- `main/sensor_only` seed 1: failed, log: `runs/main/sensor_only/seed1/suite.log`" in text
    assert "- `main/sensor_only` seed 2: missing" in text
    assert "Skipped in this variant: needs MMAct's prompt sets" in text
    runs = list(csv.DictReader(open(tmp_path / "report" / "runs.csv")))
    assert len(runs) == 3 * 19 and {row["status"] for row in runs} == {"finished", "failed", "missing"}
    for name in ("confusion.png", "per_class_f1.png", "curves_main.png"):
        assert os.path.getsize(tmp_path / "report" / "figures" / name) > 0


def _suite_cli(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "harjax.experiments", *args], cwd=REPO, capture_output=True, text=True, env=env, **kwargs
    )


def test_list_and_run_index_bounds(tmp_path):
    listed = _suite_cli(
        "--suite=configs/suites/paper.py:synthetic",
        f"--workdir={tmp_path}",
        "--list",
        "--only=ablations",
        "--seeds=2",
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    assert len(lines) == 5 * 2 and lines[0].startswith("0\tablations/no_attention\tseed0\tpython -m harjax.main ")
    assert "group prompts is skipped: needs MMAct" in listed.stderr
    out_of_range = _suite_cli(
        "--suite=configs/suites/paper.py:synthetic",
        f"--workdir={tmp_path}",
        "--only=ablations",
        "--run_index=10",
        "--seeds=2",
        timeout=300,
    )
    assert out_of_range.returncode != 0 and "--run_index=10 is out of range" in out_of_range.stderr
    assert not os.path.exists(tmp_path / "runs")


# The suites below compile many small programs: XLA's cheapest CPU codegen keeps them fast (runs stay exact:
# every run of a comparison is compiled the same way), and all share one compilation cache.
def _fast_env(cache):
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "SLURM_ARRAY_TASK_ID")}
    return env | {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole :smoke suite, every group, as the README's command runs it (three runs at a time)."""
    root = tmp_path_factory.mktemp("smoke")
    result = _suite_cli(
        "--suite=configs/suites/paper.py:smoke",
        f"--workdir={root}",
        "--parallel=3",
        env=_fast_env(root / "jax_cache"),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def test_the_smoke_suite_runs_every_group_and_writes_the_report(smoke):
    root = smoke
    runs = list(csv.DictReader(open(root / "report" / "runs.csv")))
    assert len(runs) == 5 + 4 + 2 + 1 + 1 + 1 + 1 and {row["status"] for row in runs} == {"finished"}
    assert {row["group"] for row in runs} == set(GROUPS)
    # The student learned from its teacher: the main group's full model of the same seed, after it finished.
    student = root / "runs" / "distillation" / "student" / "seed0"
    record = json.load(open(student / "config.json"))
    assert record["config"]["distill"]["teacher"] == str(root / "runs" / "main" / "full" / "seed0")
    assert any("train/distillation" in line for line in open(student / "metrics.jsonl"))
    text = open(root / "report" / "results.md").read()
    for section in (
        "## Per class",
        "## Cross-modal retrieval",
        "## Robustness of the trained model",
        "## Keyless attention",
        "Left out: `sensor_only-cross_view`",
        "Left out: `prompt_plain`",
        "Left out: `prompt_scene`",
    ):
        assert section in text
    assert "Missing or failed" not in text
    for name in (
        "confusion",
        "per_class_f1",
        "attention",
        "retrieval",
        "robustness",
        "curves_main",
        "curves_ablations",
        "curves_encoders",
        "curves_prompts",
        "curves_sweeps",
        "curves_protocols",
        "curves_distillation",
    ):
        assert f"figures/{name}.png" in text and os.path.getsize(root / "report" / "figures" / f"{name}.png") > 0
    robustness = json.load(open(root / "runs" / "main" / "full" / "seed0" / "analysis" / "robustness.json"))
    assert set(robustness["conditions"]) == {
        "clean",
        "video_removed",
        "acc_phone_removed",
        "acc_watch_removed",
        "gyro_removed",
        "orientation_removed",
        "occluded_10pct",
        "occluded_25pct",
        "occluded_50pct",
    }


def _training(workdir):
    """Whether the run has logged a training step (its SIGTERM handler is in place by then)."""
    path = workdir / "metrics.jsonl"
    return path.exists() and "train/loss" in path.read_text()


def _status(workdir):
    return suites.read_status(str(workdir))["status"]


def _group_rows(root, name, group):
    """One group's rows of a report table (workdirs and logs are relative to the suite's directory)."""
    return [row for row in csv.DictReader(open(root / "report" / name)) if row["group"] == group]


COMPARISONS = (  # results.csv's columns that compare a run with its reference
    "delta_macro_f1_mean",
    "delta_macro_f1_std",
    "seeds_better",
    "seeds_worse",
    "folds_better",
    "folds_worse",
)


def _without_comparisons(rows):
    """Rows of results.csv without the columns that compare a run with its reference (of another group)."""
    return [{name: value for name, value in row.items() if name not in COMPARISONS} for row in rows]


def test_a_killed_suite_resumes_without_retraining_and_reports_the_same(smoke, tmp_path):
    """Kill -9 of the suite while a run trains, then the same command: nothing is trained twice.

    Finished runs are not trained again, the interrupted one resumes from its checkpoint, and the group's rows of
    the report are those of the uninterrupted smoke suite (the same data and compiled programs). The group is
    `encoders`, the smallest with two runs; its comparisons with the main group's runs are left out, as that group
    does not run here.
    """
    root = smoke
    args = ["--suite=configs/suites/paper.py:smoke", "--only=encoders", f"--config.data.data_dir={root / 'data'}"]
    env = _fast_env(root / "jax_cache")
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "harjax.experiments", *args, f"--workdir={interrupted}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = interrupted / "runs" / "encoders" / "full_inception" / "seed0"
    second = interrupted / "runs" / "encoders" / "sensor_only_inception" / "seed0"
    deadline = time.time() + 900  # a loaded 2-core machine took over 300 s to get here once
    while time.time() < deadline and not _training(second):
        time.sleep(0.05)
    trained = _training(second)
    process.send_signal(signal.SIGKILL)  # the run in training gets SIGTERM: it checkpoints and stops
    process.wait()
    assert trained, "the second run logged no training step within 900 s: nothing to resume from"
    assert _status(first) == "finished" and _status(second) != "finished"

    resumed = _suite_cli(*args, f"--workdir={interrupted}", env=env, timeout=600)  # waits for the orphan's lock
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert open(first / suites.LOG_FILE).read().count("=== ") == 1  # finished earlier: not trained again
    starts = [json.loads(line)["start_step"] for line in open(second / "runs.jsonl")]
    assert starts[0] == 0 and starts[-1] >= 1  # resumed from its preemption checkpoint
    assert _group_rows(interrupted, "runs.csv", "encoders") == _group_rows(root, "runs.csv", "encoders")
    assert _without_comparisons(_group_rows(interrupted, "results.csv", "encoders")) == _without_comparisons(
        _group_rows(root, "results.csv", "encoders")
    )
    changed = _suite_cli(*args, f"--workdir={interrupted}", "--config.train.learning_rate=0.5", env=env, timeout=300)
    assert changed.returncode != 0 and "with another command" in changed.stderr  # before anything trains
    assert open(first / suites.LOG_FILE).read().count("=== ") == 1


def test_a_student_runs_after_its_teacher_and_is_failed_without_one(tmp_path):
    """Each student's command names its own seed's teacher; with no teacher trained, it is not started."""
    suite = _load(paper.get_config("smoke"), root=str(tmp_path))
    students = suites.trials(suite, seeds=2, only=["distillation"])
    assert [trial.teacher_workdir(str(tmp_path)) for trial in students] == [
        str(tmp_path / "runs" / "main" / "full" / f"seed{seed}") for seed in range(2)
    ]
    assert f"--config.distill.teacher={tmp_path / 'runs' / 'main' / 'full' / 'seed1'}" in students[1].command(
        suite, str(tmp_path)
    )
    runner_lib.Runner(suite, str(tmp_path), parallel=2).run(students)
    for trial in students:
        status = suites.read_status(trial.workdir(str(tmp_path)))
        assert status["status"] == "failed" and "its teacher main/full seed" in status["why"]
        assert not os.path.exists(os.path.join(trial.workdir(str(tmp_path)), "checkpoints"))
    utd = suites.load_suite(paper.get_config("utd_mhad"), "paper.py:utd_mhad", "/tmp/suite", ())
    loso = [trial for trial in suites.trials(utd, 1, ["distillation"]) if trial.run.fold == "loso_s3"]
    assert loso[0].teacher_workdir("/r") == "/r/runs/loso/full/loso_s3/seed0"
