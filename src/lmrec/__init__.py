"""lmrec: predict what users do next from behaviour logs, with sequence models and pretrained LMs.

The Python API (`prepare`, `train`, `evaluate`, `Recommender`) is imported lazily so that
`import lmrec` stays cheap for the command line.
"""

from __future__ import annotations

from typing import Any

from lmrec.version import __version__

__all__ = ["Recommender", "__version__", "evaluate", "export", "prepare", "report", "retrain", "train", "tune"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lmrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'lmrec' has no attribute {name!r}")
