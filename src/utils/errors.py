"""User-facing errors.

`ConfigError` marks a mistake in what the user asked for (an unknown name, a value out of
range, a missing file). `train.py` prints its message as one line, `error: <message>`, and
exits with status 2, without a traceback. The message names the bad value and the valid
choices.
"""


class ConfigError(ValueError):
    """A bad configuration value: the message says what was given and what is allowed."""


def check_choice(key, value, choices):
    """Raise ConfigError unless `value` is one of `choices`; `key` names the config entry."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {valid}")
    return value


class RunError(RuntimeError):
    """A run stopped by a fault (a signal, a non-finite loss, a failed write): `train.py` prints
    the message as one line, `error: <message>`, and exits with `status` (1 unless set: 143 for
    SIGTERM, 130 for SIGINT)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status
