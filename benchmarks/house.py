"""The shape of the house, measured from the source (no imports, no kernel): run
``python benchmarks/house.py [package_dir]``.

* import cycles between ipymcp's modules, counting every import a module can execute (top-level
  and inside functions) and leaving out imports under ``if TYPE_CHECKING:`` (they never run);
  type-only cycles are reported separately, for information;
* the longest functions (lines, nested functions included in their parent and listed themselves);
* modules per package.

``tests/test_house.py`` keeps the import cycles at zero.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "ipymcp"


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    runtime_imports: set[str] = field(default_factory=set)
    type_only_imports: set[str] = field(default_factory=set)


def load_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Module]:
    root = package_dir.parent
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "labextension" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    for module in modules.values():
        for node, type_only in _imports(module.tree):
            for target in _targets(module, node, modules):
                if target != module.name:
                    (module.type_only_imports if type_only else module.runtime_imports).add(target)
    return modules


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it sits under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, type_only
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from walk(ast.Module(body=[statement], type_ignores=[]), True)
                for statement in child.orelse:
                    yield from walk(ast.Module(body=[statement], type_ignores=[]), type_only)
            else:
                yield from walk(child, type_only)

    yield from walk(tree, False)


def _module_level_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (not in functions, not under
    ``if TYPE_CHECKING:``)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield from _module_level_imports(ast.Module(body=[statement], type_ignores=[]))
        else:
            yield from _module_level_imports(child)


def top_level_imports(module: Module, modules: dict[str, Module] | None = None) -> set[str]:
    """The package's modules importing ``module`` runs at once (its parent packages included)."""
    modules = modules or load_modules()
    found = set()
    for node in _module_level_imports(module.tree):
        for target in _targets(module, node, modules):
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in found if name in modules and name != module.name}


SDK_PACKAGES = ("mcp", "mcp_types")


def imports_sdk_at_top(module: Module) -> bool:
    """Whether importing ``module`` imports the MCP SDK itself (``mcp``, ``mcp_types``)."""
    for node in _module_level_imports(module.tree):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if not getattr(node, "level", 0) and any(name.split(".")[0] in SDK_PACKAGES for name in names):
            return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> list[str]:
    """The package's modules an import statement executes (a ``from X import name`` of a
    submodule counts as that submodule; parent packages, which Python runs first anyway, do not)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if node.level:
        base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    found = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in modules:
            found.append(submodule)
        elif source in modules:
            found.append(source)
    return found


def cycles(modules: dict[str, Module], *, type_only: bool = False) -> list[list[str]]:
    """Strongly connected groups of modules that import each other (Tarjan), largest first."""
    graph = {
        name: sorted(m.runtime_imports | (m.type_only_imports if type_only else set())) for name, m in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for name in graph:
        if name not in index:
            visit(name)
    return sorted(groups, key=len, reverse=True)


def cycle_edges(modules: dict[str, Module], group: list[str]) -> list[tuple[str, str]]:
    members = set(group)
    return sorted((m, t) for m in group for t in modules[m].runtime_imports if t in members)


def longest_functions(modules: dict[str, Module], count: int = 10) -> list[tuple[int, str]]:
    found = []
    for module in modules.values():
        for qualname, node in _functions(module.tree, module.name):
            found.append((node.end_lineno - node.lineno + 1, qualname))  # type: ignore[operator]
    return sorted(found, reverse=True)[:count]


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{child.name}"
            yield name, child
            yield from _functions(child, name)
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}.{child.name}")
        else:
            yield from _functions(child, prefix)


def modules_per_package(modules: dict[str, Module]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for module in modules.values():
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        counts[package] += 1
    return dict(sorted(counts.items()))


def report(package_dir: Path = PACKAGE_DIR) -> str:
    modules = load_modules(package_dir)
    lines = [f"# The house ({package_dir})", ""]
    total = sum(len(m.path.read_text().splitlines()) for m in modules.values())
    lines.append(f"{len(modules)} modules, {total:,} lines")
    lines += ["", "## Import cycles (imports that run, function-local included)", ""]
    runtime = cycles(modules)
    if not runtime:
        lines.append("none")
    for group in runtime:
        lines.append(f"- {len(group)} modules: {', '.join(group)}")
        lines.append("  edges: " + "; ".join(f"{a} → {b}" for a, b in cycle_edges(modules, group)))
    typed = cycles(modules, type_only=True)
    lines += ["", f"Counting `if TYPE_CHECKING:` imports too: {len(typed)} cycle group(s)"]
    for group in typed:
        lines.append(f"- {len(group)} modules: {', '.join(group)}")
    lines += ["", "## Longest functions (lines)", ""]
    lines += [f"- {length:4d}  {name}" for length, name in longest_functions(modules)]
    lines += ["", "## Modules per package", ""]
    lines += [f"- {package}: {count}" for package, count in modules_per_package(modules).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE_DIR))
