"""colorvid: colorize black-and-white video automatically."""

__version__ = "0.1.0"
