"""One exception type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """Invalid input from the user (arguments, config, files). The message must say what to fix."""
