"""streamd: streaming video inference daemon."""

__version__ = "0.1.0"
