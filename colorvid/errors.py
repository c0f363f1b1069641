"""Errors a user can act on. The CLI prints them as one line and exits 1."""


class ColorizeError(Exception):
    """Base class: the message names the file and the cause."""


class InputError(ColorizeError):
    """The input cannot be read as video (missing, not video, no frames, ...)."""


class OutputError(ColorizeError):
    """The output cannot be written (exists, unwritable folder, disk full, ...)."""


class WeightsError(ColorizeError):
    """A model cannot be found, fetched, verified or loaded."""


class SeekError(InputError):
    """The file cannot be positioned by time; read it from the start instead."""


class ModelFileError(ValueError):
    """The file is not a model this version can load (wrapped into a WeightsError naming the file)."""
