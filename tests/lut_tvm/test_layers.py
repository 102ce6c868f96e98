"""The import graph of lut_tvm, schedules and relay_passes: no cycle, no import of a higher layer
(``lut_tvm.layers.LAYERS``), counting imports inside functions too."""

from __future__ import annotations

from pathlib import Path

from lut_tvm import layers

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_cycle():
    cycles = layers.import_cycles(layers.import_edges(ROOT))
    assert not cycles, "import cycles between modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_upward_import():
    upward = sorted({(e.importer, e.imported, e.line) for e in layers.upward_imports(layers.import_edges(ROOT))})
    assert not upward, "imports of a higher layer: " + "; ".join(
        f"{a} ({layers.LAYERS[layers.layer_of(a)][0]}) imports {b} ({layers.LAYERS[layers.layer_of(b)][0]}) "
        f"at line {line}" for a, b, line in upward)


def test_every_layer_prefix_names_a_module():
    modules = {layers.module_name(ROOT, p) for pkg in layers.PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    missing = [prefix for _, prefixes in layers.LAYERS for prefix in prefixes
               if not any(m == prefix or m.startswith(prefix + ".") for m in modules)]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


def _graph_of(tmp_path: Path, files: dict[str, str]) -> list[layers.ImportEdge]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return layers.import_edges(tmp_path)


def test_the_checks_find_a_deferred_cycle_and_an_upward_import(tmp_path):
    edges = _graph_of(tmp_path, {
        "lut_tvm/__init__.py": "",
        "lut_tvm/errors.py": "def f():\n    from .compiler import compile\n",
        "lut_tvm/compiler.py": "from lut_tvm import errors\nfrom . import runtime\n",
        "lut_tvm/runtime.py": "",
        "relay_passes/__init__.py": "", "schedules/__init__.py": "",
    })
    assert layers.import_cycles(edges) == [["lut_tvm.compiler", "lut_tvm.errors"]]
    up = layers.upward_imports(edges)
    assert [(e.importer, e.imported, e.deferred) for e in up] == [("lut_tvm.errors", "lut_tvm.compiler", True)]


def test_layer_of_takes_the_longest_prefix():
    assert layers.LAYERS[layers.layer_of("lut_tvm.exact.plan")][0] == "core"
    assert layers.LAYERS[layers.layer_of("lut_tvm.exact.quantize")][0] == "users"
    assert layers.LAYERS[layers.layer_of("schedules.attrs")][0] == "core"
    assert layers.LAYERS[layers.layer_of("schedules.rules.lut_kind")][0] == "schedules"
