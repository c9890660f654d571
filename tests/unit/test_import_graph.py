"""The import graph of ``src/inferstream`` and ``benchmarks``: no cycles, and layers point down.

Every ``import`` and ``from … import`` counts, wherever it stands: at module level, inside
a function, under ``if TYPE_CHECKING:``. A deferred import hides a cycle from the
interpreter, not from a reader, so it is an edge here like any other.

The layers (STYLE.md, "Layers point down"), lowest first::

    errors, closing → config (+ metrics, tracing) → schemas → connectors, stack → serving, monitoring → streams, jobs
        → SDK (client, _client/, search) → demo → gateway → cli → benchmarks

A module may import its own component and any component of a lower layer; components of
one layer are independent of each other (a batch job never imports a stream processor).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "inferstream"
BENCHMARKS_DIR = ROOT / "benchmarks"

#: The layers, lowest first; each holds components, and a component names the modules it is
#: made of (each with every module below it). The longest match places a module.
LAYERS: tuple[dict[str, tuple[str, ...]], ...] = (
    # The error tree, the close-with-``with`` lifecycle and the runtime's settings: everything may use them.
    {"base": ("inferstream.errors", "inferstream.closing", "inferstream.runtime")},
    # A monitor's declaration is configuration (pydantic models over errors only): the
    # settings hold the monitors, so it sits in config's layer, not monitoring's.
    # Trace propagation and spans (``traceparent`` headers; OpenTelemetry when tracing is on) take
    # their settings from config and are used by every stage above.
    {"config": ("inferstream.config", "inferstream.metrics", "inferstream.monitoring.spec", "inferstream.tracing")},
    {"schemas": ("inferstream.schemas",)},
    # Quality metrics (predictions against labels) are numbers only: serving (retrain, shadow
    # comparison) and monitoring (quality monitors) both measure with them.
    {
        "connectors": ("inferstream.connectors",),
        "stack": ("inferstream.stack",),
        "quality": ("inferstream.evaluation.quality",),
    },
    # Offline evaluation (ranking metrics, exact search, labelled query files) needs no store or stream.
    {
        "serving": ("inferstream.serving",),
        "monitoring": ("inferstream.monitoring",),
        "evaluation": ("inferstream.evaluation",),
    },
    {"streams": ("inferstream.streams",), "jobs": ("inferstream.jobs",)},
    # The package root re-exports the SDK's names (``from inferstream import Client``).
    {"sdk": ("inferstream.client", "inferstream._client", "inferstream.search", "inferstream")},
    {"demo": ("inferstream.demo", "inferstream.demo_quality")},
    {"gateway": ("inferstream.gateway",)},
    # The CLI starts the gateway (`inferstream gateway`): it sits above it.
    {"cli": ("inferstream.cli", "inferstream.__main__")},
    {"benchmarks": ("benchmarks",)},
)
#: The root package is only itself: a new top-level module must be placed in a layer on purpose.
EXACT = frozenset({"inferstream"})


@dataclass(frozen=True)
class Edge:
    """One import statement: who imports what, and where."""

    importer: str
    imported: str
    line: int


def _module_name(path: Path) -> str:
    if path.is_relative_to(PACKAGE_DIR):
        parts = ["inferstream", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    else:
        parts = ["benchmarks", *path.relative_to(BENCHMARKS_DIR).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*PACKAGE_DIR.rglob("*.py"), *BENCHMARKS_DIR.rglob("*.py")]
    return {_module_name(path): path for path in sorted(files)}


def _known(name: str, modules: dict[str, Path]) -> str | None:
    # `import a.b.c` and `from a.b import c` name the most specific module we have.
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _resolve(importer: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(importer: str, path: Path, modules: dict[str, Path], source: str | None = None) -> Iterator[Edge]:
    benchmark = importer.startswith("benchmarks")
    scripts = {name.removeprefix("benchmarks.") for name in modules if name.startswith("benchmarks.")}
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text, filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, path, node)
            # `from package import module` imports that module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            if benchmark and target.split(".")[0] in scripts:
                target = f"benchmarks.{target}"  # benchmarks run as scripts: siblings import by bare name
            found = _known(target, modules)
            if found is not None and found != importer:
                yield Edge(importer, found, node.lineno)


def _graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules()
    edges = [edge for name, path in modules.items() for edge in _imports(name, path, modules)]
    return modules, edges


def _component(module: str) -> tuple[int, str]:
    """The layer and component of a module."""
    best: tuple[int, str, str] | None = None
    for rank, layer in enumerate(LAYERS):
        for component, prefixes in layer.items():
            for prefix in prefixes:
                below = module.startswith(f"{prefix}.") and prefix not in EXACT
                if (module == prefix or below) and (best is None or len(prefix) > len(best[2])):
                    best = (rank, component, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[0], best[1]


def _cycles(modules: dict[str, Path], edges: list[Edge]) -> list[tuple[list[str], list[str]]]:
    """Each group of modules that import each other (directly or not): one cycle through it, and all its members."""
    out: dict[str, set[str]] = {name: set() for name in modules}
    for edge in edges:
        out[edge.importer].add(edge.imported)
    # A hundred-odd modules: plain reachability is fast enough and easier to check than Tarjan.
    reach = {name: _reachable(name, out) for name in modules}
    groups = {frozenset({m, *(o for o in reach[m] if m in reach[o])}) for m in modules if m in reach[m]}
    return sorted((_cycle_through(min(group), group, out), sorted(group)) for group in groups)


def _reachable(start: str, out: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in out[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def _cycle_through(start: str, members: frozenset[str], out: dict[str, set[str]]) -> list[str]:
    # A shortest way from start back to itself inside the group (breadth first), for the message.
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(out[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable: every member reaches every other


def test_the_graph_sees_deferred_and_type_checking_imports() -> None:
    # The test is only as good as its parser: these imports are inside a function and under TYPE_CHECKING.
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from inferstream.config import Settings\n"
        "def f():\n    from . import errors\n    import inferstream.schemas.codec\n"
    )
    path = PACKAGE_DIR / "probe.py"
    modules = {**_modules(), "inferstream.probe": path}
    found = {edge.imported for edge in _imports("inferstream.probe", path, modules, source)}
    assert found == {"inferstream.config", "inferstream.errors", "inferstream.schemas.codec"}


def test_there_are_no_import_cycles() -> None:
    modules, edges = _graph()
    cycles = _cycles(modules, edges)
    message = "\n".join(f"{' → '.join(cycle)}  (all of: {', '.join(members)})" for cycle, members in cycles)
    assert not cycles, f"import cycles (move the shared piece down a layer):\n{message}"


def test_layers_point_down() -> None:
    modules, edges = _graph()
    wrong = []
    for edge in edges:
        (rank, component), (their_rank, theirs) = _component(edge.importer), _component(edge.imported)
        if component == theirs or their_rank < rank:
            continue
        where = f"{modules[edge.importer].relative_to(ROOT)}:{edge.line}"
        direction = "up" if their_rank > rank else "sideways"
        wrong.append(f"{where}: {edge.importer} imports {edge.imported} ({direction}: {component} → {theirs})")
    assert not wrong, "imports that do not point down a layer:\n" + "\n".join(sorted(wrong))


def test_submodules_do_not_import_their_own_package() -> None:
    # A package's __init__ re-exports its modules; a module importing it depends on all its siblings.
    modules, edges = _graph()
    wrong = [
        f"{modules[e.importer].relative_to(ROOT)}:{e.line}: {e.importer} imports its package {e.imported}"
        for e in edges
        if modules[e.imported].name == "__init__.py" and e.importer.startswith(f"{e.imported}.")
    ]
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer() -> None:
    modules, _ = _graph()
    for module in modules:
        _component(module)


def test_the_graph_holds_the_edges_it_should() -> None:
    # Guards the parser itself: a graph that lost its edges would pass every other test.
    _, edges = _graph()
    found = {(e.importer, e.imported) for e in edges}
    assert ("inferstream.client", "inferstream.config") in found
    assert ("inferstream.cli", "inferstream.cli.alerts") in found  # `from package import module`
    assert ("benchmarks.produce", "benchmarks._harness") in found  # a benchmark's bare sibling import
