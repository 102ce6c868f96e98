"""Tensor intrinsics registered with TVM on first use instead of at import: parsing an intrinsic's TVMScript
walks the whole Python stack (seconds per function once torch is imported), and a compile needs few of them."""

from __future__ import annotations

import functools
from collections.abc import Callable

from tvm.s_tir import TensorIntrin

_BUILDERS: dict[str, Callable[[], tuple]] = {}


def declare(name: str, build: Callable[[], tuple]) -> str:
    """Make ``name`` registrable: ``build()`` returns its ``(description, implementation)`` prim funcs."""
    _BUILDERS[name] = build
    return name


@functools.cache
def ensure(name: str) -> str:
    """``name``, registered with TVM (built on the first call): pass it to ``sch.tensorize``."""
    description, implementation = _BUILDERS[name]()
    TensorIntrin.register(name, description, implementation, override=True)
    return name


def ensure_named_in(text: str) -> list[str]:
    """Register every declared intrinsic whose name occurs in ``text`` (a tuning database's records, whose
    traces tensorize by name); returns those names."""
    found = [name for name in _BUILDERS if name in text]
    for name in found:
        ensure(name)
    return found


def declared() -> list[str]:
    return list(_BUILDERS)
