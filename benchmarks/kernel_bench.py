"""Helpers of the single-kernel benchmark scripts: compile one scheduled PrimFunc, write the table."""

from __future__ import annotations

import os
import tempfile

import tvm


def compile_scheduled(func, rule, target):
    """``func`` scheduled by ``rule`` for ``target``, built and loaded as a callable module."""
    sch = rule.apply(func, target, False)
    if sch is None:
        raise RuntimeError(f"{type(rule).__name__} did not accept its kernel")
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target).jit()


def write_markdown(path: str, lines: list[str]) -> None:
    """``lines`` joined into ``path`` (its folder created; temp file + ``os.replace``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, delete=False) as tmp:
        tmp.write("\n".join(lines))
    os.replace(tmp.name, path)
    print(f"wrote {path}")
