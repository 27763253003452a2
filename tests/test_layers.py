"""The floors of the house (see README, Layout): each package imports only from the floors below it."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# floor (a folder of the clone, ahiq.<floor> installed) -> floors it may import from
ALLOWED = {
    "utils": set(),
    "models": {"utils"},
    "data": {"utils"},
    "engine": {"utils", "models", "data"},
    "options": {"utils", "models", "data", "engine"},
    "ahiq/commands": {"utils", "models", "data", "engine", "options", "commands"},
}
FLOORS = {"utils", "models", "data", "engine", "options", "commands"}
# Names that would be a second name for a module of the package, or a clone-only folder: never imported bare.
PROJECT = {*FLOORS, "benchmarks", "experiments", "examples", "tests", "train", "test", "score", "export"}
TIMM_INTERNALS = {"_pos_embed", "patch_drop", "norm_pre"}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def _python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _nodes(folders):
    """``(path from the root, node)`` of every syntax node in the Python files of ``folders``."""
    for folder in folders:
        for path in _python_files(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                yield path.relative_to(ROOT), node


def _floor(module: str) -> str | None:
    """``ahiq.engine.scoring`` -> ``engine``; None outside the package's floors."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ahiq" and len(parts) > 1 and parts[1] in FLOORS else None


def _every_import():
    """``(path from the root, module, names, line)`` of every import in the clone's own Python files (hidden
    folders such as a virtual environment, and build output, left out)."""
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if not any(part.startswith(".") or part == "build" for part in relative.parts[:-1]):
            for module, names, line in _imports(path):
                yield relative, module, names, line


def test_each_floor_imports_only_from_below():
    wrong = []
    for package, allowed in ALLOWED.items():
        own = package.rsplit("/", 1)[-1]
        for path in _python_files(package):
            for module, _, line in _imports(path):
                floor = _floor(module)
                if floor is not None and floor != own and floor not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_package_is_imported_by_one_name_only():
    # `from utils.io import ...` would load a second copy of ahiq.utils.io (two UserError classes: every except
    # breaks); every import of the package is written ahiq.<floor>, and scripts are reached as ahiq.commands.
    wrong = [f"{path}:{line} imports {module}" for path, module, _, line in _every_import()
             if module.split(".")[0] in FLOORS | {"train", "test", "score", "export"}]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = [f"{path}:{line} imports {module}.{n}" for path, module, names, line in _every_import()
             if module.split(".")[0] in PROJECT or _floor(module) for n in names if n.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_timm_only_through_its_public_api():
    wrong = [f"{path}:{node.lineno} uses .{node.attr}" for path, node in _nodes(ALLOWED)
             if isinstance(node, ast.Attribute) and node.attr in TIMM_INTERNALS]
    assert not wrong, "\n".join(wrong)


def test_models_speak_python_not_flags():
    # Messages in models/ name Python arguments through utils.errors.arg/flag; scripts turn them into flags.
    wrong = [f"{path}:{node.lineno}: {node.value[:60]!r}" for path, node in _nodes(["models"])
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and any(word.startswith("--") and len(word) > 2 for word in node.value.split())]
    assert not wrong, "\n".join(wrong)


def test_only_options_and_scripts_know_argparse():
    # Typed configs cross the floors: nothing below options/ imports argparse or reads a Namespace.
    wrong = []
    for path, node in _nodes(("utils", "models", "data", "engine")):
        names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
        if "argparse" in names or getattr(node, "module", None) == "argparse" or (
                isinstance(node, ast.Name) and node.id == "Namespace"):
            wrong.append(f"{path}:{node.lineno}")
    assert not wrong, "\n".join(wrong)


def _package_modules() -> dict[str, Path]:
    """Every module of the package: ``ahiq.<floor>.<name>`` -> its file (package ``__init__`` files left out)."""
    found = {}
    for folder in ("utils", "models", "data", "engine", "options", "ahiq/commands", "ahiq"):
        prefix = "ahiq." + folder.replace("ahiq/", "") + "." if folder != "ahiq" else "ahiq."
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.stem != "__init__":
                found[prefix + path.stem] = path
    return found


def test_no_import_circle_in_the_package():
    # function-local imports count: a circle dodged by importing inside a function is still a circle
    modules = _package_modules()
    edges = {}
    for name, path in modules.items():
        targets = set()
        for module, names, _ in _imports(path):
            targets |= {f"{module}.{n}" for n in names if f"{module}.{n}" in modules} or ({module} & set(modules))
        edges[name] = targets - {name}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (circle := visit(nxt, [*path, nxt])):
                return circle
        state[node] = 2
        return None

    for start in sorted(modules):
        if start not in state:
            circle = visit(start, [start])
            assert circle is None, " -> ".join(circle)
