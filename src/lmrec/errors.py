"""User-facing errors: one clear sentence saying what was wrong and what to do."""


class LmrecError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""


class DataError(LmrecError):
    """The input data cannot be read or prepared as asked."""


class ConfigError(LmrecError):
    """A configuration key or value is invalid."""


class RunError(LmrecError):
    """A run directory or checkpoint cannot be used as asked."""


class ExplanationUnavailable(LmrecError, TypeError):
    """The model cannot say which past events drove a recommendation."""
