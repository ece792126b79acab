"""The package's layers are strict: a module imports only from its own layer or the layers below it, and no two
subpackages import each other (directly or round a longer loop). Every import is read, at module level and
inside functions, with relative imports resolved; nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "cure_zoo"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# bottom to top; a unit is a subpackage or a top-level module of cure_zoo
LAYERS = [
    {"errors", "io", "rundir", "parsing", "tables", "version"},
    {"distributed", "data", "attacks"},
    {"models"},
    {"evaluation", "training", "analysis"},
    {"hub"},
    {"cli"},
]
# ``cure_zoo/__init__.py`` re-exports the models (``import cure_zoo`` registers them with timm): it sits with them
PACKAGE_ROOT_LAYER = "models"


def _layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{PACKAGE}.{unit} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _unit(module: str) -> str:
    """``cure_zoo.models._hub`` -> ``models``; the package itself -> ``<root>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _units() -> set[str]:
    """cure_zoo's subpackages and top-level modules."""
    return {path.stem for path in ROOT.glob("*.py") if path.stem != "__init__"} | {
        path.parent.name for path in ROOT.glob("*/__init__.py")
    }


def imports_in(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for every cure_zoo import in ``source`` (the text of ``module``), wherever it is in the
    file: at module level, inside functions, under ``if TYPE_CHECKING``; relative imports resolved. A name
    imported from the package itself (``from .. import io``) counts as that module when it is one."""
    package = module if is_package else module.rpartition(".")[0]
    units = _units()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PACKAGE:
                found += [
                    (node.lineno, f"{PACKAGE}.{alias.name}" if alias.name in units else PACKAGE) for alias in node.names
                ]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.import_module("cure_zoo.hub") / __import__("cure_zoo.hub"): literal names only
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def _imports(path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), _module_name(path), path.name == "__init__.py")


def _layer(unit: str) -> int:
    return _layer_of(PACKAGE_ROOT_LAYER if unit == "<root>" else unit)


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def upward_in(where: str, module: str, imports: list[tuple[int, str]]) -> list[str]:
    """The imports of ``module`` (``imports_in``'s list; ``where`` names its file) that reach a higher layer."""
    source = _unit(module)
    if source == "cli":  # the top: it may import anything
        return []
    problems = []
    for line, target in imports:
        unit = _unit(target)
        if _layer(unit) > _layer(source):
            problems.append(
                f"{where}:{line}: imports {target} ({unit}, layer {_layer(unit)}) from {source} "
                f"(layer {_layer(source)})"
            )
    return problems


def upward_imports() -> list[str]:
    return [
        problem
        for path in _sources()
        for problem in upward_in(str(path.relative_to(ROOT.parent)), _module_name(path), _imports(path))
    ]


def subpackage_cycles() -> list[str]:
    edges: dict[str, set[str]] = {}
    for path in _sources():
        source = _unit(_module_name(path))
        for _, target in _imports(path):
            if _unit(target) != source:
                edges.setdefault(source, set()).add(_unit(target))
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return cycles


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(path)) for path in _sources()} - {"<root>"}
    for unit in sorted(units):
        _layer_of(unit)


def test_no_import_from_a_higher_layer():
    problems = upward_imports()
    assert not problems, "imports from a higher layer:\n" + "\n".join(problems)


def test_no_import_cycle_between_subpackages():
    cycles = subpackage_cycles()
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_and_relative_imports():
    source = (
        "from ..hub import cards\n"
        "from .. import __version__, io\n"
        "def f():\n"
        "    from ..evaluation.result import EvalResult\n"
        "    import cure_zoo.cli.main\n"
    )
    found = [name for _, name in imports_in(source, "cure_zoo.models.probe", is_package=False)]
    assert found == ["cure_zoo.hub", "cure_zoo", "cure_zoo.io", "cure_zoo.evaluation.result", "cure_zoo.cli.main"]


def test_the_checker_reports_a_planted_upward_import():
    source = (
        "import importlib\nfrom ..errors import CureZooError\ndef f():\n    importlib.import_module('cure_zoo.hub')\n"
    )
    imports = imports_in(source, "cure_zoo.models.probe", is_package=False)
    assert imports == [(2, "cure_zoo.errors"), (4, "cure_zoo.hub")]
    problems = upward_in("probe.py", "cure_zoo.models.probe", imports)
    assert problems == ["probe.py:4: imports cure_zoo.hub (hub, layer 4) from models (layer 2)"]
    assert upward_in("x.py", "cure_zoo.cli.x", imports) == []  # the top may import anything
