"""The flags every dataset's extraction command shares: where to write, which model, batches, shards, device.

Importing this module defines them, once per process: absl's flags are process-wide and a name is defined once.
data_builders/mmact/extract_embeddings.py and data_builders/recordings/extract_embeddings.py import it from their
define_flags(), never at their top, because they are libraries too: the demos harjax.main runs and the benchmarks
import them, with flags of these names of their own. Each command reads the values with flags.FLAGS and hands them
to data_builders/extraction.py's `extract`, which checks them (its errors name the flag).
"""

from __future__ import annotations

from absl import flags

from harjax.video.extractor import DEFAULT_MODEL

OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "where the embeddings go: <output_dir>/<prompt_set>/<clip>.npz", required=True
)
MODEL = flags.DEFINE_string("model", DEFAULT_MODEL, "hub id or local path")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "clips per forward")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "how many shards the clips are cut into (a GPU or machine each)")
SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "the shard this process extracts (0 .. --num_shards - 1)")
DEVICE = flags.DEFINE_string("device", "cuda", "cuda, cuda:1, cpu")
LEARNED_PROMPT = flags.DEFINE_string(
    "learned_prompt", None, "with --prompt_set=learned: a soft prompt (data_builders.prompt_tuning)"
)
DECODE_WORKERS = flags.DEFINE_integer(
    "decode_workers",
    None,
    "processes decoding the next batches while the model runs (default: every core but one, 1 to 8; "
    "0: decode between forwards)",
)
