"""The package's layers (docs/architecture.md), read from its imports: nothing imports upwards, the library
never imports bench, and no module imports another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hist2st_tk"

#: Layer of each top-level module or sub-package (a module not named here is a shared one, layer 0).
LAYERS = {
    "io": 1,
    "datasets": 1,
    "encoders": 1,
    "nn": 1,
    "pp": 2,
    "models": 3,
    "tl": 4,
    "pl": 5,
    "cli": 6,
    "_cli_steps": 6,
    "_demo": 6,
    "_demo_report": 6,
    "bench": 7,
    "__main__": 7,
}

#: Crossings still to remove; the test fails when one is gone but still listed, so that the list only shrinks.
KNOWN: set[tuple[str, str, str]] = set()


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path):
    """``(imported module, imported name or None)`` of every import in the file, relative ones resolved.

    Imports under ``if TYPE_CHECKING:`` are left out: they name types for annotations and create no
    dependency when the package runs.
    """
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield target, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def _runtime_nodes(node: ast.AST):
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            yield from (n for orelse in child.orelse for n in [orelse, *_runtime_nodes(orelse)])
            continue
        yield child
        yield from _runtime_nodes(child)


def _is_module(target: str, name: str) -> bool:
    """Whether ``from target import name`` imports a module (``from . import _cli``) rather than a name."""
    folder = PACKAGE.parent.joinpath(*target.split("."))
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def crossings() -> set[tuple[str, str, str]]:
    """``(rule, importer, imported)`` for every import that breaks a rule."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module(path)
        for target, name in _imports(path):
            if target == "__future__":
                continue
            if not target.startswith("hist2st_tk"):
                private = [p for p in target.split(".") if p.startswith("_")] or (name or "").startswith("_")
                if private:
                    found.add(("third-party private", importer, f"{target}.{name}"))
                continue
            if _layer(target) > _layer(importer) and _layer(importer) < LAYERS["bench"]:
                found.add(("upward", importer, target))
            if name and name.startswith("_") and not _is_module(target, name):
                found.add(("underscore name", importer, f"{target}.{name}"))
    return found


def test_the_scan_sees_the_imports():
    """The scan itself: a known, allowed import is found and resolved (so an empty result means something),
    including one inside a function, and a type-only import is not."""
    imports = set(_imports(PACKAGE / "tl" / "_evaluate.py"))
    assert ("hist2st_tk._metrics", "GENE_METRICS") in imports
    assert ("hist2st_tk.models", "resolve") in set(_imports(PACKAGE / "tl" / "_predict.py"))  # in a function
    assert ("hist2st_tk.models", "Predictor") not in set(_imports(PACKAGE / "pp" / "_model_features.py"))
    assert _layer("hist2st_tk.tl._evaluate") == 4 and _layer("hist2st_tk._metrics") == 0


@pytest.mark.parametrize("rule", ["upward", "underscore name", "third-party private"])
def test_no_new_crossing(rule):
    new = sorted(c for c in crossings() - KNOWN if c[0] == rule)
    assert not new, f"{rule} imports (see docs/architecture.md): {new}"


def test_known_crossings_are_still_there():
    paid = sorted(KNOWN - crossings())
    assert not paid, f"these crossings are gone: delete them from KNOWN: {paid}"


def test_the_library_never_imports_bench():
    library = {c for c in crossings() if c[0] == "upward" and ".bench" in c[2]}
    assert library <= KNOWN, sorted(library - KNOWN)
