"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class SpermEdgeError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); the message names what and where."""
