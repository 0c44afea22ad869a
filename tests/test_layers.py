"""The house's shape: imports flow one way, from higher layers to lower ones, and no modules import
each other in a circle. Read from the source with `ast`, so lazy imports inside functions count too.

The layer order is written here once, lowest first. A module may import its own layer and the ones
below; a module that belongs to no layer fails the test, so a new file has to be placed.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolkit", "targets", "quantization", "profiles")

LAYERS = (
    ("toolkit.errors", "toolkit.parallel", "toolkit.memory", "toolkit.progress", "toolkit.isolation", "toolkit.fileio"),
    ("toolkit.camera", "profiles"),
    ("toolkit.data",),
    ("toolkit.model",),
    ("targets",),
    ("quantization",),
    ("toolkit.deploy",),
    ("toolkit.bench", "toolkit.training"),
    ("toolkit.demo", "toolkit.cli", "toolkit"),  # "toolkit" here is the package's own __init__ only
)
MAX_TOP_LEVEL_ENTRIES = 10  # files and data folders directly in toolkit/, besides subpackages


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import module` imports that module; `from module import name` the module
            candidates = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:  # `import a.b.c` of a name inside a module
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for index, keys in enumerate(LAYERS):
        for key in keys:
            matches = module == key if key == "toolkit" else (module == key or module.startswith(key + "."))
            if matches and len(key) > best_len:
                best, best_len = index, len(key)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_relative_lazy_and_package_imports():
    graph = import_graph()
    assert "toolkit.camera.bayer" in graph["toolkit.camera.raw"]  # relative, module level
    assert "toolkit.bench.worker" not in graph["toolkit.bench.profile"]  # a subprocess, not an import
    assert "toolkit.deploy.enhance" in graph["toolkit"]  # lazy, inside __getattr__
    assert "quantization" in graph["toolkit.deploy.export"]  # absolute, inside a function


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) is None] == []


def test_imports_only_flow_down():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, targets in sorted(import_graph().items()) for target in sorted(targets)
              if layer_of(target) is not None and layer_of(target) > layer_of(module)]
    assert upward == []


def test_subpackages_say_what_they_own():
    top = ROOT / "toolkit"
    subpackages = [p for p in top.iterdir() if (p / "__init__.py").exists()]
    assert len(subpackages) >= 5
    for package in subpackages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{package.name}/__init__.py needs a docstring saying what it owns and may import"
    entries = [p for p in top.iterdir() if p not in subpackages and p.name != "__pycache__"]
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, sorted(p.name for p in entries)
