"""The import graph of ``src/ukedge`` follows DESIGN.md's arrows and has no cycle.

Read from the source with :mod:`ast`, not from ``sys.modules``: every import counts, the ones
under ``if TYPE_CHECKING:`` and inside functions too (a lazy import still couples the modules,
and a type-only cycle still makes two modules one concept), and so do the lazy-import tables
(a string that names a ukedge module, as in ``"ukedge.vmm.qemu:qemu_backend"``, except a
module's own package named as the anchor of ``importlib.resources.files``).

The arrows are ``cli → controller → (host, hub) → (registry, vmm, build, kernel) → (guest,
image)``; below them sit the shared modules every layer may use. Where each top-level module
sits is decided here, in :data:`LAYERS`, and a new one fails the test until it is placed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Top-level packages and modules of ``ukedge``, highest layer first. A name may import names of
#: strictly lower layers only (plus :data:`SIDEWAYS`); ``ukedge`` is the package's own
#: ``__init__`` (``__version__``).
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("controller",),
    ("host", "hub"),
    ("registry", "vmm", "build", "kernel"),
    ("guest", "image"),
    # Shared plumbing of the servers (the ASGI kit) and the stores (the SQLite set-up): below
    # every package so that any may use it (host, hub and the controller do); it imports only
    # the leaves under it. ``image`` and ``guest`` are held to ``errors`` by ONLY.
    ("server", "sqlite"),
    # Settings and logging set-up of the programs, and the published-port model that the vmm,
    # the host, the controller and the CLI share: they format errors with ``validation``.
    ("config", "serverlog", "ports"),
    # Leaf helpers: pydantic error text, backends by name, type aliases, units, the data
    # directory, crash points, lazy package re-exports, how a published port reads, a free
    # loopback port.
    (
        "validation",
        "backends",
        "types",
        "units",
        "paths",
        "faults",
        "_lazy",
        "_portfmt",
        "loopback",
    ),
    ("errors",),
    ("ukedge",),
]

#: Edges between two names of the same layer, each with its reason.
SIDEWAYS: dict[tuple[str, str], str] = {
    ("build", "kernel"): "a build resolves the Ukfile's kernel profile to a cached kernel",
}

#: DESIGN.md: "``image`` and ``guest`` import nothing of ukedge but its errors".
ONLY: dict[str, set[str]] = {
    "image": {"errors"},
    "guest": {"errors"},
}

_RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module under ``src/ukedge``."""
    found = {}
    for path in sorted((SRC / "ukedge").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: set[str]) -> Iterator[str]:
    """The ukedge modules ``name`` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from ukedge.vmm import _qmp`` imports the submodule, not just the package.
                sub = f"{origin}.{alias.name}"
                yield sub if sub in modules else origin
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            target = node.value.partition(":")[0]
            # A module's own package named as a string is a data anchor (resources.files).
            if target in modules and not name.startswith(f"{target}."):
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            target
            for target in _imports(name, path, set(modules))
            if (target == "ukedge" or target.startswith("ukedge.")) and target != name
        }
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ukedge"


def test_every_top_level_module_is_placed() -> None:
    tops = {_top(name) for name in _modules()}
    unplaced = sorted(tops - set(_RANK))
    assert not unplaced, f"place these in LAYERS of tests/test_layering.py: {unplaced}"


def _against_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        source = _top(module)
        for target in sorted(targets):
            dest = _top(target)
            if dest == source or source not in _RANK or dest not in _RANK:
                continue
            if source in ONLY and dest not in ONLY[source]:
                wrong.append(f"{module} -> {target} ({source} may import only {ONLY[source]})")
            elif _RANK[dest] < _RANK[source] and (source, dest) not in SIDEWAYS:
                wrong.append(f"{module} -> {target} (upward: {source} is below {dest})")
            elif _RANK[dest] == _RANK[source] and (source, dest) not in SIDEWAYS:
                wrong.append(f"{module} -> {target} (sideways: {source} and {dest} are one layer)")
    return wrong


def test_imports_follow_the_arrows() -> None:
    wrong = _against_arrows(_graph())
    assert not wrong, "imports against DESIGN.md's arrows:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (TYPE_CHECKING and local imports count):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_cycle_finder_finds_a_type_checking_cycle(tmp_path: Path) -> None:
    """The checker itself: a cycle closed only under TYPE_CHECKING is still found."""
    a = tmp_path / "a.py"
    a.write_text("from ukedge.b import B\n")
    b = tmp_path / "b.py"
    b.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ukedge.a import A\n"
    )
    modules = {"ukedge.a", "ukedge.b", "ukedge.c"}
    graph = {
        "ukedge.a": set(_imports("ukedge.a", a, modules)),
        "ukedge.b": set(_imports("ukedge.b", b, modules)),
        "ukedge.c": {"ukedge.a"},
    }
    assert _cycles(graph) == [["ukedge.a", "ukedge.b"]]


def test_arrow_checker_refuses_upward_sideways_and_non_leaf_edges() -> None:
    graph = {
        "ukedge.vmm.qemu": {"ukedge.host._x", "ukedge.errors", "ukedge.vmm.base"},
        "ukedge.hub._app": {"ukedge.host"},
        "ukedge.image._store": {"ukedge.paths"},
        "ukedge.build._b": {"ukedge.kernel"},
    }
    assert _against_arrows(graph) == [
        "ukedge.hub._app -> ukedge.host (sideways: hub and host are one layer)",
        "ukedge.image._store -> ukedge.paths (image may import only {'errors'})",
        "ukedge.vmm.qemu -> ukedge.host._x (upward: vmm is below host)",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    from ukedge.hub import _db\n", {"ukedge.hub._db"}),
        ("from ukedge.hub import Hub\n", {"ukedge.hub"}),
        ("X = {'k': 'ukedge.hub._db:Database'}\n", {"ukedge.hub._db"}),
        ("from . import _db\n", {"ukedge.hub._db"}),
        ("from .._x import y\n", {"ukedge._x"}),
    ],
)
def test_imports_are_all_seen(tmp_path: Path, source: str, expected: set[str]) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source)
    modules = {"ukedge.hub", "ukedge.hub._db", "ukedge.hub.mod", "ukedge._x"}
    seen = set(_imports("ukedge.hub.mod", path, modules))
    assert expected <= seen


#: The rooms of ``host`` (DESIGN.md), highest first: a room may import lower rooms only, and
#: other rooms through their package (``ukedge.host.instances``), never their private modules.
#: ``ukedge.host`` itself is the facade re-exporting them all, so it sits above every room.
HOST_ROOMS: list[tuple[str, ...]] = [
    ("agent",),
    # Moving instances between agents (the agent serves it; it uses the link's TLS pinning).
    ("migration",),
    # The controller link: enrolment, heartbeat, desired state; the agent runs it.
    ("link",),
    ("_wiring",),
    ("_node",),
    ("ondemand", "results"),
    ("instances",),
    ("images",),
    # The signature policy: the image cache asks it at pull, the manager before each start.
    ("policy",),
    # The node-wide vocabulary: instance models, names, the event bus, the service interface.
    ("_models", "_states", "_names", "_events", "_service"),
]

_HOST_RANK = {room: rank for rank, rooms in enumerate(HOST_ROOMS) for room in rooms}


def _room(module: str) -> str | None:
    """``ukedge.host.instances._manager`` -> ``instances``; None outside host or for the facade."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["ukedge", "host"] else None


def _against_rooms(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        source = _room(module)
        if source is None:
            continue
        for target in sorted(targets):
            dest = _room(target)
            if target == "ukedge.host":
                wrong.append(f"{module} -> {target} (the facade; import the room instead)")
            if dest is None or dest == source:
                continue
            if source not in _HOST_RANK or dest not in _HOST_RANK:
                wrong.append(f"{module} -> {target} (place its room in HOST_ROOMS)")
            elif _HOST_RANK[dest] <= _HOST_RANK[source] and not (
                {source, dest} <= set(HOST_ROOMS[-1])
            ):
                wrong.append(f"{module} -> {target} (upward or sideways: {source} -> {dest})")
            elif any(part.startswith("_") for part in target.split(".")[3:4]):
                wrong.append(f"{module} -> {target} (a room's private module; use its package)")
    return wrong


def test_host_rooms_follow_their_arrows() -> None:
    """agent -> node wiring -> (ondemand, results) -> instances -> images -> vocabulary."""
    wrong = _against_rooms(_graph())
    assert not wrong, "imports against host's rooms:\n" + "\n".join(wrong)


def test_room_checker_refuses_upward_and_private_edges() -> None:
    graph = {
        "ukedge.host.instances._manager": {"ukedge.host.agent", "ukedge.host._models"},
        "ukedge.host.agent._api": {"ukedge.host.instances._manager", "ukedge.host.instances"},
        "ukedge.host._models": {"ukedge.host._names", "ukedge.host"},
    }
    assert _against_rooms(graph) == [
        "ukedge.host._models -> ukedge.host (the facade; import the room instead)",
        "ukedge.host.agent._api -> ukedge.host.instances._manager (a room's private module; "
        "use its package)",
        "ukedge.host.instances._manager -> ukedge.host.agent (upward or sideways: instances -> "
        "agent)",
    ]
