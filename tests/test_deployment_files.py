"""The container and cluster files agree with each other and keep their promises.

No Docker here: scripts/compose-smoke-test.sh runs the real thing. These checks read the files:
the image installs only hash-pinned requirements and runs as a non-root user, the lock files
cover what pyproject.toml declares, the compose services and overrides have the shape
docs/deployment.md describes, and the Kubernetes example requests SGX through Intel's device
plugin and never load-balances one requester over workers with different keys.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = "/var/lib/avalon-worker"
WORKLOADS = "/opt/avalon-worker/workloads.json"


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip()).group(0))


def locked(relative: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a pip-compile --generate-hashes file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", read(relative))
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*", line)
        assert match, f"{relative}: not an exact, hashed pin: {line[:80]}"
        entries[normalize(match.group(1))] = (match.group(2), re.findall(r"sha256:([0-9a-f]{64})", match.group(3)))
    return entries


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


# the image ------------------------------------------------------------------------------------


class TestDockerfile:
    def test_base_image_is_an_argument_defaulting_to_slim_bookworm_python(self) -> None:
        args = [rest for keyword, rest in dockerfile_instructions() if keyword == "ARG" and rest.startswith("BASE_IMAGE")]
        assert args and re.fullmatch(r"BASE_IMAGE=python:3\.1\d-slim-bookworm", args[0])
        assert [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"][-1] == "${BASE_IMAGE}"

    def test_runtime_dependencies_are_installed_hash_checked_and_nothing_else_from_an_index(self) -> None:
        runs = [rest for keyword, rest in final_stage() if keyword == "RUN" and "pip install" in rest]
        assert runs
        installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
        for install in installs:
            assert "--require-hashes" in install or "--no-index" in install, install
            assert "--no-deps" in install, install
        assert any("--require-hashes" in i and "requirements.txt" in i for i in installs)

    def test_the_wheel_is_built_without_fetching_unpinned_build_tools(self) -> None:
        text = read("Dockerfile")
        assert "--no-build-isolation" in text
        assert re.search(r"--require-hashes --no-deps -r requirements/build\.txt", text)

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        users = [rest for keyword, rest in final_stage() if keyword == "USER"]
        assert users, "the final stage must set USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, "numeric, so that Kubernetes runAsNonRoot can check it"

    def test_state_dir_is_a_volume_and_the_port_is_exposed(self) -> None:
        stage = final_stage()
        assert ("VOLUME", f'["{STATE_DIR}"]') in stage
        assert ("EXPOSE", "7777") in stage

    def test_default_command_serves_on_7777_with_the_state_dir_and_registry(self) -> None:
        stage = dict(final_stage())
        assert json.loads(stage["ENTRYPOINT"]) == ["python3", "-m", "avalon_worker"]
        cmd = json.loads(stage["CMD"])
        assert cmd[0] == "serve"
        assert cmd[cmd.index("--bind") + 1] == "tcp://*:7777"
        assert cmd[cmd.index("--state-dir") + 1] == STATE_DIR
        assert cmd[cmd.index("--workloads") + 1] == WORKLOADS

    def test_build_context_is_an_allow_list(self) -> None:
        lines = [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
        assert lines[0] == "*"
        assert {"!pyproject.toml", "!requirements/", "!src/"} <= set(lines)
        for source in re.findall(r"^COPY (?!--from)(\S+)", read("Dockerfile"), re.M):
            top = source.split("/")[0].rstrip("*")
            assert any(line.lstrip("!").startswith(top) for line in lines if line.startswith("!")), source


class TestLockFiles:
    def test_every_pin_is_exact_and_hashed(self) -> None:
        for relative in ("requirements/runtime.txt", "requirements/build.txt"):
            entries = locked(relative)
            assert entries
            for name, (version, hashes) in entries.items():
                assert hashes, f"{relative}: {name}=={version} has no hash"

    def test_runtime_lock_covers_the_declared_dependencies(self) -> None:
        project = tomllib.loads(read("pyproject.toml"))["project"]
        declared = project["dependencies"] + project["optional-dependencies"]["postgres"]  # the image serves PostgreSQL
        assert {requirement_name(spec) for spec in declared} <= set(locked("requirements/runtime.txt"))

    def test_build_lock_covers_the_build_system(self) -> None:
        requires = tomllib.loads(read("pyproject.toml"))["build-system"]["requires"]
        assert {requirement_name(spec) for spec in requires} <= set(locked("requirements/build.txt"))

    def test_lock_files_name_no_index_or_local_path(self) -> None:
        for relative in ("requirements/runtime.txt", "requirements/build.txt"):
            text = read(relative)
            assert "--index-url" not in text and "--find-links" not in text and "file://" not in text


# compose --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip("yaml")


def load_yaml(yaml: Any, relative: str) -> Any:
    return yaml.safe_load(read(relative))


def load_all_yaml(yaml: Any, relative: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(read(relative)) if doc]


class TestCompose:
    def test_services_have_the_original_names(self, yaml: Any) -> None:
        services = load_yaml(yaml, "docker-compose.yaml")["services"]
        assert set(services) == {"process-work-order", "test-send-work-order"}

    def test_worker_builds_from_the_dockerfile_with_a_base_image_argument(self, yaml: Any) -> None:
        worker = load_yaml(yaml, "docker-compose.yaml")["services"]["process-work-order"]
        assert worker["build"]["context"] == "."
        assert "BASE_IMAGE" in worker["build"]["args"]
        assert f"worker-state:{STATE_DIR}" in worker["volumes"]

    def test_client_runs_the_sample_orders_against_the_worker(self, yaml: Any) -> None:
        client = load_yaml(yaml, "docker-compose.yaml")["services"]["test-send-work-order"]
        command = client["command"]
        assert command[0] == "run-orders"
        assert command[command.index("--endpoint") + 1] == "tcp://process-work-order:7777"
        mounts = dict(reversed(re.fullmatch(r"(.+):(/[^:]+?)(?::ro|:rw)?", v).groups()) for v in client["volumes"])
        assert mounts[command[-1]] == "${WORK_ORDERS_FILE:-./tests/test_work_orders.json}"
        orders = json.loads(read("tests/test_work_orders.json"))["workOrders"]
        assert len(orders) == 9, "scripts/compose-smoke-test.sh expects nine verified results"

    def test_host_network_override_uses_loopback_only(self, yaml: Any) -> None:
        services = load_yaml(yaml, "compose/host-network.yaml")["services"]
        worker, client = services["process-work-order"], services["test-send-work-order"]
        assert worker["network_mode"] == client["network_mode"] == "host"
        assert worker["build"]["network"] == "host"
        bind = worker["command"][worker["command"].index("--bind") + 1]
        endpoint = client["command"][client["command"].index("--endpoint") + 1]
        assert bind.startswith("tcp://127.0.0.1:") and endpoint == bind

    def test_sgx_override_runs_the_gsc_image_with_devices_and_aesmd(self, yaml: Any) -> None:
        document = load_yaml(yaml, "compose/gramine-sgx.yaml")
        worker = document["services"]["process-work-order"]
        assert re.search(r"(^|[-:])gsc-avalon-worker", worker["image"])
        assert set(worker["devices"]) == {"/dev/sgx_enclave:/dev/sgx_enclave", "/dev/sgx_provision:/dev/sgx_provision"}
        assert "/var/run/aesmd:/var/run/aesmd" in worker["volumes"]
        assert "command" not in worker, "GSC ignores it: the command line is measured into the image"

    def test_sgx_override_never_builds_an_ordinary_image_under_the_gsc_name(self, yaml: Any) -> None:
        build = load_yaml(yaml, "compose/gramine-sgx.yaml")["services"]["process-work-order"]["build"]
        guard = read(f"{build['context']}/{build['dockerfile']}")
        assert "FROM scratch" in guard and "gsc/build-gsc-image.sh" in guard

    def test_sgx_worker_gets_its_own_state_volume(self, yaml: Any) -> None:
        base = load_yaml(yaml, "docker-compose.yaml")["services"]["process-work-order"]["volumes"]
        sgx = load_yaml(yaml, "compose/gramine-sgx.yaml")["services"]["process-work-order"]["volumes"]
        base_volume = next(v.split(":")[0] for v in base if v.endswith(STATE_DIR))
        sgx_volume = next(v.split(":")[0] for v in sgx if v.split(":")[1] == STATE_DIR)
        assert sgx_volume != base_volume, "clear-text keys from the plain worker would break the sealed mount"


# kubernetes -----------------------------------------------------------------------------------


def k8s_objects(yaml: Any) -> dict[str, Any]:
    return {doc["kind"]: doc for doc in load_all_yaml(yaml, "deploy/k8s/avalon-worker.yaml")}


def quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(value))
    assert match, value
    return int(match.group(1)) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30}[match.group(2)]


class TestKubernetes:
    def test_deployment_requests_sgx_through_the_device_plugin(self, yaml: Any) -> None:
        container = k8s_objects(yaml)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        assert {"sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision"} <= set(limits)

    def test_epc_covers_every_enclave_of_the_pool(self, yaml: Any) -> None:
        container = k8s_objects(yaml)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        gsc = tomllib.loads(read("gsc/avalon-worker.manifest"))
        enclave = quantity_bytes(gsc["sgx"]["enclave_size"].replace("M", "Mi").replace("G", "Gi"))
        workers = int(re.search(r'^WORKERS="\$\{WORKERS:-(\d+)\}"$', read("gsc/build-gsc-image.sh"), re.M).group(1))
        assert quantity_bytes(container["resources"]["limits"]["sgx.intel.com/epc"]) >= (workers + 1) * enclave

    def test_aesmd_socket_probes_and_non_root(self, yaml: Any) -> None:
        pod = k8s_objects(yaml)["Deployment"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["tcpSocket"]["port"] in ("zmq", 7777)
        aesmd = next(v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/var/run/aesmd")
        assert {"name": aesmd["name"], "mountPath": "/var/run/aesmd"} in container["volumeMounts"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "command" not in container and "args" not in container

    def test_each_replica_keeps_its_own_state(self, yaml: Any) -> None:
        pod = k8s_objects(yaml)["Deployment"]["spec"]["template"]["spec"]
        state = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == STATE_DIR)
        volume = next(v for v in pod["volumes"] if v["name"] == state["name"])
        assert "emptyDir" in volume, "a shared volume would give every replica the same keys"

    def test_service_is_headless(self, yaml: Any) -> None:
        service = k8s_objects(yaml)["Service"]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"][0]["port"] == 7777


    def test_each_worker_pod_has_a_pump_that_reads_the_store_url_from_the_secret(self, yaml: Any) -> None:
        pod = k8s_objects(yaml)["Deployment"]["spec"]["template"]["spec"]
        pump = next(c for c in pod["containers"] if c["name"] == "pump")
        assert pump["args"][:3] == ["pump", "--endpoint", "tcp://127.0.0.1:7777"]
        assert_store_from_secret(pump)
        assert not any(key.startswith("sgx.intel.com/") for key in pump["resources"].get("limits", {}))

    def test_listeners_are_a_load_balanced_deployment_of_the_plain_image(self, yaml: Any) -> None:
        objects = {doc["kind"]: doc for doc in load_all_yaml(yaml, "deploy/k8s/listener.yaml")}
        container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["listener", "--listen-http"]
        assert "gsc-" not in container["image"]
        assert_store_from_secret(container)
        assert container["readinessProbe"]["httpGet"]["port"] == "http"
        assert objects["Service"]["spec"].get("clusterIP") != "None"  # stateless: any listener will do

    def test_no_database_or_secret_is_shipped(self, yaml: Any) -> None:
        kustomization = load_yaml(yaml, "deploy/k8s/kustomization.yaml")
        assert set(kustomization["resources"]) == {"avalon-worker.yaml", "listener.yaml"}
        kinds = [doc["kind"] for name in kustomization["resources"] for doc in load_all_yaml(yaml, f"deploy/k8s/{name}")]
        assert "Secret" not in kinds and "StatefulSet" not in kinds


def assert_store_from_secret(container: dict[str, Any]) -> None:
    """The database URL (and its password) reaches the process through the environment, from
    the Secret, and never through its command line."""
    [store] = [e for e in container["env"] if e["name"] == "AVALON_WORKER_STORE"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": "avalon-worker-store", "key": "url"}
    assert "--store" not in container["args"] and not any("postgresql://" in arg for arg in container["args"])


class TestMultiHostCompose:
    def services(self, yaml: Any) -> dict[str, Any]:
        return load_yaml(yaml, "compose/multi-host.yaml")["services"]

    def test_a_database_two_workers_two_listeners_on_the_host_network(self, yaml: Any) -> None:
        services = self.services(yaml)
        assert {"database", "worker-a", "worker-b", "listener-1", "listener-2"} <= set(services)
        assert all(service["network_mode"] == "host" for service in services.values())

    def test_everything_binds_loopback_only(self, yaml: Any) -> None:
        services = self.services(yaml)
        for name in ("worker-a", "worker-b"):
            command = services[name]["command"]
            assert command[0] == "serve" and command[command.index("--bind") + 1].startswith("tcp://127.0.0.1:")
        for name in ("listener-1", "listener-2"):
            command = services[name]["command"]
            assert command[0] == "listener" and command[command.index("--listen-http") + 1].startswith("127.0.0.1:")
        assert "AVALON_DB_LISTEN" not in services["database"].get("environment", {})  # its default: 127.0.0.1

    def test_two_identities_and_the_store_url_only_in_the_environment(self, yaml: Any) -> None:
        services = self.services(yaml)
        states = {next(v.split(":")[0] for v in services[name]["volumes"] if v.endswith(STATE_DIR)) for name in ("worker-a", "worker-b")}
        assert len(states) == 2
        for name in ("worker-a", "worker-b", "listener-1", "listener-2"):
            assert services[name]["environment"]["AVALON_WORKER_STORE"].startswith("postgresql://")
            assert "--store" not in services[name]["command"]

    def test_the_database_image_is_debians_package_on_the_local_base(self) -> None:
        dockerfile = read("compose/postgres.Dockerfile")
        assert "ARG BASE_IMAGE" in dockerfile and "apt-get install" in dockerfile and " postgresql" in dockerfile
        assert "USER postgres" in dockerfile


# scripts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script", [
        "scripts/compose-smoke-test.sh", "scripts/compose-multi-host-smoke-test.sh", "scripts/compose-lib.sh",
        "scripts/lock-requirements.sh", "gsc/build-gsc-image.sh", "compose/postgres-entrypoint.sh", ".ci/run",
    ]
)
def test_shell_scripts_parse(script: str) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


CI_SCRIPTS = (".ci/run", "scripts/compose-lib.sh", "scripts/build-gramine.sh", "scripts/gramine-direct-test.sh")


@pytest.mark.parametrize("script", CI_SCRIPTS)
def test_every_apt_install_in_ci_is_announced_in_one_line(script: str) -> None:
    lines = read(script).splitlines()
    installs = [number for number, line in enumerate(lines) if "apt-get install" in line and not line.lstrip().startswith("#")]
    for number in installs:
        before = " ".join(lines[max(0, number - 6):number + 1])
        assert re.search(r"(echo|log) \"[^\"]*installing[^\"]*apt-get", before), f"{script}:{number + 1}: say what apt-get installs"


def test_the_compose_stages_remove_the_images_they_built() -> None:
    for script in ("scripts/compose-smoke-test.sh", "scripts/compose-multi-host-smoke-test.sh"):
        text = read(script)
        built = set(re.findall(r"^export (AVALON_\w+_IMAGE)=", text, flags=re.MULTILINE))
        assert built, script
        [removal] = [line for line in text.splitlines() if line.strip().startswith("remove_built_images ")]
        assert {name for name in built if f'"${name}"' in removal} == built, f"{script} removes every image it builds"
    ci = read(".ci/run")
    # the first stage keeps its image for the second, which builds on it and removes both
    assert "SMOKE_KEEP_IMAGES=1 bash scripts/compose-smoke-test.sh" in ci
    assert "\nbash scripts/compose-multi-host-smoke-test.sh" in ci
    assert '"${SMOKE_KEEP_IMAGES:-0}" = 1' in read("scripts/compose-lib.sh")
