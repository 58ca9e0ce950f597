"""The README's promises point at tests that exist, so the guarantees table cannot drift from the suite."""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _test_functions(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_guarantee_names_tests_that_exist():
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme[readme.index("## What harjax guarantees") :]
    section = section[: section.index("\n## ", 3)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 10
    for row in rows:
        checked_by = row.rstrip(" |").rsplit("|", 1)[1]
        current_file = None
        for reference in re.findall(r"(test_\w+\.py)?(?:::)?(test_\w+)?", checked_by):
            file_name, function = reference
            if file_name:
                current_file = os.path.join(REPO, "tests", file_name)
                assert os.path.exists(current_file), f"{row}: {file_name} does not exist"
            if function:
                assert current_file and function in _test_functions(current_file), f"{row}: no {function}"
