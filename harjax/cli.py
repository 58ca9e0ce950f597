"""How every harjax command line runs: absl's app.run, with its flags checked and input errors on one line.

- A flag given twice is refused (absl would keep the last silently, and ml_collections concatenates a repeated
  tuple override: `--config.model.encoder_channels=(16,32) --config.model.encoder_channels=(8,16)`), unless it
  collects every value it is given (absl's DEFINE_multi_*: `--override=A --override=B`).
- Config keys that moved are refused, naming where they went (harjax/evaluators/common.py: MOVED_KEYS).
- An error about the user's input (errors.UserError, absl's flag errors, an override of a key the config lacks)
  prints one line, `<program>: error: <message>`, and exits with status 2; any other exception keeps its traceback.
- Ctrl-C prints one line and exits with status 130; the training loop checkpoints first
  (harjax/training/checkpointing.py), and harjax.main then exits with 130, or 143 after SIGTERM.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from absl import app, flags

from harjax import errors

USAGE_STATUS = 2  # absl's and argparse's status for a usage error
INTERRUPTED_STATUS = 130  # a shell's status after Ctrl-C
TERMINATED_STATUS = 143  # a shell's status after SIGTERM (a preemption)


def fail(message: str) -> None:
    """Prints `message` as the program's one-line error and exits with the usage status."""
    text = str(message).strip()
    if "Traceback (most recent call last)" in text:  # absl wraps a config file's exception with its traceback
        text = f"{text.splitlines()[0].rstrip(':')}: {text.splitlines()[-1].strip()}"
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    print(f"{_program_name()}: error: {line}", file=sys.stderr)
    sys.exit(USAGE_STATUS)


def _program_name() -> str:
    """'python -m harjax.main' reads as harjax.main."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0] if sys.argv else "harjax")


def _flag_name(argument: str) -> str | None:
    """The flag an argument sets ('--config.a.b=1' -> 'config.a.b', '--noreport' -> 'report'), or None."""
    if not argument.startswith("--") or argument == "--":
        return None
    name = argument[2:].split("=", 1)[0]
    if name.startswith("no") and name not in flags.FLAGS and name[2:] in flags.FLAGS:
        name = name[2:]
    return name


def _accumulates(name: str) -> bool:
    """Whether a flag collects every value it is given (absl's multi flags): repeating it is how it is used."""
    return name in flags.FLAGS and isinstance(flags.FLAGS[name], flags.MultiFlag)


def check_arguments(argv: list[str]) -> None:
    """Refuses a repeated flag and a config key that moved, before absl parses anything."""
    seen: dict[str, str] = {}
    for argument in argv[1:]:
        if argument.startswith("--config."):  # imported here: a command's bad flag is refused before JAX loads
            from harjax.evaluators import common as evaluators

            moved = evaluators.moved_key_message(argument)
            if moved:
                fail(moved)
        name = _flag_name(argument)
        if name is None:
            continue
        if name in seen and not _accumulates(name):
            fail(f"--{name} is given twice ({seen[name]} and {argument}); give each flag once")
        seen[name] = argument


def _unknown_key_message(error: Exception, argv: list[str]) -> str:
    """An override of a key the config lacks, named by the flag that gave it (with ml_collections' suggestion)."""
    text = (str(error.args[0]) if error.args else str(error)).replace("\\'", "'").replace("\\n", " ")
    missing = re.findall(r"'([A-Za-z0-9_]+)'", text)
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
    for argument in argv[1:]:
        name = _flag_name(argument) or ""
        if name.startswith("config.") and any(part in missing for part in name.split(".")[1:]):
            return f"--{name}: the config has no key {name[len('config.') :]!r}{hint}"
    return f"a --config.KEY override names a key the config does not have ({' '.join(text.split())}){hint}"


def parse_flags(argv: list[str], parser: Callable[[list[str]], list[str]] | None = None) -> list[str]:
    """absl's flag parsing (or `parser`), after check_arguments; what the command line gets wrong is one line."""
    check_arguments(argv)
    try:
        remaining = (parser or flags.FLAGS)(argv)
        for name in flags.FLAGS:  # a config file that failed to load is reported only when its value is read
            value = flags.FLAGS[name].value
            if type(value).__name__ == "_ErrorConfig":
                value._ReportError()
        return remaining
    except OSError as error:  # a config file that cannot be read: its last line names the file and the cause
        fail(f"--{name}: cannot load the config file: {str(error).strip().splitlines()[-1].strip()}")
    except flags.Error as error:
        fail(str(error))
    except (AttributeError, KeyError) as error:  # ml_collections: an override of a key the locked config lacks
        fail(_unknown_key_message(error, argv))
    except (errors.UserError, ValueError) as error:  # a config file's own check (e.g. an unknown variant)
        fail(str(error))


def define_positive_integers(name: str, default: str, help_text: str) -> flags.FlagHolder[list[str]]:
    """A flag of comma-separated positive integers (--batch_size=8,16), refused at parsing otherwise."""
    holder = flags.DEFINE_list(name, default, help_text)
    flags.register_validator(
        name,
        lambda values: bool(values) and all(value.strip().isdigit() and int(value) >= 1 for value in values),
        f"--{name}: expected comma-separated positive integers",
    )
    return holder


def run(main: Callable[[list[str]], None], parser: Callable[[list[str]], list[str]] | None = None) -> None:
    """app.run(main) with checked flags, one-line input errors (status 2) and a one-line Ctrl-C (status 130)."""

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except (errors.UserError, app.UsageError) as error:
            fail(str(error))
        except KeyboardInterrupt:
            print(f"{_program_name()}: interrupted (Ctrl-C)", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)

    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, parser))
