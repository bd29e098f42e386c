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

The same reading answers the other questions that ``tests/test_imports.py`` asks of bnkit:
which private names cross a module boundary (:func:`private_imports`), what each module
declares in ``__all__`` (:func:`declared_all`, :func:`undeclared_exports`), and what a
module reaches through its imports (:func:`reachable`).
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["module_files", "imported_modules", "import_graph", "cycles", "describe", "reachable",
           "is_private", "private_imports", "declared_all", "undeclared_exports",
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


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules that ``start`` imports, directly or through others (``start`` only if in a cycle)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# --------------------------------------------------------------------------- private names


def is_private(name: str) -> bool:
    """``_name`` is private; ``__name__``-style dunders (``__all__``, ``__version__``) are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_steps(dotted: str, known: set[str]):
    """(holder, name) for each private step of a dotted path inside the package.

    ``pkg._impl.f`` -> (``pkg``, ``_impl``): the module ``_impl`` is a private name of ``pkg``.
    Only the part of the path that lies inside the package counts.
    """
    parts = dotted.split(".")
    for end in range(1, len(parts)):
        holder = ".".join(parts[:end])
        if holder in known and is_private(parts[end]):
            yield holder, parts[end]


def _module_aliases(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> dict[str, str]:
    """Local name -> module of ``known`` it is bound to by an import in ``tree``."""
    aliases: dict[str, str] = {}
    for node, alias, target in _import_targets(tree, module, is_package, known):
        if alias is None:
            continue
        if isinstance(node, ast.Import):
            if alias.asname:
                aliases[alias.asname] = target
            elif alias.name.split(".")[0] in known:  # `import pkg.sub` binds `pkg`
                aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        else:
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module or "")
            if f"{base}.{alias.name}" in known:  # `from pkg import sub as s` binds a module
                aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def _taken_names(tree: ast.AST, module: str, is_package: bool, known: set[str]):
    """(holder module, name) for every name that ``tree`` takes from a module of ``known``.

    A name is taken by ``from holder import name``, by each step of an imported dotted path
    (``import pkg.sub`` takes ``sub`` from ``pkg``), by ``importlib.import_module`` of a
    literal path, and by an attribute read on a name bound to a module (``F._helper``
    after ``from pkg.sub import functional as F``).
    """
    for node, alias, _ in _import_targets(tree, module, is_package, known):
        if isinstance(node, ast.Import):
            yield from _private_steps(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module or "")
            yield from _private_steps(f"{base}.{alias.name}", known)
        else:  # importlib.import_module("pkg._impl")
            yield from _private_steps(node.args[0].value, known)
    aliases = _module_aliases(tree, module, is_package, known)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = ast.unparse(node.value)
            holder = aliases.get(dotted)
            if holder is None and dotted.split(".")[0] in aliases and dotted in known \
                    and aliases[dotted.split(".")[0]] == dotted.split(".")[0]:
                holder = dotted  # pkg.sub._x after `import pkg.sub`
            if holder is not None:
                yield holder, node.attr


def private_imports(package_dir: Path) -> list[tuple[str, str, str]]:
    """``(module, holder, name)`` for every private ``_name`` a module takes from another module.

    ``holder`` is the module (or package) whose namespace holds ``name``: a function, class
    or constant defined there, or a private submodule of a package (``bnkit._x`` is the
    name ``_x`` of ``bnkit``). A private name belongs to its holder alone: any other
    module of the package that takes it is listed -- a sibling in the same package, a module
    of another subpackage, the package's own ``__init__``, or a module taking its package's
    private helpers. Only code inside the private thing itself may use its name (the
    modules of a private subpackage ``pkg._impl`` may import each other).
    """
    files = module_files(package_dir)
    known = set(files)
    found = set()
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf8"))
        for holder, private in _taken_names(tree, name, path.name == "__init__.py", known):
            owner = f"{holder}.{private}"
            if name != holder and name != owner and not name.startswith(owner + "."):
                found.add((name, holder, private))
    return sorted(found)


# --------------------------------------------------------------------------- __all__


def declared_all(source: str) -> list[str] | None:
    """The names of the module-level ``__all__ = [...]`` (or a tuple) of string literals.

    None when the module has no such assignment: no ``__all__``, or one that is computed
    or extended (``__all__ += ...``), which a reader cannot see at a glance.
    """
    declared = None
    for node in ast.parse(source).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            continue
        value = node.value
        if (isinstance(node, ast.AugAssign) or not isinstance(value, (ast.List, ast.Tuple))
                or not all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                           for e in value.elts)):
            return None
        declared = [e.value for e in value.elts]
    return declared


def _module_level_names(body: list[ast.stmt]) -> set[str]:
    """The names that module-level code binds (descending into ``if``/``try``/``with``, not defs)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                names |= _module_level_names(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                names |= _module_level_names(handler.body)
    return names


def undeclared_exports(source: str) -> list[str]:
    """The names in ``__all__`` that the module never binds at module level."""
    declared = declared_all(source) or []
    bound = _module_level_names(ast.parse(source).body)
    return [name for name in declared if name not in bound]


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
