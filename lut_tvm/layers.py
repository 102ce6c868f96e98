"""The package's layers and its import graph: which module may import which (read by a test)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Lowest first: a module may import its own layer and the layers before it, never a later one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", (
        "lut_tvm.errors", "lut_tvm.files", "lut_tvm.npz_meta", "lut_tvm.weights", "lut_tvm.plan",
        "lut_tvm.policy", "lut_tvm.plan_fields", "lut_tvm.reference", "lut_tvm.targets", "lut_tvm._tvm_compat",
        "lut_tvm._lazy", "lut_tvm.layers", "lut_tvm.kmeans", "lut_tvm.ridge", "lut_tvm.target_features",
        "lut_tvm.model_io", "lut_tvm.int8_reference", "lut_tvm.int8_encode_reference",
        "lut_tvm.exact.plan", "lut_tvm.exact.reference", "lut_tvm.exact.conv_reference",
        "schedules.attrs",
    )),
    ("schedules", ("schedules",)),
    ("relay_passes", ("relay_passes",)),
    # import -> bind -> rewrite -> legalize -> apply tuning log -> schedule -> build, and what runs
    # the result here or on a device (runtime, deploy's linker and RPC session).
    ("pipeline", ("lut_tvm.frontends", "lut_tvm.compiler", "lut_tvm.runtime", "lut_tvm.tuning.logs",
                  "lut_tvm.tuning.keys", "lut_tvm.deploy.linker", "lut_tvm.deploy.session",
                  "lut_tvm.deploy.defaults")),
    ("users", ("lut_tvm",)),
)
PACKAGES = ("lut_tvm", "relay_passes", "schedules")


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of ``module``: the layer with the longest matching module prefix."""
    best, best_len = len(LAYERS) - 1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


@dataclass(frozen=True)
class ImportEdge:
    """``importer`` imports ``imported`` (both project modules) at ``line``; ``deferred`` if inside a function."""

    importer: str
    imported: str
    line: int
    deferred: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _project_target(name: str, modules: set[str]) -> str | None:
    """The longest project module that ``name`` (a module or ``module.attribute``) starts with."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(root: Path) -> list[ImportEdge]:
    """Every import between project modules under ``root`` (module level and inside functions)."""
    files = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    modules = set(files)
    edges = []
    for importer, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deferred_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                          for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(importer, path.name == "__init__.py", node)
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _project_target(name, modules)
                if target and target != importer and not importer.startswith(target + "."):
                    edges.append(ImportEdge(importer, target, node.lineno, id(node) in deferred_nodes))
    return edges


def upward_imports(edges: list[ImportEdge]) -> list[ImportEdge]:
    """Imports of a later (higher) layer than the importer's."""
    return [e for e in edges if layer_of(e.imported) > layer_of(e.importer)]


def import_cycles(edges: list[ImportEdge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == current:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
