"""lmrec: predict what users do next from behaviour logs, with sequence models and pretrained LMs."""

__version__ = "0.1.0"
