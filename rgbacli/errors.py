"""Errors a user can act on: the CLI prints their message as one line and exits non-zero."""


class RgbaError(Exception):
    """A problem with the user's input or environment (not a bug). Exit code 1."""

    exit_code = 1


class UsageError(RgbaError):
    """Bad arguments or option values. Exit code 2, like other command-line tools."""

    exit_code = 2


class MediaError(RgbaError):
    """A media file is missing, unreadable, truncated or cannot be written."""


class WeightsError(RgbaError):
    """Model weights are missing, incomplete or in an unexpected layout."""


class OutputExistsError(RgbaError):
    """The output exists and --force was not given."""
