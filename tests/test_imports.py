"""The package's own import graph, read from the source with `ast` (nothing is imported).

Every `import` and `from ... import` of an ambient module counts, inside functions too (a lazy
import is an arrow like any other); relative imports are resolved against the module's package.
Two rules hold:

* no cycle between modules;
* no arrow up: the library (ambient.eval, ambient.latent and the science modules below) never
  imports the command line (ambient.cli) or the workflow's tools (ambient.pipeline);
* sampling, evaluation and the SDXL branch load models through ambient.checkpoints, never through
  the training loop (ambient.training).

The layers, top down: cli -> pipeline -> eval, latent -> training -> checkpoints -> losses,
sampling, gaussian, networks, corruption, data, ... -> fetch -> utils -> entry, paths.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIENCE = (
    "corruption",
    "data",
    "gaussian",
    "losses",
    "networks",
    "sampling",
    "training",
    "checkpoints",
    "settings",
    "layout",
    "fetch",
    "paths",
    "utils",
)
LOW = ("ambient.eval", "ambient.latent", *(f"ambient.{m}" for m in SCIENCE))
HIGH = ("ambient.cli", "ambient.pipeline")
# below the training loop: what samples and evaluates a trained model
LOADERS = ("ambient.eval", "ambient.latent", "ambient.sampling")


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def package_sources(root: Path = REPO / "ambient") -> dict[str, tuple[bool, str]]:
    """Dotted module name -> (is a package, source) for every .py file under `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (package, path.read_text(encoding="utf-8"))
    return out


def _targets(name: str, package: bool, source: str):
    """Every dotted name the module `name` imports (`from X import y` gives X.y: y is a module, or a name in X)."""
    here = name.split(".") if package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield from (f"{module}.{a.name}" for a in node.names)


def import_graph(sources: dict[str, tuple[bool, str]]) -> dict[str, set[str]]:
    """Module -> the package-internal modules it imports (a name that is not a module, e.g. a
    function, stands for the module holding it)."""
    graph = {name: set() for name in sources}
    for name, (package, source) in sources.items():
        for target in _targets(name, package, source):
            found = next((t for t in (target, target.rpartition(".")[0]) if t in sources), None)
            if found and found != name:
                graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {v}
            while (w := stack.pop()) != v:
                component.add(w)
            on_stack.difference_update(component)
            if len(component) > 1:
                out.append(_cycle_through(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One closed path inside a strongly connected component (its first module repeated at the end)."""
    start = min(component)
    paths, seen = {start: [start]}, {start}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in seen:
                seen.add(w)
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"no cycle in {sorted(component)}")


def arrows(graph: dict[str, set[str]], sources, targets) -> list[tuple[str, str]]:
    """(importer, imported) for each import from a module under `sources` into one under `targets`."""
    return sorted((a, b) for a, imported in graph.items() if _in(a, sources) for b in imported if _in(b, targets))


def up_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) for each import from the library into ambient.cli or ambient.pipeline."""
    return arrows(graph, LOW, HIGH)


def test_the_graph_sees_the_package():
    graph = import_graph(package_sources())
    assert "ambient.checkpoints" in graph["ambient.training"]  # a top-level import
    assert "ambient.eval.summary" in graph["ambient.cli.metrics"]  # a lazy one, inside a function
    assert "ambient.fetch" in graph["ambient.eval.weights"]


def test_no_import_cycle():
    found = cycles(import_graph(package_sources()))
    assert found == [], "import cycles (one through each circle of modules): " + "; ".join(
        " -> ".join(c) for c in found
    )


def test_no_arrow_up_into_cli_or_pipeline():
    found = up_arrows(import_graph(package_sources()))
    assert found == [], "the library imports the command line or the pipeline: " + ", ".join(
        f"{a} -> {b}" for a, b in found
    )


def test_models_are_loaded_without_the_training_loop():
    found = arrows(import_graph(package_sources()), LOADERS, ("ambient.training",))
    assert found == [], "import ambient.checkpoints instead: " + ", ".join(f"{a} -> {b}" for a, b in found)


def test_the_checker_sees_a_cycle_and_an_arrow_up():
    sources = {
        "ambient": (True, ""),
        "ambient.a": (False, "from . import b\n"),
        "ambient.b": (False, "def f():\n    from .c import x\n"),
        "ambient.c": (False, "import ambient.a\n"),
        "ambient.losses": (False, "def g():\n    from .pipeline.download import download\n"),
        "ambient.pipeline": (True, ""),
        "ambient.pipeline.download": (False, "from ..losses import g\n"),
        "ambient.eval": (True, ""),
        "ambient.eval.summary": (False, "from ..cli import standalone\n"),
        "ambient.cli": (True, "from ..eval import summary\n"),
        "ambient.sampling": (False, "import ambient.training as T\n"),
        "ambient.training": (False, ""),
    }
    graph = import_graph(sources)
    assert sorted(map(tuple, cycles(graph))) == [
        ("ambient.a", "ambient.b", "ambient.c", "ambient.a"),
        ("ambient.cli", "ambient.eval.summary", "ambient.cli"),
        ("ambient.losses", "ambient.pipeline.download", "ambient.losses"),
    ]
    assert up_arrows(graph) == [
        ("ambient.eval.summary", "ambient.cli"),
        ("ambient.losses", "ambient.pipeline.download"),
    ]
    assert arrows(graph, LOADERS, ("ambient.training",)) == [("ambient.sampling", "ambient.training")]
