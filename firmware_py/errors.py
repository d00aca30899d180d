"""Exceptions every package shares.

Each carries a message meant for the person at the terminal: it names the
thing that is wrong and, where one exists, the fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the ``kaoclock`` command's exit status means: one meaning per number (see :data:`EXIT_MEANINGS`)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNAVAILABLE = 3
    BUNDLE_REFUSED = 4
    UPDATE_FAILED = 5
    ROLLED_BACK = 6
    ENROL_REFUSED = 7
    STORAGE = 8
    KEY_REFUSED = 9
    INTERRUPTED = 130


# The one table of exit statuses: `kaoclock --help` prints it, README.md copies it (a test compares them).
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: 'the command ran and its answer is "no": not healthy, no result, part not fitted, not reproduced',
    ExitCode.USAGE: "the command line, the config or an input file is wrong; nothing was changed",
    ExitCode.UNAVAILABLE: "a part it needs is missing or unusable: model file, camera, GPIO back end, serial port, broker",
    ExitCode.BUNDLE_REFUSED: "a release bundle was refused (signature, hash, format); nothing was installed",
    ExitCode.UPDATE_FAILED: "an update, a rollback or a release key could not be done as asked",
    ExitCode.ROLLED_BACK: "an update ran but was not committed (its health check failed: rolled back)",
    ExitCode.ENROL_REFUSED: "a photo failed an enrolment gate; nothing was stored",
    ExitCode.STORAGE: "stored state (gallery, outbox, backend database) cannot be opened or written",
    ExitCode.KEY_REFUSED: "a provisioned reader's device key is missing, unreadable or not the provisioned one: it refuses to run",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C",
}


def exit_code_table() -> str:
    """:data:`EXIT_MEANINGS` as aligned text lines."""
    return "\n".join(f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_MEANINGS.items())


class KaoclockError(Exception):
    """Base of every error kaoclock reports to a user.

    ``exit_code`` is what the CLI exits with when this error ends a command.
    """

    exit_code: int = ExitCode.FAILED


class UsageError(KaoclockError):
    """The command line or an input file given to a command is wrong."""

    exit_code = ExitCode.USAGE
