"""Files stay small and the compiler path's functions short: the sizes the code layout promises."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 80
PRODUCT_FOLDERS = ("lut_tvm", "relay_passes", "schedules", "scripts", "benchmarks")
# The lowering pipeline and what it calls: import, rewrite, legalize, schedule, build, run.
COMPILER_PATH = ("lut_tvm/compiler.py", "lut_tvm/frontends.py", "lut_tvm/runtime.py", "relay_passes", "schedules")


def python_files(*names: str) -> list[Path]:
    paths = []
    for name in names:
        path = ROOT / name
        paths += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return paths


def long_functions(path: Path, limit: int) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function or method in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_product_file_over_about_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in python_files(*PRODUCT_FOLDERS)
           if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not big, f"files over {MAX_FILE_LINES} lines (split them): {big}"


def test_no_function_over_80_lines_in_the_compiler_path():
    long = {f"{p.relative_to(ROOT)}:{name}": n for p in python_files(*COMPILER_PATH)
            for name, n in long_functions(p, MAX_FUNCTION_LINES)}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in the compiler path: {long}"


def test_long_functions_finds_a_long_method(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "m.py"
    source.write_text(f"class A:\n    def short(self):\n        return 1\n\n    def long(self):\n{body}\n")
    assert long_functions(source, MAX_FUNCTION_LINES) == [("long", MAX_FUNCTION_LINES + 1)]
