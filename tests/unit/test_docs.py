"""The documentation cannot drift from the repository.

The guarantees table names tests that exist; every relative link in the README, benchmarks/RESULTS.md and docs/
resolves to a file or folder (and a `#anchor` to a heading of the page it names); every `python -m MODULE` and
`python path.py` they show names code that exists; the README stays short enough to read in two minutes.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import os
import re

import pytest


def _repository_root() -> str:
    """The folder holding pyproject.toml above this file (tests/ or a folder below it)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    while not os.path.exists(os.path.join(folder, "pyproject.toml")):
        folder = os.path.dirname(folder)
    return folder


REPO = _repository_root()
README_MAX_LINES = 250
OWN_PACKAGES = ("harjax", "data_builders", "benchmarks", "configs", "tests")


def _documents() -> list[str]:
    """The checked Markdown files, relative to the repository root."""
    docs = glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    return ["README.md", os.path.join("benchmarks", "RESULTS.md")] + sorted(os.path.relpath(p, REPO) for p in docs)


DOCUMENTS = _documents()


def _read(path: str) -> str:
    with open(os.path.join(REPO, path), encoding="utf-8") as file:
        return file.read()


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (a link there is not a link)."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped, spaces as hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@functools.cache
def _anchors(path: str) -> frozenset[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub numbers them."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_fence = False
    for line in _read(path).splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = None if in_fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    return frozenset(anchors)


def _links(text: str) -> list[str]:
    """The targets of Markdown links and images, outside code."""
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _without_code(text))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_resolves(document):
    problems = []
    for target in _links(_read(document)):
        if re.match(r"(https?:|mailto:)", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(document), path)) if path else document
        if not os.path.exists(os.path.join(REPO, resolved)):
            problems.append(f"{target}: no {resolved}")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
            problems.append(f"{target}: {resolved} has no heading with the anchor #{anchor}")
    assert not problems, f"{document}: " + "; ".join(problems)


def _module_exists(module: str) -> bool:
    parts = module.split(".")
    if parts[0] in OWN_PACKAGES:
        base = os.path.join(REPO, *parts)
        return any(
            os.path.isfile(candidate)
            for candidate in (base + ".py", os.path.join(base, "__main__.py"), os.path.join(base, "__init__.py"))
        )
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_command_names_code_that_exists(document):
    text = _read(document)
    modules = set(re.findall(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*\w)", text))
    scripts = set(re.findall(r"\b(?:python3?|bash)\s+((?:[\w.-]+/)*[\w.-]+\.(?:py|sh))\b", text))
    missing = sorted(f"python -m {m}" for m in modules if not _module_exists(m))
    missing += sorted(s for s in scripts if not os.path.isfile(os.path.join(REPO, s)))
    assert not missing, f"{document} names commands with no code behind them: {', '.join(missing)}"


def test_the_readme_is_read_in_two_minutes():
    lines = _read("README.md").count("\n")
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines, at most {README_MAX_LINES}; move detail into docs/"


def _test_functions(file_name: str) -> set[str]:
    """The test functions of every tests/ file of that name (tests live in tests/, tests/unit, tests/integration)."""
    functions: set[str] = set()
    for path in glob.glob(os.path.join(REPO, "tests", "**", file_name), recursive=True):
        tree = ast.parse(open(path, encoding="utf-8").read())
        functions |= {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        }
    return functions


def _test_file_exists(file_name: str) -> bool:
    return bool(glob.glob(os.path.join(REPO, "tests", "**", file_name), recursive=True))


def test_every_guarantee_names_tests_that_exist():
    page = _read(os.path.join("docs", "guarantees.md"))
    table = page[page.index("| promise") :].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 10
    for row in rows:
        checked_by = row.rstrip(" |").rsplit("|", 1)[1]
        current_file = None
        for file_name, function in re.findall(r"(test_\w+\.py)?(?:::)?(test_\w+)?", checked_by):
            if file_name:
                current_file = file_name
                assert _test_file_exists(file_name), f"{row}: {file_name} does not exist under tests/"
            if function:
                assert current_file and function in _test_functions(current_file), f"{row}: no {function}"
