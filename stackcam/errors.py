"""The one error model: every error a user can fix derives from `StackcamError`.

A `StackcamError` carries a one-line message and an exit status; the command line (`stackcam.cli`) prints it as
``stackcam COMMAND: error: MESSAGE`` and exits with `exit_status`. Anything else that escapes a command is a
bug, shown as one line naming the exception (exit status 1; ``STACKCAM_DEBUG=1`` shows the traceback).

Every package may import this module (it imports nothing of the project).
"""

__all__ = ["StackcamError", "DieError", "EXIT_USAGE", "EXIT_DIE", "EXIT_BUG", "EXIT_INTERRUPTED"]

EXIT_BUG = 1             # an exception that is not a StackcamError: a bug in stackcam
EXIT_USAGE = 2           # bad input: a file, an option, a model the die cannot run
EXIT_DIE = 3             # the die flagged an error in a frame (the host refused its output)
EXIT_INTERRUPTED = 130   # Ctrl-C


class StackcamError(Exception):
    """An error the user can fix; its message is one line."""

    exit_status = EXIT_USAGE


class DieError(StackcamError):
    """The die reported a failure (a refused descriptor, a refused ROM image, a frame it did not complete):
    the host refuses the frame and returns nothing from it."""

    exit_status = EXIT_DIE
