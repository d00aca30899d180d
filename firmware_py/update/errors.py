"""Errors of the update package; each message names the problem and the fix."""

from __future__ import annotations

from firmware_py.errors import ExitCode, KaoclockError


class BundleError(KaoclockError):
    """A release bundle was refused (forged, tampered, truncated, unsafe or unusable).

    Raised before anything on the reader is changed.
    """

    exit_code = ExitCode.BUNDLE_REFUSED


class UpdateError(KaoclockError):
    """An update, rollback or slot operation could not be done as asked."""

    exit_code = ExitCode.UPDATE_FAILED
