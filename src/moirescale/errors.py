"""One exception type for bad user input (the CLI prints its message on one line and exits with code 2), and
the one parser of repeatable ``KEY=VALUE`` options."""


class UserError(Exception):
    """Invalid input from the user (arguments, config, files). The message must say what to fix."""


def split_option(
    item: str, option: str, form: str, example: str, *, bare: bool = False
) -> tuple[str | None, str]:
    """One value of a repeatable ``KEY=VALUE`` option (``--schedule-opt``, ``--mean-guess``, ``--bins``) as
    ``(key, value)``, both stripped; the caller converts and checks the value. ``bare``: a value without a key
    is allowed and returned as ``(None, value)``. Anything else is a :class:`UserError` naming ``form``."""
    key, sep, value = item.partition("=")
    if not sep and bare:
        return None, item.strip()
    if not sep or not key.strip():
        raise UserError(f"{option} {item!r}: need {form}, e.g. {example}")
    return key.strip(), value.strip()
