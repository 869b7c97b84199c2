"""The package's seams: what imports what, what each process loads, and one error root."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import avalon_worker
from avalon_worker.client import WorkerClient
from avalon_worker.errors import Error

from conftest import launch_worker

VERIFIER = "avalon_worker.attestation.verifier"
WORKER_SIDE = {f"avalon_worker.attestation.{name}" for name in ("providers", "tsm", "measure")}
PACKAGE = Path(avalon_worker.__file__).parent
INTROSPECT_REGISTRY = str(Path(__file__).with_name("workloads") / "introspect.json")
# What a worker never needs: the requester's side, the verifier, the command line's other commands.
NOT_FOR_SERVING = (
    "avalon_worker.requester", "avalon_worker.client", "avalon_worker.front.listener_client",
    "avalon_worker._cli.order_table", "avalon_worker._cli.verify", "avalon_worker._cli.run_orders", VERIFIER,
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_the_processor_loads_no_attestation_code() -> None:
    loaded = _loaded_after("import avalon_worker.processor")
    assert not {name for name in loaded if name.startswith("avalon_worker.attestation")}


def test_the_worker_side_of_attestation_loads_nothing_of_the_requester_side() -> None:
    loaded = _loaded_after("import avalon_worker.signup, avalon_worker.attestation.providers")
    assert {"avalon_worker.attestation.providers", "avalon_worker.attestation.measure"} <= loaded
    assert not {name for name in loaded if name.startswith(VERIFIER)}
    assert "avalon_worker.requester" not in loaded


def test_the_requester_side_of_attestation_loads_nothing_of_the_worker_side() -> None:
    loaded = _loaded_after(f"import {VERIFIER}.verify, {VERIFIER}.policy, {VERIFIER}.policy_template")
    assert {f"{VERIFIER}.verify", f"{VERIFIER}._dcap", f"{VERIFIER}._sigstruct"} <= loaded
    assert not WORKER_SIDE & loaded
    assert not {"avalon_worker.processor", "avalon_worker.core", "avalon_worker.identity"} & loaded


def test_attestation_names_load_on_first_use() -> None:
    from avalon_worker import attestation

    assert attestation.verify_signup.__module__ == f"{VERIFIER}.verify"
    assert attestation.parse_quote.__module__ == f"{VERIFIER}._quote"
    assert attestation.select_provider.__module__ == "avalon_worker.attestation.providers"
    with pytest.raises(AttributeError):
        attestation.no_such_name  # noqa: B018


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(avalon_worker.__path__, "avalon_worker."):
        if module_info.name == "avalon_worker.__main__":
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module_info.name:
                found.append(value)
    return found


def test_every_error_of_the_package_derives_from_one_root() -> None:
    classes = _exception_classes()
    assert len(classes) > 20
    strays = [cls.__qualname__ for cls in classes if not issubclass(cls, (Error, Warning))]
    assert strays == []


def test_every_public_name_resolves_and_has_a_docstring() -> None:
    import avalon_worker.attestation as attestation
    import avalon_worker.client as client
    import avalon_worker.workload as workload

    for module in (avalon_worker, client, workload, attestation):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value) and not name.startswith("_"):
                assert (value.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"


def test_the_client_loads_nothing_of_the_worker_side() -> None:
    loaded = _loaded_after("import avalon_worker.client")
    assert not {"avalon_worker.processor", "avalon_worker.core", "avalon_worker.identity", "avalon_worker.pool"} & loaded


# imports, read from the source ---------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(module, imported name or "") for every import in the file, at any depth (inside
    functions too): relative imports resolved, a name that is a submodule taken as the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            origin = ".".join(part for part in (base if node.level else "", node.module or "") if part)
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.append((submodule, "") if submodule in modules else (origin, alias.name))
    return [(module, imported) for module, imported in found if module.split(".")[0] == "avalon_worker"]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {module for module, _ in _imports(name, path, modules) if module in modules and module != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_not_even_from_inside_a_function() -> None:
    graph = _graph()
    assert graph["avalon_worker._cli.serve"] >= {"avalon_worker.front.door", "avalon_worker.pool"}  # read at all
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module() -> None:
    modules = _modules()
    strays = [f"{name}: {module}.{imported}" for name, path in modules.items()
              for module, imported in _imports(name, path, modules)
              if imported.startswith("_") and not imported.startswith("__")]
    assert strays == []


def test_only_the_entry_point_imports_the_command_line() -> None:
    importers = {name for name, imported in _graph().items()
                 if not name.startswith("avalon_worker._cli") and any(m.startswith("avalon_worker._cli") for m in imported)}
    assert importers == {"avalon_worker.__main__"}


def test_the_verifier_and_the_worker_side_never_import_each_other() -> None:
    graph = _graph()
    verifier = {name for name in graph if name.startswith(VERIFIER)}
    assert f"{VERIFIER}._dcap" in graph[f"{VERIFIER}.verify"]  # read at all
    assert {name for name in verifier if graph[name] & WORKER_SIDE} == set()
    assert {name for name in WORKER_SIDE if graph[name] & verifier} == set()


def test_the_verifiers_internals_are_imported_only_inside_it() -> None:
    internals = {name for name in _graph() if name.startswith(f"{VERIFIER}._")}
    importers = {name for name, imported in _graph().items() if imported & internals}
    assert len(internals) >= 10
    assert {name for name in importers if not name.startswith(VERIFIER)} == set()


def test_the_parser_loads_no_command() -> None:
    loaded = {name for name in _loaded_after("import avalon_worker._cli.parser") if name.startswith("avalon_worker")}
    assert "avalon_worker._cli.parser" in loaded
    assert loaded <= {"avalon_worker", "avalon_worker._lazy", "avalon_worker._cli", "avalon_worker._cli.parser", "avalon_worker._cli.options",
                      "avalon_worker.defaults", "avalon_worker.errors"}


# what a serving process has loaded -----------------------------------------------------------------


def _loaded_while_serving(tmp_path: Path, *options: str) -> tuple[int, dict]:
    """(the supervisor's pid, what the process that ran an order said it had loaded)."""
    worker = launch_worker(tmp_path / "state", ["--workloads", INTROSPECT_REGISTRY, *options])
    try:
        with WorkerClient(worker.endpoint, 30) as client:
            report = json.loads(client.submit("loaded-modules", [b""])[0])
    finally:
        assert worker.stop() == 0
    return worker.process.pid, report


@pytest.mark.slow
def test_a_forked_worker_process_carries_no_requester_verifier_or_http_code(tmp_path: Path) -> None:
    supervisor, report = _loaded_while_serving(tmp_path, "--workers", "1", "--listen-http", "127.0.0.1:0")
    loaded = set(report["modules"])
    assert report["pid"] != supervisor
    assert {"avalon_worker.processor", "avalon_worker._cli.serve", "avalon_worker.front.door"} <= loaded
    assert {name for name in loaded if name.startswith(NOT_FOR_SERVING)} == set()
    # The front door's own process has the listener; the processes it fronts do not.
    assert {"avalon_worker.front.service", "avalon_worker.front.listener", "httptools", "zmq"} & loaded == set()


@pytest.mark.slow
def test_serving_in_the_supervisor_loads_no_requester_or_verifier_code(tmp_path: Path) -> None:
    supervisor, report = _loaded_while_serving(tmp_path, "--workers", "0")
    loaded = set(report["modules"])
    assert report["pid"] == supervisor
    assert "avalon_worker.pool" in loaded
    assert {name for name in loaded if name.startswith(NOT_FOR_SERVING)} == set()
