"""InputError: bad input from the user, as opposed to a bug.

A config key, an argument, a data file, a model directory or a checkpoint that cannot be used raises InputError with
a message naming what is wrong and, where there is one, what to do instead. The `gsa` command prints that message as
one line, ``gsa <command>: error: <message>``, and exits with status 2 (argparse's convention for usage errors);
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """Unusable user input; the message names it. A ValueError, so code that catches ValueError still does."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (KeyError's quotes dropped, line breaks folded)."""
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    return " ".join(text.split())


def run_command(prog: str, run: Callable[[T], int], args: T) -> int:
    """`run(args)`, with an InputError printed as ``<prog>: error: <message>`` on stderr and exit status 2."""
    try:
        return run(args)
    except InputError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2


class OptionError(ValueError):
    """A bad value of one argument: the message is `argument` followed by `detail`. A class that takes its options
    under other names (GSAConfig's fields) re-raises it as its own with `under`."""

    def __init__(self, argument: str, detail: str):
        super().__init__(f"{argument}{detail}")
        self.argument, self.detail = argument, detail

    def under(self, owner: str, names: dict[str, str] | None = None) -> ValueError:
        """The same error naming `owner.<field>`, the field being names[argument] where the owner renames it."""
        return ValueError(f"{owner}.{(names or {}).get(self.argument, self.argument)}{self.detail}")
