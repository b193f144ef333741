"""The one exception type for user mistakes: the CLI prints it without a traceback."""


class UserError(Exception):
    """A problem with the user's input (workload, paths, options): shown as a one-paragraph message."""
