"""The Gramine manifests: rendered as `gramine-manifest` renders them, parsed as TOML, checked.

Gramine itself cannot be installed here, so the template is rendered with jinja2 in the same
environment `gramine-manifest` builds (graminelibos/gen_jinja_env.py: StrictUndefined,
keep_trailing_newline, the `gramine.*`, `python.*`, `env` and `ldd` globals), with stand-ins for
what only a Gramine installation knows (where libsysdb.so and the patched glibc live). The
checks are the security invariants of docs/deployment.md: DCAP attestation, the key store as
an encrypted mount sealed to the enclave, the workload registry measured, no permissive file
policy and no insecure options, and enough thread slots for the server and its pool.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

jinja2 = pytest.importorskip("jinja2")
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "gramine" / "python-worker.manifest.template"
GSC_MANIFEST = ROOT / "gsc" / "avalon-worker.manifest"
GSC_BUILD_SCRIPT = ROOT / "gsc" / "build-gsc-image.sh"
DOCKERFILE = ROOT / "Dockerfile"

ARCH_LIBDIR = "/lib/x86_64-linux-gnu"
GRAMINE_PKGLIBDIR = Path("/usr/lib/x86_64-linux-gnu/gramine")
STATE_DIR = "/var/lib/avalon-worker"
APP_DIR = "/opt/avalon-worker"
# Supervisor threads besides one per pool process: main, libzmq I/O and reaper, and Gramine's
# IPC, async and TLS-handshake helpers (manifest-syntax.rst, "Number of threads").
BASE_THREADS = 6

# What Gramine's runtime directory holds in the stand-in: its patched glibc.
GRAMINE_RUNTIME_LIBS = frozenset({"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "ld-linux-x86-64.so.2"})

# Keys of Gramine 1.7-1.9 manifests (graminelibos/manifest_check.py, manifest-syntax.rst). A key
# outside this tree is a typo or Graphene-era syntax that Gramine would reject or ignore.
KNOWN_KEYS: dict[str, Any] = {
    "libos": {"entrypoint": None, "check_invalid_pointers": None},
    "loader": {
        "entrypoint": {"uri": None, "sha256": None},
        "argv": None, "argv_src_file": None, "env": "*", "env_src_file": None, "gid": None, "uid": None,
        "insecure__use_cmdline_argv": None, "insecure__use_host_env": None, "insecure__disable_aslr": None,
        "log_file": None, "log_level": None,
    },
    "fs": {"mounts": None, "root": None, "start_dir": None, "insecure__keys": "*"},
    "sys": {
        "allowed_ioctls": None, "brk": {"max_size": None}, "disallow_subprocesses": None,
        "enable_extra_runtime_domain_names_conf": None, "enable_sigterm_injection": None,
        "experimental__enable_flock": None, "insecure__allow_eventfd": None, "ioctl_structs": "*",
        "stack": {"size": None}, "fds": {"limit": None},
    },
    "sgx": {
        "allowed_files": None, "cpu_features": "*", "debug": None, "edmm_enable": None, "enable_stats": None,
        "enclave_size": None, "file_check_policy": None, "insecure__allow_memfaults_without_exinfo": None,
        "insecure__rpc_thread_num": None, "isvprodid": None, "isvsvn": None, "max_threads": None,
        "preheat_enclave": None, "profile": "*", "remote_attestation": None, "seal_key": "*",
        "trusted_files": None, "use_exinfo": None, "vtune_profile": None, "trusted_files_cache_size": None,
    },
}
# Keys GSC writes into the merged manifest itself; the app manifest must leave them alone.
GSC_OWNED = ["libos.entrypoint", "loader.argv", "loader.argv_src_file", "loader.insecure__use_cmdline_argv",
             "fs.root", "fs.start_dir", "sgx.debug", "loader.log_level", "sgx.trusted_files"]


# rendering ------------------------------------------------------------------------------------


class RuntimePath(PurePosixPath):
    """A path in the stand-in runtime directory: exists when it names one of its libraries."""

    def exists(self) -> bool:
        return self.parent == GRAMINE_PKGLIBDIR / "runtime" / "glibc" and self.name in GRAMINE_RUNTIME_LIBS


class Runtimedir:
    """Stand-in for gen_jinja_env.Runtimedir: `gramine.runtimedir()` and `{{ gramine.runtimedir }}`."""

    def __call__(self, libc: str = "glibc") -> RuntimePath:
        return RuntimePath(GRAMINE_PKGLIBDIR / "runtime" / libc)

    def __str__(self) -> str:
        return str(self())


def python_get_sys_path(interpreter: str, include_nonexisting: bool = False) -> Iterator[Path]:
    """gen_jinja_env.python_get_sys_path: run the interpreter and yield its sys.path."""
    output = subprocess.check_output(
        [interpreter, "-c", "import sys; print('\\0'.join(p for p in sys.path if p), end='')"]
    )
    for raw in output.split(b"\0"):
        path = Path(os.fsdecode(raw))
        if include_nonexisting or path.exists():
            yield path


def render(template: Path = TEMPLATE, *, get_sys_path: Any = python_get_sys_path, ldd: Any = None,
           **defines: str) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["gramine"] = {
        "libos": GRAMINE_PKGLIBDIR / "libsysdb.so",
        "pkglibdir": GRAMINE_PKGLIBDIR,
        "runtimedir": Runtimedir(),
    }
    env.globals["python"] = {"get_sys_path": get_sys_path, "stdlib": Path(sysconfig.get_paths()["stdlib"])}
    env.globals["env"] = os.environ
    env.globals["ldd"] = ldd if ldd is not None else (lambda *binaries: [])
    return env.from_string(template.read_text(encoding="utf-8")).render(**defines)


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An official-python-image layout: /usr/local/bin/python3.12 linking /usr/local/lib/libpython."""
    root = tmp_path_factory.mktemp("layout")
    stdlib = root / "usr/local/lib/python3.12"
    for directory in (stdlib / "lib-dynload", stdlib / "site-packages" / "avalon_worker"):
        directory.mkdir(parents=True)
    interpreter = str(root / "usr/local/bin/python3.12")
    sys_path = [root / "usr/local/lib/python312.zip", stdlib, stdlib / "lib-dynload", stdlib / "site-packages"]
    libpython = str(root / "usr/local/lib/libpython3.12.so.1.0")
    ssl_module = stdlib / "lib-dynload" / "_ssl.cpython-312-x86_64-linux-gnu.so"
    ssl_module.touch()
    # What `ldd` says each shared object links; tests add their own objects.
    deps = {
        interpreter: [f"{ARCH_LIBDIR}/libc.so.6", f"{ARCH_LIBDIR}/libm.so.6", libpython, "/lib64/ld-linux-x86-64.so.2"],
        str(ssl_module): [f"{ARCH_LIBDIR}/libssl.so.3", f"{ARCH_LIBDIR}/libcrypto.so.3", f"{ARCH_LIBDIR}/libc.so.6"],
    }

    def get_sys_path(interp: str, include_nonexisting: bool = False) -> Iterator[Path]:
        assert interp == interpreter
        return (p for p in sys_path if include_nonexisting or p.exists())

    def ldd(*binaries: str) -> list[str]:
        assert str(binaries[0]) == interpreter
        return sorted({lib for binary in binaries for lib in deps[str(binary)]})

    return {"interpreter": interpreter, "sys_path": [p for p in sys_path if p.exists()], "libpython": libpython,
            "get_sys_path": get_sys_path, "ldd": ldd, "deps": deps}


def tomli_text(fake_python: Mapping[str, Any], **defines: str) -> str:
    defines = {"entrypoint": fake_python["interpreter"], "arch_libdir": ARCH_LIBDIR, **defines}
    return render(get_sys_path=fake_python["get_sys_path"], ldd=fake_python["ldd"], **defines)


def manifest_for(fake_python: Mapping[str, Any], **defines: str) -> dict[str, Any]:
    return tomllib.loads(tomli_text(fake_python, **defines))


@pytest.fixture(scope="module")
def manifest(fake_python: Mapping[str, Any]) -> dict[str, Any]:
    return manifest_for(fake_python)


# helpers --------------------------------------------------------------------------------------


def walk_keys(table: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in table.items():
        yield prefix + key
        if isinstance(value, Mapping):
            yield from walk_keys(value, f"{prefix}{key}.")


def unknown_keys(table: Mapping[str, Any], known: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in table.items():
        if key not in known:
            found.append(prefix + key)
        elif isinstance(value, Mapping) and isinstance(known[key], Mapping):
            found += unknown_keys(value, known[key], f"{prefix}{key}.")
    return found


def get(table: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(table, Mapping) or part not in table:
            return None
        table = table[part]
    return table


def trusted_uris(manifest: Mapping[str, Any]) -> list[str]:
    return [entry if isinstance(entry, str) else entry["uri"] for entry in manifest["sgx"].get("trusted_files", [])]


def is_trusted(manifest: Mapping[str, Any], path: str) -> bool:
    """True when a trusted_files entry names `path` or a directory (trailing /) above it."""
    for uri in trusted_uris(manifest):
        assert uri.startswith("file:"), uri
        target = uri[len("file:"):]
        if target == path or (target.endswith("/") and path.startswith(target)):
            return True
    return False


def mount_for(manifest: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The mount that serves `path` (the deepest mount point at or above it)."""
    best = None
    for mount in manifest["fs"]["mounts"]:
        point = mount["path"].rstrip("/") or "/"
        if path == point or path.startswith(point + "/"):
            if best is None or len(point) > len(best["path"].rstrip("/")):
                best = mount
    return best


def argv_option(manifest: Mapping[str, Any], option: str) -> str:
    argv = manifest["loader"]["argv"]
    assert argv.count(option) == 1, f"{option} must appear once in loader.argv: {argv}"
    return argv[argv.index(option) + 1]


def size_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", size)
    assert match, f"bad size {size!r}"
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2)]


# the template ---------------------------------------------------------------------------------


class TestTemplateRendering:
    def test_renders_to_valid_toml_with_only_known_keys(self, manifest: dict[str, Any]) -> None:
        assert unknown_keys(manifest, KNOWN_KEYS) == []

    def test_uses_no_graphene_era_syntax(self) -> None:
        text = TEMPLATE.read_text(encoding="utf-8")
        for old in ("sgx.thread_num", "loader.exec", "loader.preload", "fs.mount.", "sgx.protected_files",
                    "sgx.allow_file_creation", "sgx.ra_client_spid", "sgx.nonpie_binary", "loader.debug_type"):
            assert old not in text, f"Graphene-era key {old} in the template"

    def test_undefined_required_variable_fails_like_gramine_manifest(self) -> None:
        with pytest.raises(jinja2.UndefinedError):
            render(arch_libdir=ARCH_LIBDIR)  # no entrypoint

    @pytest.mark.slow  # ldd on every extension module of the interpreter and the test environment
    def test_renders_with_the_real_interpreter_and_ldd(self) -> None:
        if shutil.which("ldd") is None:
            pytest.skip("no ldd on this machine")
        interpreter = os.path.realpath(sys.executable)
        text = render(ldd=real_ldd, entrypoint=interpreter, arch_libdir=ARCH_LIBDIR)
        manifest = tomllib.loads(text)
        assert manifest["libos"]["entrypoint"] == interpreter
        for path in python_get_sys_path(interpreter):
            assert mount_for(manifest, str(path)) is not None, path
            assert is_trusted(manifest, str(path) + ("/" if path.is_dir() else "")), path


def real_ldd(*binaries: str) -> list[str]:
    """gen_jinja_env.ldd: the absolute paths of the libraries `ldd` lists."""
    found = set()
    for line in subprocess.check_output(["ldd", *binaries]).decode("ascii").splitlines():
        words = line.strip().split()
        if len(words) > 2 and words[1] == "=>" and words[2].startswith("/"):
            found.add(words[2])
        elif len(words) > 1 and words[0].startswith("/") and words[1].startswith("("):
            found.add(words[0])
    return sorted(found)


class TestAttestationAndIdentity:
    def test_remote_attestation_is_dcap(self, manifest: dict[str, Any]) -> None:
        assert manifest["sgx"]["remote_attestation"] == "dcap"

    def test_worker_refuses_to_run_without_sgx_attestation(self, manifest: dict[str, Any]) -> None:
        assert argv_option(manifest, "--attestation") == "gramine"

    def test_production_enclave_by_default_debug_only_when_asked(self, fake_python: Mapping[str, Any]) -> None:
        assert manifest_for(fake_python)["sgx"]["debug"] is False
        assert manifest_for(fake_python, debug="true")["sgx"]["debug"] is True

    def test_isv_identity_is_set(self, manifest: dict[str, Any]) -> None:
        assert manifest["sgx"]["isvprodid"] >= 1 and manifest["sgx"]["isvsvn"] >= 1


class TestStateDirectory:
    def test_state_dir_is_an_encrypted_mount_sealed_to_mrenclave(self, manifest: dict[str, Any]) -> None:
        state_dir = argv_option(manifest, "--state-dir")
        assert state_dir == STATE_DIR
        mount = mount_for(manifest, state_dir + "/identity.json")
        assert mount == {"type": "encrypted", "path": STATE_DIR, "uri": f"file:{STATE_DIR}", "key_name": "_sgx_mrenclave"}

    def test_exactly_one_encrypted_mount_and_no_hard_coded_key(self, manifest: dict[str, Any]) -> None:
        assert [m["path"] for m in manifest["fs"]["mounts"] if m.get("type") == "encrypted"] == [STATE_DIR]
        assert "insecure__keys" not in manifest["fs"]

    def test_state_dir_is_neither_trusted_nor_allowed(self, manifest: dict[str, Any]) -> None:
        assert not is_trusted(manifest, STATE_DIR + "/identity.json")
        assert not manifest["sgx"].get("allowed_files")

    def test_state_dir_follows_the_template_variable(self, fake_python: Mapping[str, Any]) -> None:
        manifest = manifest_for(fake_python, state_dir="/srv/worker-state")
        assert argv_option(manifest, "--state-dir") == "/srv/worker-state"
        assert mount_for(manifest, "/srv/worker-state/x")["type"] == "encrypted"

    def test_no_listener_unless_asked(self, manifest: dict[str, Any]) -> None:
        assert "--listen-http" not in manifest["loader"]["argv"]

    @pytest.mark.parametrize("workers", ["0", "2"])
    def test_the_listener_is_measured_and_its_front_door_may_start(
        self, fake_python: Mapping[str, Any], workers: str
    ) -> None:
        manifest = manifest_for(fake_python, listen_http="0.0.0.0:8080", workers=workers)
        assert argv_option(manifest, "--listen-http") == "0.0.0.0:8080"
        assert manifest["sys"]["disallow_subprocesses"] is False  # the front door is a process of its own
        assert manifest_for(fake_python, workers="0")["sys"]["disallow_subprocesses"] is True

    def test_the_makefile_passes_every_template_variable(self) -> None:
        makefile = (TEMPLATE.parent / "Makefile").read_text(encoding="utf-8")
        header = TEMPLATE.read_text(encoding="utf-8").split("{%", 1)[0]
        variables = set(re.findall(r"^#   ([a-z_]+)(?:,? +|\n)", header, re.M))
        variables |= {name for line in re.findall(r"^#   ([a-z_]+),\s+([a-z_]+)", header, re.M) for name in line}
        assert {"listen_http", "workers", "state_dir"} <= variables
        for name in variables:
            assert f"-D{name}=" in makefile, f"gramine/Makefile does not pass {name}"

    def test_tmp_is_enclave_memory(self, manifest: dict[str, Any]) -> None:
        assert mount_for(manifest, "/tmp/scratch") == {"type": "tmpfs", "path": "/tmp"}


class TestMeasuredFiles:
    def test_workload_registry_is_trusted_and_mounted(self, manifest: dict[str, Any]) -> None:
        registry = argv_option(manifest, "--workloads")
        assert registry == f"{APP_DIR}/workloads.json"
        assert is_trusted(manifest, registry)
        assert mount_for(manifest, registry)["uri"] == f"file:{APP_DIR}"

    def test_registry_stays_trusted_when_the_app_dir_moves(self, fake_python: Mapping[str, Any]) -> None:
        manifest = manifest_for(fake_python, app_dir="/srv/app")
        assert is_trusted(manifest, argv_option(manifest, "--workloads"))

    def test_interpreter_stdlib_and_site_packages_are_trusted_and_mounted(
        self, manifest: dict[str, Any], fake_python: Mapping[str, Any]
    ) -> None:
        interpreter = fake_python["interpreter"]
        assert manifest["libos"]["entrypoint"] == interpreter == manifest["loader"]["argv"][0]
        assert is_trusted(manifest, interpreter)
        assert mount_for(manifest, interpreter) is not None
        assert fake_python["sys_path"], "the fake layout has directories on sys.path"
        for directory in fake_python["sys_path"]:
            assert is_trusted(manifest, f"{directory}/any_module.py"), directory
            assert mount_for(manifest, f"{directory}/any_module.py") is not None, directory

    def test_nonexistent_sys_path_entries_are_left_out(self, manifest: dict[str, Any]) -> None:
        assert not any("python312.zip" in uri for uri in trusted_uris(manifest))

    def test_libraries_outside_the_arch_libdirs_are_trusted_mounted_and_on_the_library_path(
        self, manifest: dict[str, Any], fake_python: Mapping[str, Any]
    ) -> None:
        libpython = fake_python["libpython"]
        assert is_trusted(manifest, libpython)
        assert mount_for(manifest, libpython) is not None
        assert os.path.dirname(libpython) in manifest["loader"]["env"]["LD_LIBRARY_PATH"].split(":")
        assert not any("ld-linux" in uri for uri in trusted_uris(manifest))

    def test_the_libraries_measured_are_those_linked_not_whole_directories(self, manifest: dict[str, Any]) -> None:
        uris = trusted_uris(manifest)
        assert f"file:{ARCH_LIBDIR}/libssl.so.3" in uris and f"file:{ARCH_LIBDIR}/libcrypto.so.3" in uris
        assert not [uri for uri in uris if uri.rstrip("/") in (f"file:{ARCH_LIBDIR}", f"file:/usr{ARCH_LIBDIR}")]
        # glibc's own come from Gramine's runtime directory, which is measured as a whole
        assert not [uri for uri in uris if uri.endswith(("/libc.so.6", "/libm.so.6"))]
        assert mount_for(manifest, f"{ARCH_LIBDIR}/libssl.so.3")["uri"] == f"file:{ARCH_LIBDIR}"

    def test_gramine_runtime_comes_first_on_the_library_path(self, manifest: dict[str, Any]) -> None:
        assert manifest["loader"]["env"]["LD_LIBRARY_PATH"].split(":")[0] == "/lib"
        assert mount_for(manifest, "/lib/libc.so.6")["uri"] == f"file:{GRAMINE_PKGLIBDIR}/runtime/glibc"

    def test_every_trusted_entry_is_reachable_through_a_mount(self, manifest: dict[str, Any]) -> None:
        for uri in trusted_uris(manifest):
            path = uri[len("file:"):]
            if path.startswith(str(GRAMINE_PKGLIBDIR)):
                continue  # Gramine's own files: the loader reads them before any mount exists
            assert mount_for(manifest, path.rstrip("/") or "/") is not None, uri


class TestNoPermissivePolicy:
    def test_file_check_policy_is_strict(self, manifest: dict[str, Any]) -> None:
        assert manifest["sgx"].get("file_check_policy", "strict") == "strict"
        code = [line for line in TEMPLATE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "allow_all_but_log" in line or "allowed_files" in line]

    def test_no_insecure_options(self, fake_python: Mapping[str, Any]) -> None:
        for defines in ({}, {"workers": "0"}, {"debug": "true", "edmm": "true"}):
            manifest = manifest_for(fake_python, **defines)
            assert [k for k in walk_keys(manifest) if "insecure__" in k] == []

    def test_environment_is_fixed_in_the_manifest(self, manifest: dict[str, Any]) -> None:
        for value in manifest["loader"]["env"].values():
            assert isinstance(value, str), "no passthrough of host environment variables"


class TestResources:
    @pytest.mark.parametrize("workers", [0, 1, 2, 4, 16])
    def test_thread_slots_cover_the_server_and_its_pool(self, fake_python: Mapping[str, Any], workers: int) -> None:
        manifest = manifest_for(fake_python, workers=str(workers))
        assert argv_option(manifest, "--workers") == str(workers)
        assert manifest["sgx"]["max_threads"] >= workers + BASE_THREADS
        assert manifest["sgx"]["max_threads"] >= 4  # Gramine's minimum even for one thread

    def test_no_pool_means_no_subprocesses(self, fake_python: Mapping[str, Any]) -> None:
        assert manifest_for(fake_python, workers="0")["sys"]["disallow_subprocesses"] is True
        assert manifest_for(fake_python, workers="2")["sys"]["disallow_subprocesses"] is False

    def test_enclave_size_default_and_override(self, fake_python: Mapping[str, Any]) -> None:
        assert size_bytes(manifest_for(fake_python)["sgx"]["enclave_size"]) >= 512 << 20
        assert manifest_for(fake_python, enclave_size="2G")["sgx"]["enclave_size"] == "2G"

    def test_edmm_is_off_unless_chosen(self, fake_python: Mapping[str, Any]) -> None:
        assert manifest_for(fake_python)["sgx"]["edmm_enable"] is False
        assert manifest_for(fake_python, edmm="true")["sgx"]["edmm_enable"] is True

    def test_bind_address_is_measured(self, fake_python: Mapping[str, Any]) -> None:
        assert argv_option(manifest_for(fake_python), "--bind") == "tcp://*:7777"
        assert argv_option(manifest_for(fake_python, bind="tcp://127.0.0.1:7000"), "--bind") == "tcp://127.0.0.1:7000"


# the GSC app manifest -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsc_manifest() -> dict[str, Any]:
    return tomllib.loads(GSC_MANIFEST.read_text(encoding="utf-8"))


def gsc_default_workers() -> int:
    match = re.search(r'^WORKERS="\$\{WORKERS:-(\d+)\}"$', GSC_BUILD_SCRIPT.read_text(encoding="utf-8"), re.M)
    assert match, "gsc/build-gsc-image.sh must default WORKERS"
    return int(match.group(1))


class TestGscManifest:
    def test_only_known_keys(self, gsc_manifest: dict[str, Any]) -> None:
        assert unknown_keys(gsc_manifest, KNOWN_KEYS) == []

    def test_leaves_the_keys_gsc_sets_to_gsc(self, gsc_manifest: dict[str, Any]) -> None:
        assert [key for key in GSC_OWNED if get(gsc_manifest, key) is not None] == []

    def test_dcap_strict_and_no_insecure_options(self, gsc_manifest: dict[str, Any]) -> None:
        assert gsc_manifest["sgx"]["remote_attestation"] == "dcap"
        assert gsc_manifest["sgx"]["file_check_policy"] == "strict"
        assert [k for k in walk_keys(gsc_manifest) if "insecure__" in k] == []

    def test_state_dir_is_sealed_to_mrenclave(self, gsc_manifest: dict[str, Any]) -> None:
        encrypted = [m for m in gsc_manifest["fs"]["mounts"] if m.get("type") == "encrypted"]
        assert encrypted == [{"type": "encrypted", "path": STATE_DIR, "uri": f"file:{STATE_DIR}",
                              "key_name": "_sgx_mrenclave"}]
        # GSC measures every file of the image except those under /var: the sealed state must be
        # there, and nothing the worker loads may be.
        assert STATE_DIR.startswith("/var/")
        assert not APP_DIR.startswith("/var/")

    def test_thread_slots_cover_the_measured_pool(self, gsc_manifest: dict[str, Any]) -> None:
        script = GSC_BUILD_SCRIPT.read_text(encoding="utf-8")
        max_workers = int(re.search(r"^readonly MAX_WORKERS=(\d+)$", script, re.M).group(1))
        assert gsc_default_workers() <= max_workers
        assert gsc_manifest["sgx"]["max_threads"] >= max_workers + BASE_THREADS

    def test_measured_command_line_matches_the_image_layout(self) -> None:
        script = GSC_BUILD_SCRIPT.read_text(encoding="utf-8")
        dockerfile = DOCKERFILE.read_text(encoding="utf-8")
        assert f"readonly STATE_DIR={STATE_DIR}" in script
        assert f"readonly WORKLOADS={APP_DIR}/workloads.json" in script
        assert "--attestation gramine" in script
        assert f'VOLUME ["{STATE_DIR}"]' in dockerfile
        assert f"> {APP_DIR}/workloads.json" in dockerfile
        assert "--insecure-args" not in script


class TestMeasuredInstall:
    """`packages` and `app_uri`: the relocatable install scripts/measure-enclave.sh signs."""

    @pytest.fixture
    def bundle(self, tmp_path: Path, fake_python: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
        """A bundle directory with packages/ (one extension module and its bundled library) and app/."""
        module = tmp_path / "packages" / "zmq" / "backend" / "_zmq.abi3.so"
        bundled = tmp_path / "packages" / "pyzmq.libs" / "libzmq-4a1b.so.5"
        for path in (module, bundled):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        (tmp_path / "app").mkdir()
        fake_python["deps"][str(module)] = [str(bundled), f"{ARCH_LIBDIR}/libstdc++.so.6", f"{ARCH_LIBDIR}/libc.so.6"]
        monkeypatch.chdir(tmp_path)
        return tmp_path

    def test_packages_are_mounted_measured_and_on_pythonpath_by_relative_uri(
        self, bundle: Path, fake_python: Mapping[str, Any]
    ) -> None:
        manifest = manifest_for(fake_python, packages="packages")
        assert mount_for(manifest, "/usr/lib/avalon-worker/avalon_worker/__init__.py")["uri"] == "file:packages"
        assert "file:packages/" in trusted_uris(manifest)
        assert manifest["loader"]["env"]["PYTHONPATH"] == "/usr/lib/avalon-worker"
        assert str(bundle) not in tomli_text(fake_python, packages="packages")

    def test_the_packages_libraries_are_found_and_the_bundled_ones_not_measured_twice(
        self, bundle: Path, fake_python: Mapping[str, Any]
    ) -> None:
        uris = trusted_uris(manifest_for(fake_python, packages="packages"))
        assert f"file:{ARCH_LIBDIR}/libstdc++.so.6" in uris
        assert not [uri for uri in uris if "pyzmq.libs" in uri]

    def test_with_packages_python_ignores_the_hosts_site_packages(
        self, bundle: Path, fake_python: Mapping[str, Any]
    ) -> None:
        manifest = manifest_for(fake_python, packages="packages")
        assert manifest["loader"]["argv"][:4] == [fake_python["interpreter"], "-S", "-m", "avalon_worker"]
        site = [p for p in fake_python["sys_path"] if p.name == "site-packages"]
        assert site, "the fake layout has a site-packages directory"
        for path in site:
            assert f"file:{path}/" not in trusted_uris(manifest)
            assert mount_for(manifest, f"{path}/avalon_worker/__init__.py")["path"] != str(path)

    def test_the_app_directory_may_come_from_a_relative_uri(self, bundle: Path, fake_python: Mapping[str, Any]) -> None:
        manifest = manifest_for(fake_python, app_uri="app")
        assert argv_option(manifest, "--workloads") == f"{APP_DIR}/workloads.json"
        assert mount_for(manifest, f"{APP_DIR}/workloads.json") == {"path": APP_DIR, "uri": "file:app"}
        assert "file:app/" in trusted_uris(manifest)


class TestDirectTestRendering:
    """The variables scripts/gramine-direct-test.sh sets: nothing of them leaks into a normal render."""

    KEY = "00112233445566778899aabbccddeeff"

    def test_no_packages_directory_by_default(self, manifest: dict[str, Any]) -> None:
        assert "PYTHONPATH" not in manifest["loader"]["env"]
        assert "-S" not in manifest["loader"]["argv"]

    def test_the_direct_test_key_replaces_sealing_and_the_measured_command_line(
        self, fake_python: Mapping[str, Any]
    ) -> None:
        manifest = manifest_for(fake_python, insecure_direct_test_key=self.KEY)
        mount = mount_for(manifest, STATE_DIR + "/identity.json")
        assert mount["type"] == "encrypted" and mount["key_name"] == "insecure_direct_test_only"
        assert manifest["fs"]["insecure__keys"] == {"insecure_direct_test_only": self.KEY}
        assert manifest["loader"]["insecure__use_cmdline_argv"] is True and "argv" not in manifest["loader"]
        assert sorted(k for k in walk_keys(manifest) if "insecure__" in k) == [
            "fs.insecure__keys", "fs.insecure__keys.insecure_direct_test_only", "loader.insecure__use_cmdline_argv",
        ]

    def test_an_empty_key_is_a_normal_render(self, fake_python: Mapping[str, Any], manifest: dict[str, Any]) -> None:
        assert manifest_for(fake_python, insecure_direct_test_key="", packages="", app_uri="") == manifest
