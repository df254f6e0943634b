"""The export command's one error type."""


class CliError(RuntimeError):
    """The export cannot run; the message is the one line the user sees."""
