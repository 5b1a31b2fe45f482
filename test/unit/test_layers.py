"""The import rules of docs/architecture.md, read statically from the sources: which layer of
spinn_ros may import which, where rclpy and zenoh may appear, that the library never imports
its tests or benchmarks, and that nothing a unit test imports pulls in rclpy."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "spinn_ros"

#: layer -> the layers it may import (itself included); see docs/architecture.md
ALLOWED = {
    "core": {"core"},
    "sim": {"sim"},
    "linkemu": {"linkemu"},
    "transport": {"transport", "core"},
    "training": {"training", "core", "sim"},
    "cloud_service": {"cloud_service", "core", "transport"},
    "ros": {"ros", "core"},
    "nodes": {"nodes", "ros", "core", "transport", "cloud_service", "sim", "msg"},
    "tools": {"tools", "nodes", "ros", "core", "transport", "cloud_service", "sim", "training", "linkemu", "msg"},
    "testing": {"testing", "tools", "nodes", "ros", "core", "transport", "cloud_service", "sim", "training",
                "linkemu", "msg"},
}
#: third-party packages only some layers may use
RESTRICTED = {"rclpy": {"ros", "nodes", "tools", "testing"}, "zenoh": {"transport", "linkemu", "testing"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "spinn_ros" and len(parts) > 1 else None


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names ``path`` imports (relative imports resolved); with ``top_level_only``, only
    those its import runs (not those inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _top_level(tree: ast.AST):
    """Nodes executed on import: everything but function bodies (class bodies run, too)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.append(child)


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


@cache
def module_files() -> dict[str, Path]:
    return {module_name(p): p for p in sources()}


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PKG)))
def test_each_module_imports_only_what_its_layer_may(path):
    own = layer(module_name(path))
    if own is None:
        return                                    # spinn_ros/__init__.py
    names = imports(path)
    inside = {layer(n) for n in names if n.startswith("spinn_ros.")} - {None}
    assert inside <= ALLOWED[own], f"{path.relative_to(ROOT)} ({own}) imports {sorted(inside - ALLOWED[own])}"
    for package, layers in RESTRICTED.items():
        if any(n == package or n.startswith(package + ".") for n in names):
            assert own in layers, f"{path.relative_to(ROOT)} ({own}) imports {package}: only {sorted(layers)} may"
    outside = {n.split(".")[0] for n in names} & {"bench", "test", "helpers", "pytest"}
    assert not outside or own == "testing" and outside == {"pytest"}, \
        f"{path.relative_to(ROOT)} imports {sorted(outside)}: the library never imports tests or benchmarks"


def pulls_rclpy(module: str, seen: set | None = None) -> list[str] | None:
    """The chain of spinn_ros modules through which importing ``module`` imports rclpy, or None."""
    seen = set() if seen is None else seen
    files = module_files()
    if module in seen or module not in files:
        return None
    seen.add(module)
    names = imports(files[module], top_level_only=True)
    if any(n == "rclpy" or n.startswith("rclpy.") for n in names):
        return [module]
    parents = {".".join(module.split(".")[:i]) for i in range(2, module.count(".") + 1)}
    for name in sorted(n for n in names | parents if n.startswith("spinn_ros")):
        chain = pulls_rclpy(name, seen)
        if chain:
            return [module, *chain]
    return None


@pytest.mark.parametrize("path", sorted((ROOT / "test" / "unit").glob("*.py")), ids=lambda p: p.name)
def test_unit_tests_import_nothing_that_pulls_in_rclpy(path):
    names = imports(path, top_level_only=False)
    assert not any(n == "rclpy" or n.startswith("rclpy.") for n in names), f"{path.name} imports rclpy"
    assert "helpers" not in names, f"{path.name} imports test/helpers.py (ROS helpers)"
    for name in sorted(n for n in names if n.startswith("spinn_ros")):
        chain = pulls_rclpy(name)
        assert chain is None, f"{path.name} imports {name}, which pulls in rclpy via {' -> '.join(chain)}"


def test_the_rules_see_real_imports():
    """The checks above would pass vacuously if imports() found nothing: a known edge must show."""
    drone = imports(PKG / "nodes" / "drone_node.py")
    assert "spinn_ros.core.drone_engine" in drone and "rclpy" in {n.split(".")[0] for n in drone}
    assert pulls_rclpy("spinn_ros.nodes.drone_node") is not None
    assert pulls_rclpy("spinn_ros.core.scheduler") is None
