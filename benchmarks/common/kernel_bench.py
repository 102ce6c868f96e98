"""Helpers of the single-kernel benchmark scripts: compile one scheduled PrimFunc, write the table."""

from __future__ import annotations


import tvm

from lut_tvm.files import write_text_atomic


def compile_scheduled(func, rule, target):
    """``func`` scheduled by ``rule`` for ``target``, built and loaded as a callable module."""
    sch = rule.apply(func, target, False)
    if sch is None:
        raise RuntimeError(f"{type(rule).__name__} did not accept its kernel")
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target).jit()


def write_markdown(path: str, lines: list[str]) -> None:
    """``lines`` joined into ``path`` (its folder created; temp file + ``os.replace``)."""
    write_text_atomic(path, "\n".join(lines))
    print(f"wrote {path}")
