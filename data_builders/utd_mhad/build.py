"""Builds UTD-MHAD's TFDS dataset ('utd_mhad') from its manifest, with its 27 classes in action order.

    python -m data_builders.utd_mhad.layout --release_dir=R --output=M.jsonl
    python -m data_builders.recordings.extract_embeddings --manifest=M.jsonl --output_dir=E --prompt_set=context
    python -m data_builders.utd_mhad.build --manifest=M.jsonl --embeddings_dir=E --data_dir=D

Protocols: cross_subject (odd subjects train, even test) and loso_s1 .. loso_s8 (one subject out each). The
recordings builder does the rest (data_builders/recordings/build.py); sequences the release lacks are listed in
its build report as missing files.
"""

from __future__ import annotations

import functools
from typing import Any

from absl import flags

from data_builders.recordings import build as recordings_build
from data_builders.utd_mhad import layout
from harjax import cli
from harjax.video import extractor as extractor_lib

NAME = "utd_mhad"
PROTOCOL = "cross_subject"


def build(
    manifest_path: str, data_dir: str, embeddings_dir: str | None = None, prompt_set: str = "context", **options: Any
) -> tuple[str, dict[str, Any]]:
    """(dataset directory, build report) of UTD-MHAD; `options` go to the recordings build (e.g. embedding)."""
    return recordings_build.build(
        manifest_path,
        data_dir,
        embeddings_dir,
        prompt_set,
        name=NAME,
        leave_subjects_out=True,
        split_protocol=PROTOCOL,
        class_names=layout.ACTIONS,
        **options,
    )


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the UTD-MHAD demo, which harjax.main runs) have flags of these names, and absl's flags are
    process-wide.
    """
    flags.DEFINE_string("manifest", None, "written by python -m data_builders.utd_mhad.layout", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir to build into", required=True)
    flags.DEFINE_string("embeddings_dir", None, "none: a sensors-only dataset")
    flags.DEFINE_string("prompt_set", "context", "plain, context, or learned_<protocol> (as the recordings build's)")
    flags.DEFINE_enum(
        "embedding",
        "video_mean_last",
        extractor_lib.EMBEDDING_KINDS,
        "which stored embedding (as the recordings build's)",
    )
    flags.DEFINE_bool("allow_missing_embeddings", False, "as the recordings build's")
    flags.DEFINE_bool("replace", False, "as the recordings build's")


def main(argv: list[str]) -> None:
    """Builds UTD-MHAD from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    recordings_build.print_report(
        *build(
            args.manifest,
            args.data_dir,
            args.embeddings_dir,
            args.prompt_set,
            embedding=args.embedding,
            allow_missing_embeddings=args.allow_missing_embeddings,
            replace=args.replace,
        )
    )


if __name__ == "__main__":
    define_flags()
    cli.run(main)
