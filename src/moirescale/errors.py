"""One exception type for bad user input (the CLI prints its message on one line and exits with code 2), and
the one parser of repeatable ``KEY=VALUE`` options."""


class UserError(Exception):
    """Invalid input from the user (arguments, config, files). The message must say what to fix."""


def split_option(item: str, option: str, form: str, example: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` value of a repeatable option (``--schedule-opt``, ``--mean-guess``, ``--bins``) as
    ``(key, value)``, both stripped; the caller converts and checks the value. A value without ``=`` or
    with an empty key is a :class:`UserError` naming ``form``."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{option} {item!r}: need {form}, e.g. {example}")
    return key.strip(), value.strip()
