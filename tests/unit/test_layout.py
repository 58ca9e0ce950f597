"""The packages depend one way: data_builders builds datasets with harjax, and harjax never imports data_builders."""

import ast
import os

import pytest

from harjax import errors
from harjax.data import demos
from tests.conftest import REPO


def _imported_modules(path: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, in functions too, and of every importlib.import_module('...')."""
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_no_harjax_module_imports_data_builders():
    offending = []
    for root, _, files in os.walk(os.path.join(REPO, "harjax")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                offending += [
                    f"{os.path.relpath(path, REPO)}:{line} imports {module}"
                    for line, module in _imported_modules(path)
                    if module == "data_builders" or module.startswith("data_builders.")
                ]
    assert not offending, "harjax must not import data_builders:\n" + "\n".join(offending)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    path = tmp_path / "module.py"
    path.write_text("def f():\n    from data_builders.a import b\n    importlib.import_module('data_builders.b')")
    assert [module for _, module in _imported_modules(str(path))] == ["data_builders.a", "data_builders.b"]


def test_the_demos_are_found_through_the_registry():
    registered = demos.registered()
    assert {"mmact", "utd_mhad"} <= set(registered)
    for name in ("mmact", "utd_mhad"):
        assert callable(demos.find(name))


def test_an_unregistered_demo_is_refused_naming_the_registered_ones():
    with pytest.raises(errors.ConfigError, match=r"no demo of dataset 'lab'.*'mmact'.*'utd_mhad'"):
        demos.find("lab")
