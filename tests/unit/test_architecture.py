"""The package's shape, as docs/architecture.md states it, checked from its imports (lazy
imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "pyscripts"
BACKENDS = {"bluegreen.registry.consul", "bluegreen.registry.file", "bluegreen.runtime.docker",
            "bluegreen.runtime.swarm", "bluegreen.proxy.nginx", "bluegreen.proxy.dynamic",
            "bluegreen.proxy.dynamic_state"}
SHARED = {"bluegreen", "bluegreen.model", "bluegreen.errors", "bluegreen.validate",
          "bluegreen.templates", "bluegreen.interrupts", "bluegreen.record", "bluegreen.wire"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every bluegreen module ``path`` imports (``from a import b`` counts a.b when a.b is a
    module, else a)."""
    modules = {_module(p) for p in PKG.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
    return {m for m in found if m.split(".")[0] in ("bluegreen", "bluegreen_dev")}


def graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) - {_module(p)} for p in PKG.rglob("*.py")}


def test_no_import_cycle_in_the_package():
    g = graph()
    # a module of a package imports the package itself only as its parent: not an edge
    g = {m: {d for d in deps if d in g and not m.startswith(d + ".")} for m, deps in g.items()}
    seen: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append([*stack[stack.index(m):], m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(g.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(g):
        visit(m)
    assert cycles == []


def test_only_the_composition_root_names_a_backend():
    for module, deps in graph().items():
        if module in BACKENDS or module == "bluegreen.settings" or not module.startswith("bluegreen."):
            continue
        assert not deps & BACKENDS, (module, deps & BACKENDS)


def test_backends_import_only_their_interface_and_shared_modules():
    for module in BACKENDS:
        family = module.rsplit(".", 1)[0]
        allowed = SHARED | {f"{family}.base"} | BACKENDS & {f"{family}.docker"}
        if module == "bluegreen.proxy.nginx":  # container mode: nginx in a Docker container
            allowed |= {"bluegreen.runtime.docker"}
        if module == "bluegreen.proxy.dynamic":  # the same nginx, validated and reloaded alike
            allowed |= {"bluegreen.proxy.nginx", "bluegreen.proxy.dynamic_state"}
        if module == "bluegreen.proxy.dynamic_state":  # its state file, written as nginx's files
            allowed |= {"bluegreen.proxy.nginx"}
        assert graph()[module] <= allowed, (module, graph()[module] - allowed)


def test_the_orchestrator_speaks_to_the_steps_only():
    """Only the steps layer (flow.steps, flow.records, flow.reconcile) calls the backends: the
    orchestrator and the targets speak to it."""
    backends = {m for m in graph() if m.startswith(("bluegreen.registry.consul",
                                                     "bluegreen.runtime.", "bluegreen.proxy."))}
    for module in ("bluegreen.flow.release", "bluegreen.flow.target", "bluegreen.app.target",
                   "bluegreen.app.owner"):
        assert not graph()[module] & backends, (module, graph()[module] & backends)


def test_one_orchestrator_and_steps_without_applications():
    """One module orchestrates every release (a service's and an application's): nothing else
    sequences phases; the steps layer knows nothing of applications."""
    g = graph()
    assert not any(m in g for m in ("bluegreen.flow.pipeline", "bluegreen.app.release"))
    for module in ("bluegreen.flow.steps", "bluegreen.flow.records", "bluegreen.flow.reconcile",
                   "bluegreen.flow.release", "bluegreen.flow.target"):
        assert not any(d.startswith("bluegreen.app") for d in g[module]), module
    text = (PKG / "bluegreen" / "flow" / "steps.py").read_text()
    assert "app" not in {w.strip(".,:()'\"") for w in text.split()}


def test_the_product_never_imports_development_code():
    for module, deps in graph().items():
        if module.startswith("bluegreen."):
            assert not any(d.startswith("bluegreen_dev") for d in deps), module


def test_the_switch_and_rollback_path_imports_nothing_heavy():
    """The modules a switch or a rollback loads (docs/architecture.md, start-up cost) leave
    out the SDKs, requests, http.client and dataclasses (each costs tens of milliseconds of a
    rollback's 100) and typing, pathlib, urllib.parse with ipaddress, base64, socket,
    threading, argparse with gettext and locale, signal, math (a few each)."""
    import subprocess
    import sys

    path = [f"bluegreen.{m}" for m in (
        "cli.main", "cli.options", "cli.commands", "settings", "flow.release", "app.owner",
        "registry.consul", "registry.file", "proxy.dynamic", "proxy.nginx", "proxy.fanout",
        "runtime.docker")]
    heavy = ["docker", "consul", "requests", "urllib3", "http.client", "dataclasses", "ssl",
             "email", "jinja2", "subprocess", "shutil", "typing", "pathlib", "urllib.parse",
             "ipaddress", "base64", "zlib", "socket", "selectors", "threading",
             "argparse", "gettext", "locale", "signal", "math"]
    code = (f"import importlib, sys\nfor m in {path!r}: importlib.import_module(m)\n"
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(PKG)}, check=True).stdout.split()
    assert out == [], f"imported on the switch path: {out}"


def test_typing_is_read_by_type_checkers_only():
    """No module imports ``typing`` when it runs: its names are imported under
    ``if TYPE_CHECKING:`` (``TYPE_CHECKING = False`` in the module), annotations being
    strings (``from __future__ import annotations``)."""
    for path in sorted((PKG / "bluegreen").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "typing" in names and id(node) not in guarded:
                raise AssertionError(f"{path.relative_to(PKG)}:{node.lineno} imports typing")
