"""Builds UTD-MHAD's TFDS dataset ('utd_mhad') from its manifest, with its 27 classes in action order.

    python -m data_builders.utd_mhad.layout --release_dir=R --output=M.jsonl
    python -m data_builders.recordings.extract_embeddings --manifest=M.jsonl --output_dir=E --prompt_set=context
    python -m data_builders.utd_mhad.build --manifest=M.jsonl --embeddings_dir=E --data_dir=D

Protocols: cross_subject (odd subjects train, even test) and loso_s1 .. loso_s8 (one subject out each). The
recordings builder does the rest (data_builders/recordings/build.py); sequences the release lacks are listed in
its build report as missing files.
"""

from __future__ import annotations

import argparse
from typing import Any

from data_builders.recordings import build as recordings_build
from data_builders.utd_mhad import layout
from harjax import cli

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


def main(argv: list[str]) -> None:
    """Builds UTD-MHAD from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="written by python -m data_builders.utd_mhad.layout")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--embeddings_dir", default=None, help="none: a sensors-only dataset")
    parser.add_argument("--prompt_set", default="context")
    parser.add_argument("--embedding", default="video_mean_last")
    parser.add_argument("--allow_missing_embeddings", action="store_true", help="as the recordings build's")
    parser.add_argument("--replace", action="store_true", help="as the recordings build's")
    args = parser.parse_args(argv[1:])
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
    cli.run(main, parser=cli.own_arguments)
