"""The paper's model: Video-LLaVA embeddings + sensor CNN, keyless attention per segment, Transformer, CE + InfoNCE.

Variants (the part after ':'):
  --config=configs/full.py            MMAct (config.data.source='mmact'; set config.data.data_dir)
  --config=configs/full.py:synthetic  built-in synthetic data, in memory, runs anywhere in a few minutes
  --config=configs/full.py:demo       the whole MMAct path on a generated tree: synthetic release -> tiny
                                      Video-LLaVA embeddings -> TFDS dataset -> training (needs the [demo] extra)
  --config=configs/full.py:utd_mhad   UTD-MHAD's 27 actions (cross_subject; loso_s1..loso_s8 with data.protocol):
                                      a generated release by default, as the demo; the real one once built, with
                                      --config.data.data_dir=D (the README's "UTD-MHAD")
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

VARIANTS = ("mmact", "synthetic", "demo", "utd_mhad")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """The config of a variant: 'mmact' (the default), 'synthetic', 'demo' or 'utd_mhad'."""
    variant = variant or "mmact"
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; choose one of {VARIANTS} (configs/full.py:VARIANT)")
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "mmact"  # 'synthetic' | 'npz' | 'mmact' | 'recordings' (a manifest's TFDS dataset)
    config.data.dataset = "recordings"  # recordings: the TFDS dataset's name (build --name; 'utd_mhad')
    config.data.train_path = ""  # npz: training split
    config.data.eval_path = ""  # npz: evaluation split
    config.data.num_classes = 0  # npz: 0 = from 'class_names' in the file, else the largest label + 1
    config.data.sampling_rate_hz = 50.0  # npz, synthetic: the sensor steps' rate (MMAct: the dataset's own)
    # 'dataset': by the training split's per-channel statistics; 'recording': each recording by its own
    # (harjax/data/normalization.py says when each fits).
    config.data.sensor_normalization = "dataset"
    # Held out of the training split for model selection (the best checkpoint), whole subjects where the data
    # names them (MMAct; npz 'subject'); 0: none, and the best checkpoint is chosen on the eval split.
    config.data.validation_fraction = 0.0
    # mmact: cross_subject | cross_view | cross_scene | cross_session; recordings: the dataset's (its build report)
    config.data.protocol = "cross_subject"
    config.data.data_dir = ""  # mmact, recordings: the TFDS data_dir the builder wrote to
    # mmact: plain | context | scene (data_builders/mmact/prompts.py) | learned (the prompt learned on
    # config.data.protocol: data_builders/prompt_tuning.py)
    config.data.prompt_set = "context"
    config.data.embedding = "video_mean_last"  # mmact: which stored video embedding kind feeds v
    config.data.tfds_config = ""  # mmact: '' = '<prompt_set>-<embedding>'
    config.data.max_length = 512  # mmact: sensor steps at 50 Hz; longer trials are cropped
    config.data.prepare_demo_data = False  # generate, extract and build the demo dataset first (harjax.main)
    # The demo's generated release: 'demo' (MMAct: 480 trials; UTD-MHAD: 432) or 'tiny' (24; 216, for tests)
    config.data.demo_tree = "demo"
    # Worker processes that build training batches (0: threads in the training process). Decoding MMAct records
    # holds the GIL: on a GPU host give each training process a few cores' worth.
    config.data.num_workers = 4
    # Where training data lives (harjax/data/pipeline.py): 'device' (on the accelerators, gathered inside the step),
    # 'host' (in memory, vectorised gathers), 'none' (records read per batch) or 'auto', the first that fits in
    # cache_memory_fraction of the free memory it would live in.
    config.data.cache = "auto"
    config.data.cache_memory_fraction = 0.5
    # Training-time augmentation inside the train step (harjax/training/augment.py); all off in the paper's recipe.
    config.data.augment = ml_collections.ConfigDict(
        dict(
            jitter=0.0,
            scale=0.0,
            magnitude_warp=0.0,
            time_warp=0.0,
            knots=4,
            crop=0.0,
            shift=False,
            stream_drop=0.0,
            video_noise=0.0,
            video_drop=0.0,
        )
    )
    # The synthetic source (harjax/data/synthetic.py): task 'pairs' checks that fusion works; 'bursts' (the
    # experiment suite's) needs the video to find the one burst of motion that names the class.
    config.data.synthetic = ml_collections.ConfigDict(
        dict(
            task="pairs",
            num_train=4096,
            num_eval=1024,
            num_classes=37,
            seq_len=128,
            channels=12,
            video_dim=512,
            min_length_fraction=0.4,
            noise=0.5,
            num_contexts=3,
            burst_steps=16,
            kind_offset=2.0,
        )
    )  # 'bursts' only: kinds of burst, their length, marker

    config.model = ml_collections.ConfigDict()
    config.model.modalities = "both"  # 'both' | 'video' | 'sensor'
    config.model.fusion = "attention"  # 'attention' (paper) | 'concat' | 'late'
    config.model.use_transformer = True
    config.model.num_segments = 4  # K joint tokens; 1 is the paper read literally
    # The sensor encoder: 'cnn' (the paper's light CNN: encoder_channels, encoder_strides, encoder_kernel_size),
    # 'inception' (InceptionTime-style multi-scale blocks seeing ~230 steps: config.model.inception) or 'minirocket'
    # (MiniRocket's fixed kernels and PPV features, biases fitted from the training split before step 0, per window
    # of `stride` steps, projected to `dim`: config.model.minirocket; `length` 0 is config.data.max_length, the
    # length its dilations are chosen for; `pad_to_length` reads each recording as followed by zeros up to it, so
    # its duration shows in the features).
    config.model.encoder = "cnn"
    config.model.inception = ml_collections.ConfigDict(
        dict(depth=6, filters=32, kernel_sizes=(9, 19, 39), bottleneck=32, residual_every=3, stride=1, norm="layer")
    )
    config.model.minirocket = ml_collections.ConfigDict(
        dict(length=0, num_features=10_000, max_dilations=32, seed=0, stride=8, dim=128, pad_to_length=False)
    )
    # The classifier: 'mlp' (over the tokens above, trained) or 'ridge' (sensors alone with the MiniRocket encoder: a
    # ridge classifier on the whole recording's standardised features, fitted in closed form before step 0 with its
    # penalty chosen by leave-one-out, as aeon's MiniRocketClassifier; nothing is trained: harjax/models/ridge.py).
    config.model.head = "mlp"
    # Beside a trained encoder and head of the sensors alone: a member of the other family, that ridge on MiniRocket's
    # features, fitted before step 0; predictions mix the probabilities, this share to the ridge's (0: no such member).
    config.model.ridge_weight = 0.0
    # Members trained side by side in one jitted step (vmapped), each with its own initialisation, dropout and
    # augmentation; predictions average their probabilities. 1: a single model, no member axis.
    config.model.ensemble_size = 1
    # How the train step runs the members: 'vmap' (one batched program), 'sequential' (one update after another in
    # the same step), 'auto' (sequential on CPU, where vmapped convolutions were measured slower; vmap elsewhere).
    config.model.ensemble_step = "auto"
    config.model.encoder_channels = (64, 128, 128)
    config.model.encoder_strides = (1, 2, 2)
    config.model.encoder_kernel_size = 5
    # The encoder blocks' backward: 'hand_written' (faster on CPU), 'autodiff' (the reference) or 'auto' (by
    # platform, from benchmarks/RESULTS.md). The parameters are the same: checkpoints move between them.
    config.model.encoder_backward = "auto"
    config.model.model_dim = 128
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.mlp_dim = 256
    config.model.head_dim = 256
    config.model.dropout = 0.1
    config.model.projection_dim = 128  # shared space of the contrastive term
    config.model.dtype = "float32"  # 'bfloat16': bf16 compute, float32 parameters and losses

    config.loss = ml_collections.ConfigDict()
    config.loss.contrastive_weight = 0.1  # lambda
    config.loss.label_smoothing = 0.0  # share of each training target spread over all classes (the paper: none)
    config.loss.temperature = 0.07  # tau, the initial value when learnable
    config.loss.learnable_temperature = True
    config.loss.max_logit_scale = 100.0  # 1 / tau is clamped here, as in CLIP

    # Distillation (harjax/serving/teacher.py): train on a teacher's softened logits as well as the labels, e.g. a
    # sensor-only student of the fused model. The loss is (1 - weight) * CE + weight * T^2 * KL(teacher || student).
    config.distill = ml_collections.ConfigDict()
    config.distill.teacher = ""  # a teacher's bundle or training workdir (its best checkpoint); '' = no teacher
    config.distill.temperature = 4.0  # T: softens both distributions (Hinton et al. use 2-20; 4 is common for HAR)
    config.distill.weight = 0.7  # the teacher's share of the loss
    # 'augmented': the teacher's logits on each augmented batch, the view the student sees (computed in the train
    # step); 'example': once per training example, unaugmented, cached in the workdir (teacher_logits.npz).
    config.distill.targets = "example"

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # global, over all devices and processes
    config.train.eval_batch_size = 256
    config.train.num_steps = 20_000
    # A budget in passes over the training split instead (0: off). With it, num_steps, warmup_steps, eval_every and
    # checkpoint_every follow from num_epochs, warmup_epochs, eval_every_epochs and checkpoint_every_epochs.
    config.train.num_epochs = 0.0
    # Or a floor (0: off): num_steps, raised to this many passes where the split is large (the cadences stay in steps).
    config.train.min_epochs = 0.0
    config.train.warmup_epochs = 0.0
    config.train.eval_every_epochs = 0.0
    config.train.checkpoint_every_epochs = 0.0
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 500
    config.train.final_learning_rate_fraction = 0.01
    config.train.weight_decay = 0.05
    config.train.grad_clip_norm = 1.0
    config.train.log_every = 50
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3

    config.train.eval_at_start = False  # also evaluate the untrained model at step 0 (the chance line of curves)
    config.train.profile_steps = ()  # (first, stop): a jax.profiler trace of steps first..stop-1 in <workdir>/profile

    # Evaluators (harjax/evaluators/): each entry's type, split, checkpoint and cadence. `every` and `at_start`
    # default to config.train.eval_every and eval_at_start. With a validation split (data.validation_fraction),
    # 'val' selects the checkpoint and the test split is scored after training only, at the last step ('eval') and
    # at the selected checkpoint ('eval_selected'); without one, 'eval' selects (harjax/evaluators/common.py).
    config.evals = ml_collections.ConfigDict()
    config.evals.val = dict(
        type="classification", split="validation", every=placeholder(int), at_start=placeholder(bool)
    )
    config.evals.val_retrieval = dict(
        type="retrieval", split="validation", prefix="val/", every=placeholder(int), at_start=placeholder(bool)
    )
    config.evals.eval = dict(type="classification", split="test", every=placeholder(int), at_start=placeholder(bool))
    config.evals.eval_retrieval = dict(
        type="retrieval", split="test", prefix="eval/", every=placeholder(int), at_start=placeholder(bool)
    )
    config.evals.eval_selected = dict(type="classification", split="test", checkpoint="selected", every=0, at_end=True)
    config.evals.eval_selected_retrieval = dict(
        type="retrieval", split="test", checkpoint="selected", prefix="eval_selected/", every=0, at_end=True
    )
    # Analyses of the final checkpoint, into <workdir>/analysis/; switched on with at_end=True.
    config.evals.robustness = dict(
        type="robustness", split="test", every=0, at_end=False, occlusion_fractions=(0.1, 0.25, 0.5)
    )  # of each recording's recorded steps
    config.evals.attention = dict(
        type="attention", split="test", every=0, at_end=False, examples=6
    )  # one eval example from each of this many classes

    if variant == "demo":
        config.data.prepare_demo_data = True  # into config.data.data_dir, or <workdir>/demo_data
        config.data.num_workers = 0  # the demo runs on small machines
        config.data.max_length = 256
        config.train.batch_size = 64
        config.train.num_steps = 600
        config.train.warmup_steps = 50
        config.train.eval_every = 200
        config.train.checkpoint_every = 200
    if variant == "utd_mhad":
        config.data.source = "recordings"
        config.data.dataset = "utd_mhad"
        config.data.prepare_demo_data = True  # reads a build of the release in config.data.data_dir when it is there
        config.data.num_workers = 0
        config.data.max_length = 256  # the release's sequences are 2-4 s at 50 Hz
        config.train.batch_size = 64
        config.train.num_steps = 600
        config.train.warmup_steps = 50
        config.train.eval_every = 200
        config.train.checkpoint_every = 200
    if variant == "synthetic":
        config.data.source = "synthetic"
        config.data.num_workers = 0  # in memory: nothing to decode
        config.train.num_steps = 800
        config.train.warmup_steps = 100
        config.train.eval_every = 200
        config.train.checkpoint_every = 200
    return config
