"""The package's layout, checked from its imports alone (docs/design.md §1.1): no import cycle, no
import from a lower layer to a higher one, and no mia import inside a function."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mia"

# Lowest first, as the data flows; a module may import from its own layer or below.
LAYERS = [
    {
        "mia",
        "mia.sizes",
        "mia.validate",
        "mia.cache",
        "mia.provenance",
        "mia.plots",
        "mia.distributed",
        "mia.model",
        "mia.checkpoint",
    },
    {"mia.data"},
    {"mia.features"},
    {"mia.defenses"},
    {"mia.training"},
    {"mia.attacks"},
    {"mia.evaluation"},
    {"mia.tracking"},
    {"mia.report"},
    {"mia.job"},
    {"mia.pipeline"},
    {"mia.audit"},
    {"mia.cli", "mia.__main__"},
]


def modules() -> dict:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        found[name] = ast.parse(path.read_text())
    return found


def layer(module: str) -> int:
    for i, members in enumerate(LAYERS):
        if module in members or any(module.startswith(m + ".") for m in members if m != "mia"):
            return i
    raise AssertionError(
        f"{module} is in no layer of tests/test_layers.py: add it where the data flow puts it"
    )


def imports(tree, known) -> list[tuple[str, bool]]:
    """(imported mia module, at module level?) of every import in a module."""
    top, out = {id(node) for node in tree.body}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in (n for n in names if n.split(".")[0] == "mia"):
            while (
                name not in known
            ):  # `from mia.data import splits` names a module; `import x` a name in one
                name = name.rpartition(".")[0]
            out.append((name, id(node) in top))
    return out


MODULES = modules()
EDGES = {m: {t for t, _ in imports(tree, MODULES) if t != m} for m, tree in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_mia_import_inside_a_function(module):
    inner = [t for t, top in imports(MODULES[module], MODULES) if not top]
    assert not inner, (
        f"{module} imports {inner} inside a function: import at the top, or move the code down"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_points_down(module):
    up = [t for t in EDGES[module] if layer(t) > layer(module) and not module.startswith(t + ".")]
    assert not up, f"{module} (layer {layer(module)}) imports {up} from a higher layer"


def test_no_import_cycle():
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(EDGES[m]):
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_cycle_and_an_inner_import():
    tree = ast.parse("import mia.job\n\ndef f():\n    from mia.data import splits\n")
    got = imports(tree, {"mia.job", "mia.data", "mia.data.splits"})
    assert got == [("mia.job", True), ("mia.data.splits", False)]
    assert layer("mia.data.splits") < layer("mia.job")
