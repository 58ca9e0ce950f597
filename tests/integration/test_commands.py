"""Every command of harjax/, data_builders/ and benchmarks/ reads its flags one way: absl's, through harjax.cli.run.

A command is a module with an `if __name__ == "__main__":` block, found here rather than listed, so a new one is
checked the day it is written (docs/edge/onnx_stream.py is left out: it is numpy and onnxruntime only, on purpose).
Each is run once in a subprocess with an unknown flag given twice: only harjax.cli.run answers that with status 2 and
the one line `<module>: error: --no_such_flag is given twice` (argparse prints its usage, and absl's own app.run
keeps the last value or reports the unknown flag over several lines). An unknown flag given once is one line as well,
checked on a command of each package.
"""

import concurrent.futures
import os
import re
import subprocess
import sys

from tests.conftest import REPO

PACKAGES = ("harjax", "data_builders", "benchmarks")
MAIN_BLOCK = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.MULTILINE)
CASES = {
    "repeated unknown flag": (["--no_such_flag=1", "--no_such_flag=2"], "--no_such_flag is given twice"),
    "unknown flag": (["--no_such_flag=1"], "no_such_flag"),
}
ONE_OF_EACH_PACKAGE = ("harjax.main", "data_builders.mmact.build", "benchmarks.flops")  # the unknown flag given once


def commands() -> list[str]:
    """The modules, by dotted name, of the packages' files with a main block (tests excluded)."""
    found = []
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if not name.endswith(".py") or name.startswith("test_") or name.endswith("_test.py"):
                    continue
                path = os.path.join(folder, name)
                with open(path) as f:
                    if MAIN_BLOCK.search(f.read()):
                        found.append(os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, "."))
    return sorted(found)


def _run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_commands_are_found():
    found = commands()
    assert {"harjax.main", "data_builders.prompt_tuning", "benchmarks.flops"} <= set(found)
    assert not any(module.startswith("tests.") or module.endswith("_test") for module in found)


def test_every_command_refuses_a_bad_command_line_in_one_line_with_status_2():
    """All runs at once (each is mostly imports: 1-5 s of one core), so the test costs about the slowest few."""
    runs = [(module, "repeated unknown flag") for module in commands()]
    runs += [(module, "unknown flag") for module in ONE_OF_EACH_PACKAGE]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = dict(zip(runs, pool.map(lambda run: _run(run[0], CASES[run[1]][0]), runs), strict=True))
    failures = []
    for (module, case), result in done.items():
        lines = result.stderr.strip().splitlines()
        expected = CASES[case][1]
        if not (
            result.returncode == 2
            and len(lines) == 1
            and lines[0].startswith(f"{module}: error: ")
            and expected in lines[0]
        ):
            failures.append(f"{module} ({case}): status {result.returncode}, stderr:\n{result.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
