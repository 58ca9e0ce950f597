"""The errors a person can fix, and what the command lines do with them.

An error about the user's input (a config key, a flag, a file, the data, a workdir) is a UserError: its message
names the key, flag or file and what was expected, and every command line prints it on one line and exits with
status 2, absl's and argparse's usage status (harjax/cli.py). Any other exception is a bug and keeps its
traceback.
"""


class UserError(ValueError):
    """Input a person can fix; the message names it and what was expected."""


class ConfigError(UserError):
    """A setting (config key or flag) no run can use; the message names the key."""
