"""Exceptions every package shares.

Each carries a message meant for the person at the terminal: it names the
thing that is wrong and, where one exists, the fix.
"""

from __future__ import annotations


class KaoclockError(Exception):
    """Base of every error kaoclock reports to a user.

    ``exit_code`` is what the CLI exits with when this error ends a command.
    """

    exit_code = 1


class UsageError(KaoclockError):
    """The command line or an input file given to a command is wrong."""

    exit_code = 2
