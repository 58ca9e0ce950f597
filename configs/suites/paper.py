"""The paper's study: the full model against its baselines, every ablation, prompt sets, sweeps and protocols.

    python -m harjax.experiments --suite=configs/suites/paper.py[:VARIANT][,size=SIZE] --workdir=DIR [--seeds=3]

The argument reads as a config file's (configs/common.py): a variant, and the size every run's config file is read
at ('full', the default, or 'tiny': a model that trains in seconds, to see a variant's whole path quickly; the
variant's own step counts still apply). Variants:
  mmact      (default) MMAct through the TFDS dataset: add --config.data.data_dir=D (built with the prompt sets
             and embedding kinds the 'prompts' group reads; see docs/reproducing.md)
  synthetic  the 'bursts' synthetic task, in memory, anywhere; the groups that need MMAct are skipped
  demo       every group on the demo's generated MMAct release with tiny Video-LLaVA embeddings (built once, in
             DIR/data)
  smoke      every group on a 24-trial generated release, size tiny, a few steps each, thinned to one run of each kind
             (one fixed temperature, segment count, embedding kind and other protocol; no other prompt set): the
             suite's own test (it checks every group's path, not its table)
  utd_mhad   UTD-MHAD's 27 actions (configs/full.py:utd_mhad): cross_subject for every group, and the
             leave-one-subject-out folds (loso) reported as mean ± std over the 8 folds; a generated release
             (built once, in DIR/data) unless --config.data.data_dir names a build of the real one. The groups
             that need MMAct's scene prompts or protocols are left out with a line saying why.

A suite is a plain config: `groups`, each a list of runs; a run is a config file of configs/ plus overrides of
it (config keys and values as harjax.main takes them). `overrides` applies to every run, `shown` lists runs of
other groups a table repeats for comparison (not trained twice), and `reference` names the run every other run
is compared with over the same seeds (a group or a run may name its own). A run with `folds` (data.protocol
names) trains once per fold and is reported over them.
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("mmact", "synthetic", "demo", "smoke", "utd_mhad")
BASELINES = ("full", "video_only", "sensor_only", "concat_fusion", "late_fusion")
PROTOCOLS = ("cross_view", "cross_scene", "cross_session")  # cross_subject is the main group's protocol
LAMBDAS = (0.03, 0.3, 1.0)  # the full model's is 0.1; 0 is the no_contrastive ablation
TEMPERATURES = (0.03, 0.07, 0.2)  # held fixed; the full model learns tau from 0.07
PROMPT_SETS = ("plain", "scene")  # the full model's is 'context'
EMBEDDINGS = ("video_mean_middle", "last_token", "frame_means")  # the full model's is 'video_mean_last'
NEEDS_MMACT = "needs MMAct's prompt sets and stored embedding kinds: run the :mmact or :demo variant"
NEEDS_PROTOCOLS = "needs MMAct's subjects, views, scenes and sessions: run the :mmact or :demo variant"
UTD_PROTOCOLS = (
    "MMAct's protocols: UTD-MHAD has one camera, one scene and no sessions; its protocols are cross_subject (the "
    "main group) and leave-one-subject-out (the loso group)"
)
FIXED_PROMPTS_LEFT_OUT = {  # variants without some of the fixed prompt sets' rows: {run: why}
    "utd_mhad": {
        "prompt_scene": "'scene' prompts describe MMAct's four scenes; a recordings manifest has 'plain' and "
        "'context' only"
    },
    "smoke": {
        f"prompt_{prompt_set}": "the smoke variant reads the prompt set its data was extracted with (each other "
        "set is one more extraction of every clip)"
        for prompt_set in PROMPT_SETS
    },
}
LEARNED_PROMPTS = {  # variants without the learned-prompt rows, and why
    "smoke": "prompt tuning is checked by tests/integration/test_prompt_tuning.py; the smoke suite keeps to one run "
    "per path",
    "utd_mhad": "learn one with python -m data_builders.prompt_tuning --manifest=... and build learned_<protocol> "
    "(docs/workflows/learned_prompts.md); the generated UTD-MHAD release is extracted with fixed prompts only",
}
UTD_MHAD_SUBJECTS = range(1, 9)
LOSO_RUNS = ("full", "video_only", "sensor_only")  # does fusion carry over to a subject never seen?

VARIANT_OVERRIDES = {  # each variant's overrides of every run
    # 'bursts' (harjax/data/synthetic.py): the video must find the one burst that names the class. 12 classes,
    # so that its 4096 training recordings teach every motion; 300 steps keep 3 seeds well under an hour on 2 cores.
    "synthetic": {
        "data.synthetic.task": "bursts",
        "data.synthetic.num_classes": 12,
        "data.synthetic.burst_steps": 24,
        "data.synthetic.min_length_fraction": 0.6,
        "train.num_steps": 300,
        "train.warmup_steps": 30,
        "train.eval_every": 75,
        "train.checkpoint_every": 75,
        "train.log_every": 15,
    },
    "mmact": {},
    "utd_mhad": {},  # configs/full.py:utd_mhad's own
    # The demo's release is small (480 trials): 300 steps show every group end to end in about half an hour.
    "demo": {"train.num_steps": 300, "train.warmup_steps": 30, "train.eval_every": 100, "train.checkpoint_every": 100},
    # configs/full.py:demo,size=tiny: 4 steps, one evaluation and checkpoint, in batches of 8 (the 24-trial release's
    # training split is smaller than the tiny size's 32)
    "smoke": {
        "train.batch_size": 8,
        "train.num_steps": 4,
        "train.warmup_steps": 1,
        "train.eval_every": 4,
        "train.checkpoint_every": 4,
    },
}


def _run(name: str, config: str = "full", **overrides) -> dict:
    return {"name": name, "config": f"configs/{config}.py", "overrides": overrides}


def _learned_prompt_runs() -> list[dict]:
    """The full model reading a prompt learned on each protocol's own training split, next to the fixed prompts.

    cross_subject's row compares with the main group's full model, each other protocol's with that protocol's.
    """
    runs = [_run("prompt_learned", **{"data.prompt_set": "learned"})]
    for protocol in PROTOCOLS:
        learned = _run(f"prompt_learned-{protocol}", **{"data.prompt_set": "learned", "data.protocol": protocol})
        runs.append(dict(learned, reference=f"protocols/full-{protocol}"))
    return runs


def _distillation_group(protocols: tuple[str, ...], protocol_runs: tuple[str, ...], loso: bool) -> dict:
    """The fused model teaching the sensor-only baseline, per protocol: what a camera-free device keeps of fusion.

    Each student is configs/sensor_only.py distilled from the full model of its own protocol, fold and seed
    (config.distill), shown beside that teacher and the same sensor-only model trained alone. cross_view has no
    student: its sensor-only model would be tested on the recordings it trained on (the protocols group's reason).
    """
    runs = [dict(_run("student", "sensor_only"), teacher="main/full", reference="main/sensor_only")]
    if loso:  # UTD-MHAD's leave-one-subject-out folds, each student taught by its own fold's full model
        folds = [f"loso_s{subject}" for subject in UTD_MHAD_SUBJECTS]
        runs.append(
            dict(_run("student-loso", "sensor_only"), folds=folds, teacher="loso/full", reference="loso/sensor_only")
        )
    for protocol in protocols:
        if protocol == "cross_view" or "sensor_only" not in protocol_runs:
            continue
        student = _run(f"student-{protocol}", "sensor_only", **{"data.protocol": protocol})
        runs.append(dict(student, teacher=f"protocols/full-{protocol}", reference=f"protocols/sensor_only-{protocol}"))
    shown = (
        ["main/full", "main/sensor_only"]
        + (["loso/full", "loso/sensor_only"] if loso else [])
        + [
            f"protocols/{name}-{protocol}"
            for protocol in protocols
            if protocol != "cross_view"
            for name in ("full", "sensor_only")
            if "sensor_only" in protocol_runs
        ]
    )
    return {
        "name": "distillation",
        "title": "Distillation: the fused model teaches a sensor-only student, which needs no camera at inference",
        "shown": shown,
        "runs": runs,
    }


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, "suite", variant=VARIANTS, size=common.SIZES)
    variant = arg.variant
    size = "tiny" if variant == "smoke" else arg.size  # smoke is tiny whatever size says
    suite = ml_collections.ConfigDict()
    shown_size = "" if size == "full" or variant == "smoke" else f", size {size}"
    suite.title = f"The paper's study ({variant}{shown_size})"
    suite.base_config = "configs/full.py"  # what each run's difference is shown against
    # Each run's config file is read with this argument (configs/full.py:VARIANT,size=SIZE); smoke is the demo's
    # data, tiny.
    suite.config_variant = ("demo" if variant == "smoke" else variant) + ("" if size == "full" else f",size={size}")
    suite.seeds = 1 if variant in ("demo", "smoke") else 3  # demo and smoke show the path, not a result
    # demo, smoke and utd_mhad runs build their data on first use; the suite's runs share it in DIR/<shared_data_dir>.
    suite.shared_data_dir = "data" if variant in ("demo", "smoke", "utd_mhad") else ""
    suite.reference = "main/full"
    # Every run evaluates its untrained model first: the curves' chance line and the retrieval chance line.
    suite.overrides = ml_collections.ConfigDict(
        {"train.eval_at_start": True, **VARIANT_OVERRIDES[variant]}, allow_dotted_keys=True
    )
    mmact_only = variant == "synthetic"
    smoke = variant == "smoke"
    # smoke runs one of each kind of run: one fixed temperature (a lambda sweep runs the full model with another
    # weight), one other segment count, one stored embedding kind and the full model under one other protocol, and
    # no other prompt set (14 runs instead of 37)
    lambdas, temperatures = ((), TEMPERATURES[-1:]) if smoke else (LAMBDAS, TEMPERATURES)
    segment_counts = (1,) if smoke else (1, 8)  # 1: the paper read literally; the full model has K = 4
    embeddings = EMBEDDINGS[-1:] if smoke else EMBEDDINGS
    protocols, protocol_runs = (PROTOCOLS[:1], ("full",)) if smoke else (PROTOCOLS, BASELINES)
    utd_mhad = variant == "utd_mhad"
    fixed_prompts_left_out = FIXED_PROMPTS_LEFT_OUT.get(variant, {})
    prompt_sets = [prompt_set for prompt_set in PROMPT_SETS if f"prompt_{prompt_set}" not in fixed_prompts_left_out]

    suite.groups = [
        {
            "name": "main",
            "title": "The full model and the baselines",
            "runs": [_run("full", **{"evals.robustness.at_end": True, "evals.attention.at_end": True})]
            + [_run(name, name) for name in BASELINES[1:]],
        },
        {
            "name": "ablations",
            "title": "Ablations: keyless attention, Transformer, contrastive term, segments K",
            "shown": ["main/full"],
            "runs": [
                _run("no_attention", "no_attention"),
                _run("no_transformer", "no_transformer"),
                _run("no_contrastive", "no_contrastive"),
            ]
            + [_run(f"segments_{count}", **{"model.num_segments": count}) for count in segment_counts],
        },
        {
            "name": "encoders",
            "title": "Sensor encoders: the paper's light CNN against InceptionTime-style blocks (config.model.encoder)",
            "shown": ["main/full", "main/sensor_only"],
            "runs": [
                _run("full_inception", **{"model.encoder": "inception"}),
                dict(
                    _run("sensor_only_inception", "sensor_only", **{"model.encoder": "inception"}),
                    reference="main/sensor_only",
                ),
            ],
        },
        {
            "name": "prompts",
            "title": "Prompt sets (a learned prompt per protocol) and stored video embedding kinds",
            "shown": ["main/full"],
            "skipped": NEEDS_MMACT if mmact_only else "",
            "excluded": fixed_prompts_left_out
            | ({"prompt_learned": LEARNED_PROMPTS[variant]} if variant in LEARNED_PROMPTS else {}),
            "runs": [_run(f"prompt_{prompt_set}", **{"data.prompt_set": prompt_set}) for prompt_set in prompt_sets]
            + ([] if variant in LEARNED_PROMPTS else _learned_prompt_runs())
            + [_run(f"embedding_{kind}", **{"data.embedding": kind}) for kind in embeddings],
        },
        {
            "name": "sweeps",
            "title": "Contrastive weight lambda and (fixed) temperature tau",
            "shown": ["main/full", "ablations/no_contrastive"],
            "runs": [_run(f"lambda_{value:g}", **{"loss.contrastive_weight": value}) for value in lambdas]
            + [
                _run(f"tau_{value:g}", **{"loss.temperature": value, "loss.learnable_temperature": False})
                for value in temperatures
            ],
        },
        {
            "name": "protocols",
            "title": "The other MMAct protocols (cross_subject is the main group)",
            "shown": [f"main/{name}" for name in BASELINES],
            "skipped": NEEDS_PROTOCOLS if mmact_only else UTD_PROTOCOLS if utd_mhad else "",
            "excluded": {
                "sensor_only-cross_view": "cross_view tests unseen cameras of the training trials: a "
                "sensor-only model would be tested on the recordings it trained on",
                **(
                    {
                        "the baselines, cross_scene and cross_session": "the smoke variant trains the full model under "
                        "one protocol"
                    }
                    if smoke
                    else {}
                ),
            },
            "runs": [
                dict(
                    _run(f"{name}-{protocol}", name, **{"data.protocol": protocol}),
                    reference=f"protocols/full-{protocol}",
                )
                for protocol in protocols
                for name in protocol_runs
                if f"{name}-{protocol}" != "sensor_only-cross_view"
            ],
        },
    ]
    suite.groups.append(
        _distillation_group(protocols if not (mmact_only or utd_mhad) else (), protocol_runs, loso=utd_mhad)
    )
    if utd_mhad:
        suite.groups.append(
            {
                "name": "loso",
                "title": "Leave one subject out: each of the 8 subjects tested once, by a model that never saw them",
                "runs": [
                    dict(
                        _run(name, name),
                        folds=[f"loso_s{subject}" for subject in UTD_MHAD_SUBJECTS],
                        reference="loso/full",
                    )
                    for name in LOSO_RUNS
                ],
            }
        )
    return suite
