"""The house's rules on imports (docs/ARCHITECTURE.md), checked on the source: every `import`
of a tuneforge module, at module level or inside a function, is an edge.

- No circle between modules: a circle hidden by a function-level import is still a circle.
- A room imports only the rooms below it: the stages (data, train, evaluate) and inference know no
  registry, no service layer and no server; the service layer (runs) knows no server or jobs; and
  nothing imports the doors (cli, serve) but the doors themselves.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tuneforge"

# room -> the rooms it may import (besides itself). Leaves first, doors last.
LEAVES = {"errors", "settings"}
BELOW_STAGES = LEAVES | {"hardware", "models"}
STAGES = BELOW_STAGES | {"data", "train", "inference", "evaluate"}
SERVICES = STAGES | {"registry", "runs"}
ALLOWED = {
    "errors": set(),
    "settings": set(),
    "hardware": LEAVES,
    "models": LEAVES | {"hardware"},
    "data": BELOW_STAGES,
    "train": BELOW_STAGES | {"data"},
    "inference": BELOW_STAGES | {"data"},
    "evaluate": BELOW_STAGES | {"data", "train", "inference"},
    "registry": LEAVES,
    "runs": STAGES | {"registry"},
    "jobs": SERVICES,
    "serve": SERVICES | {"jobs"},
    "web": SERVICES | {"jobs", "serve"},  # the dashboard: pages on the API's dependencies and data
    "quickstart": SERVICES,
    "cli": SERVICES | {"jobs", "serve", "web", "quickstart"},
    "__init__": set(),  # the version only: importing tuneforge changes nothing in the process
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The tuneforge modules `path` imports, anywhere in it (`from tuneforge.x import y` counts y when y is
    a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tuneforge")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("tuneforge")
            and node.level == 0
        ):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]  # Alembic loads those by path
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}


def test_no_room_imports_a_room_above_it():
    # Any room may read the package's version (`from tuneforge import __version__`).
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if room(target) not in (room(module), "__init__") and room(target) not in ALLOWED[room(module)]
    )
    assert wrong == []


def test_no_circle_between_modules():
    edges = graph()
    # A package's __init__ that imports its own modules is not a circle of the house: skip parent -> child edges.
    edges = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in edges.items()}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_every_room_is_known():
    assert {room(m) for m in graph()} <= set(ALLOWED)
