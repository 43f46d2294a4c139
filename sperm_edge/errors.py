"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class SpermEdgeError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); the message names what and where."""

    exit_code = 2  # the CLI's exit status: a user error, which a service manager should not restart into


class SourceLost(SpermEdgeError):
    """A live source that stopped delivering and could not be reopened: not the user's input, and worth a restart
    (systemd's `Restart=on-failure` restarts on this exit status, not on 2)."""

    exit_code = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, worth a retry
