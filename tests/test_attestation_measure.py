"""The worker's measurement of its own code, and its extension into RTMR3 through a stand-in kernel."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import avalon_worker
from avalon_worker.attestation.measure import CodeEvent, extend_rtmr3, measure_code, measured_configuration, replay
from avalon_worker.workload.registry import WorkloadRegistry

from conftest import MISBEHAVING_REGISTRY
from sim_tsm import TDX, SimulatedTsm

PACKAGE = Path(avalon_worker.__file__).parent
CONFIG = {"timeout_s": 60.0, "insecure_reuse_session_iv": False}
BOOT = "8d6e2c1a-0b4f-4b8e-9c3e-0f5a6e7d8c9b"


def sha384_of_canonical(data: object) -> bytes:
    """The contract's digest, written out here on its own."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha384(text.encode()).digest()


@pytest.fixture(scope="module")
def builtin() -> WorkloadRegistry:
    return WorkloadRegistry.builtin()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedTsm]:
    with SimulatedTsm(tmp_path / "tsm", TDX) as simulated:
        yield simulated


class TestMeasurement:
    def test_the_digest_is_sha384_of_the_canonical_document(self, builtin: WorkloadRegistry) -> None:
        event = measure_code(builtin, CONFIG)
        assert event.digest == sha384_of_canonical(event.data)
        published = event.as_json()
        assert published["rtmr"] == 3 and published["event"] == "avalon-worker code"
        assert bytes.fromhex(published["digest"]) == sha384_of_canonical(json.loads(json.dumps(published["data"])))

    def test_every_package_file_is_hashed_and_no_compiled_one(self, builtin: WorkloadRegistry) -> None:
        files = measure_code(builtin, CONFIG).data["worker"]["files"]
        this = "avalon_worker/attestation/measure.py"
        assert files[this] == hashlib.sha256((PACKAGE / "attestation" / "measure.py").read_bytes()).hexdigest()
        assert "avalon_worker/data/workloads.json" in files and "avalon_worker/py.typed" in files
        assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
        on_disk = {p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        assert len(files) == len(on_disk)

    def test_it_is_deterministic_and_names_no_host_path(self, builtin: WorkloadRegistry) -> None:
        first, second = measure_code(builtin, CONFIG), measure_code(builtin, CONFIG)
        assert first.digest == second.digest
        assert str(PACKAGE.parent) not in json.dumps(first.data)

    def test_a_changed_file_changes_the_digest_a_compiled_one_does_not(
        self, tmp_path: Path, builtin: WorkloadRegistry
    ) -> None:
        copy = tmp_path / "avalon_worker"
        shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        before = measure_code(builtin, CONFIG, package_dir=copy).digest
        (copy / "__pycache__").mkdir(exist_ok=True)
        (copy / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"compiled")
        (copy / "stray.pyc").write_bytes(b"compiled")
        assert measure_code(builtin, CONFIG, package_dir=copy).digest == before
        (copy / "core.py").write_text((copy / "core.py").read_text() + "\n# changed\n")
        assert measure_code(builtin, CONFIG, package_dir=copy).digest != before

    def test_the_configuration_is_part_of_it(self, builtin: WorkloadRegistry) -> None:
        insecure = {**CONFIG, "insecure_reuse_session_iv": True}
        assert measure_code(builtin, CONFIG).digest != measure_code(builtin, insecure).digest

    def test_builtin_workloads(self, builtin: WorkloadRegistry) -> None:
        workloads = measure_code(builtin, CONFIG).data["workloads"]
        assert workloads["registry"] == "built-in"
        assert workloads["entries"]["echo-result"] == {"module": "avalon_worker.workload.builtin.echo", "class": "EchoWorkload"}
        expected = hashlib.sha256((PACKAGE / "workload" / "builtin" / "echo.py").read_bytes()).hexdigest()
        assert workloads["files"]["avalon_worker/workload/builtin/echo.py"] == expected

    def test_a_registry_file_and_the_modules_it_names(self) -> None:
        registry = WorkloadRegistry.from_file(MISBEHAVING_REGISTRY)
        workloads = measure_code(registry, CONFIG, registry_file=MISBEHAVING_REGISTRY).data["workloads"]
        assert workloads["registry"] == {"sha256": hashlib.sha256(Path(MISBEHAVING_REGISTRY).read_bytes()).hexdigest()}
        module = Path(MISBEHAVING_REGISTRY).with_name("misbehaving.py")
        assert workloads["files"]["misbehaving.py"] == hashlib.sha256(module.read_bytes()).hexdigest()
        assert workloads["entries"]["sleep"] == {"module": "misbehaving", "class": "SleepWorkload"}

    def test_measured_configuration_keeps_behaviour_and_leaves_out_hosts_and_secrets(self) -> None:
        options = {
            "attestation": "tdx", "tsm_report_dir": "/sys/kernel/config/tsm/report", "insecure_reuse_session_iv": False, "max_request_bytes": 1 << 24, "timeout_s": None,
            "memory_limit_mb": 0, "worker_id": None, "replay_window_s": 0.0, "workers": 0,
            "listen_http": "0.0.0.0:8080", "store": "postgresql://user:secret@db/avalon",
            "bind": "tcp://*:7777", "state_dir": "/var/lib/avalon", "log_level": "INFO", "metrics_port": 9100,
        }
        configuration = measured_configuration(options)
        assert configuration["debug_workloads"] is None  # not given: not measured as on
        assert measured_configuration({**options, "debug_workloads": True})["debug_workloads"] is True
        assert configuration["in_process"] is True and configuration["http_listener"] is True
        assert configuration["shared_store"] is True
        text = json.dumps(configuration)
        for host_specific in ("secret", "7777", "/var/lib", "9100", "0.0.0.0", "/sys", "tdx"):
            assert host_specific not in text

    def test_a_published_event_is_checked_against_its_digest(self, builtin: WorkloadRegistry) -> None:
        published = measure_code(builtin, CONFIG).as_json()
        assert CodeEvent.from_json(published).digest.hex() == published["digest"]
        published["data"]["configuration"]["insecure_reuse_session_iv"] = True
        with pytest.raises(ValueError, match="digest does not match"):
            CodeEvent.from_json(published)


class TestRtmr3:
    @pytest.fixture
    def event(self, builtin: WorkloadRegistry) -> CodeEvent:
        return measure_code(builtin, CONFIG)

    def test_the_event_is_extended_once_and_published(self, sim: SimulatedTsm, event: CodeEvent, tmp_path: Path) -> None:
        record = extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        assert sim.extensions == [(3, event.digest)]
        assert sim.rtmr[3] == hashlib.sha384(bytes(48) + event.digest).digest()
        fields = record.signup_fields()
        assert fields == {"tdx_rtmr_events": [event.as_json()], "tdx_rtmr_extended": True}

    def test_a_restart_in_the_same_boot_publishes_every_event_since_boot(
        self, sim: SimulatedTsm, event: CodeEvent, builtin: WorkloadRegistry, tmp_path: Path
    ) -> None:
        extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        changed = measure_code(builtin, {**CONFIG, "timeout_s": 5.0})
        record = extend_rtmr3(changed, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        assert [e.digest for e in record.events] == [event.digest, changed.digest]
        assert replay(record.events) == sim.rtmr[3] and record.note is None

    def test_a_log_of_another_boot_is_not_reused(self, tmp_path: Path, event: CodeEvent) -> None:
        with SimulatedTsm(tmp_path / "first", TDX) as sim:
            extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        with SimulatedTsm(tmp_path / "second", TDX) as sim:  # a new boot: registers start at zero
            record = extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id="another-boot")
            assert record.events == (event,) and replay(record.events) == sim.rtmr[3]

    def test_extensions_this_worker_did_not_make_are_named(
        self, sim: SimulatedTsm, event: CodeEvent, tmp_path: Path
    ) -> None:
        sim.rtmr[3] = b"\x07" * 48
        record = extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        assert record.extended and record.events == (event,)
        assert record.note is not None and ("07" * 48) in record.note and "will not give" in record.note
        assert replay(record.events, b"\x07" * 48) == sim.rtmr[3]

    def test_a_kernel_without_the_interface_is_said_so(
        self, tmp_path: Path, event: CodeEvent, caplog: pytest.LogCaptureFixture
    ) -> None:
        with SimulatedTsm(tmp_path / "tsm", TDX, measurements=False) as sim:
            record = extend_rtmr3(event, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        assert record.signup_fields()["tdx_rtmr_extended"] is False
        assert record.events == ()
        assert record.note is not None and "Linux >= 6.16" in record.note
        assert "RTMR3 not extended" in caplog.text

    def test_a_refused_write_is_not_called_an_extension(
        self, sim: SimulatedTsm, event: CodeEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        short = CodeEvent({"x": 1})
        monkeypatch.setattr(CodeEvent, "digest", property(lambda self: b"\x01" * 47))  # the kernel wants 48
        record = extend_rtmr3(short, sim.measurements_dir, log_dir=tmp_path, boot_id=BOOT)
        assert not record.extended and record.note is not None and "Invalid argument" in record.note
        assert sim.extensions == [] and sim.rtmr[3] == bytes(48)
