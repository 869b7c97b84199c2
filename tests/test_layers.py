"""The package's seams: what imports what, and one error root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import avalon_worker
from avalon_worker.errors import Error

REQUESTER_SIDE = ("quote", "dcap", "pck", "collateral", "roots", "policy", "verify", "report", "cli")


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
    assert not {f"avalon_worker.attestation.{name}" for name in REQUESTER_SIDE} & loaded
    assert "avalon_worker.requester" not in loaded


def test_the_requester_side_of_attestation_loads_nothing_of_the_worker_side() -> None:
    loaded = _loaded_after("import avalon_worker.attestation.verify, avalon_worker.attestation.policy")
    assert "avalon_worker.attestation.verify" in loaded
    assert not {f"avalon_worker.attestation.{name}" for name in ("providers", "tsm", "measure")} & loaded
    assert not {"avalon_worker.processor", "avalon_worker.core", "avalon_worker.identity"} & loaded


def test_attestation_names_load_on_first_use() -> None:
    from avalon_worker import attestation

    assert attestation.verify_signup.__module__ == "avalon_worker.attestation.verify"
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
