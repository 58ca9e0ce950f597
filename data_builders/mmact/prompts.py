"""MMAct's prompt sets for the video embeddings: edit here, then re-extract; the paper's prompt ablation runs on them.

A context describes the scene; the model family places it before the video (harjax/video/families.py says why).
"""

from __future__ import annotations

from harjax.video import families

# prompt set -> {scene or None: context}; None is the context for every scene the set does not name.
PROMPT_SETS: dict[str, dict[int | None, str]] = {
    "plain": {None: ""},
    "context": {None: "The person is in a crowded office with other people walking around. "},
    "scene": {
        1: "The person is in a free, open space with nothing around. ",
        2: "The person is partly hidden behind furniture and other objects. ",
        3: "The person is at a desk with a computer, a phone and a cup. ",
        4: "The person is at a station entrance with gates and passers-by. ",
    },
}


def context(prompt_set: str, scene: int) -> str:
    """The context a clip of `scene` is read with under `prompt_set` (the model family writes the prompt around it)."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(
            f"unknown prompt set {prompt_set!r}; choose one of {sorted(PROMPT_SETS)} (data_builders/mmact/prompts.py)"
        )
    contexts = PROMPT_SETS[prompt_set]
    found = contexts.get(scene, contexts.get(None))
    if found is None:
        raise ValueError(f"prompt set {prompt_set!r} has no context for scene {scene} and no default")
    return found


def vocabulary() -> list[str]:
    """Every word the prompts use, in any family's layout (for the tiny offline tokenizer of tests and the demo)."""
    return families.words(context for contexts in PROMPT_SETS.values() for context in contexts.values())
