"""Lets the `train` and `evaluate` subpackages also be called as the API functions of the same name.

`lmrec.train(...)` must work although `lmrec.train` is a package: once any of its modules is imported,
Python binds the package object to that attribute of `lmrec`, hiding a plain function of the same name.
Giving the package module a `__call__` keeps both `lmrec.train(...)` and `lmrec.train.trainer`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def callable_package(name: str, api_function: str) -> None:
    """Make the already-imported package `name` callable as `lmrec.api.<api_function>`."""

    class _CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            from lmrec import api

            return getattr(api, api_function)(*args, **kwargs)

    sys.modules[name].__class__ = _CallablePackage
