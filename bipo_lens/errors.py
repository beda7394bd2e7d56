"""The one exception type users see: a message fit for a single line of terminal output."""


class BipoLensError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits non-zero."""
