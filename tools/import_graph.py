"""Who imports whom inside a package, read with ``ast`` (nothing is imported or run).

Used by ``tests/test_imports.py`` (no import cycle in bnkit) and ``tools/module_map.py``
(the README's chapter -> module -> test map). Every import statement anywhere in a source
counts: at the top, inside functions and methods (a deferred import is still a
dependency), under ``if`` and ``try``, and ``importlib.import_module`` with a literal name.
An edge goes to the module that the statement names: ``from bnkit.torch import
functional`` depends on ``bnkit.torch.functional`` when that is a module, ``from
bnkit.torch import BatchNorm2d`` on the package ``bnkit.torch`` (its ``__init__``). The
parent packages that Python initialises on the way are not edges: every module would
otherwise be in a circle with its package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["module_files", "imported_modules", "import_graph", "cycles", "describe",
           "package_exports", "used_modules"]


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (``__init__`` names the package)."""
    modules = {}
    for path in sorted(Path(package_dir).rglob("*.py")):
        parts = path.relative_to(Path(package_dir).parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's relative imports start from its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _longest_known(name: str, known: set[str]) -> str | None:
    """The longest module of ``known`` that ``name`` is, or lies inside (a.b.c.attr -> a.b.c)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _import_targets(tree: ast.AST, module: str, is_package: bool, known: set[str]):
    """(node, target module) for every import in ``tree`` that reaches a module of ``known``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _longest_known(alias.name, known)
                if target:
                    yield node, alias, target
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module or "")
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = _longest_known(submodule if submodule in known else base, known)
                if target:
                    yield node, alias, target
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) == "import_module")):
            target = _longest_known(node.args[0].value, known)
            if target:
                yield node, None, target


def imported_modules(source: str, known: set[str], module: str = "__main__",
                     is_package: bool = False) -> set[str]:
    """The modules of ``known`` that ``source`` (the module ``module``) imports, anywhere in it."""
    targets = {target for _, _, target in
               _import_targets(ast.parse(source), module, is_package, known)}
    targets.discard(module)
    return targets


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (anywhere in its source)."""
    files = module_files(package_dir)
    known = set(files)
    return {name: imported_modules(path.read_text(encoding="utf8"), known, name,
                                   path.name == "__init__.py")
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle, each sorted, in sorted order.

    Tarjan's strongly connected components with more than one module (a module's own name
    is never an edge of the graph): within a group, every module reaches every other.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def describe(graph: dict[str, set[str]], group: list[str]) -> str:
    """Who imports whom inside one group of :func:`cycles`."""
    members = set(group)
    return "\n".join(f"    {module} imports {', '.join(sorted(graph[module] & members))}"
                     for module in group)


# --------------------------------------------------------------------------- what code uses


def package_exports(package_dir: Path) -> dict[str, dict[str, str]]:
    """Package -> {name it re-exports: the submodule that defines it}, from each ``__init__``."""
    files = module_files(package_dir)
    known = set(files)
    exports: dict[str, dict[str, str]] = {}
    for name, path in files.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf8"))
        exports[name] = {alias.asname or alias.name: target
                         for node, alias, target in _import_targets(tree, name, True, known)
                         if isinstance(node, ast.ImportFrom) and target != name}
    return exports


def used_modules(source: str, known: set[str], exports: dict[str, dict[str, str]]) -> set[str]:
    """The modules of the package that ``source`` uses, seen through the packages' re-exports.

    ``import bnkit.torch as bnt`` followed by ``bnt.BatchNorm2d`` uses ``bnkit.torch.modules``
    (where ``bnkit/torch/__init__.py`` takes ``BatchNorm2d`` from); so does ``from bnkit.torch
    import BatchNorm2d``. A package whose names cannot be traced stays as the package.
    """
    tree = ast.parse(source)
    used: set[str] = set()
    aliases: dict[str, str] = {}  # local name -> package it is bound to
    for node, alias, target in _import_targets(tree, "__main__", False, known):
        if target not in exports:
            used.add(target)
        elif isinstance(node, ast.ImportFrom) and alias.name in exports[target]:
            used.add(exports[target][alias.name])
        elif isinstance(node, ast.Import) and alias is not None and alias.asname:
            aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom) and alias is not None:
            aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import) and alias is not None:
            aliases[alias.name] = target  # `import bnkit.torch`: used as bnkit.torch.X
        else:
            used.add(target)  # importlib.import_module("bnkit.torch")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        dotted = ast.unparse(node.value)
        if dotted in aliases and node.attr in exports[aliases[dotted]]:
            used.add(exports[aliases[dotted]][node.attr])
    traced = {package for package in aliases.values()
              if any(module.startswith(package + ".") for module in used)}
    return used | (set(aliases.values()) - traced)
