"""The worker keeps its identity across restarts and never replaces a corrupt one."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from avalon_worker import crypto
from avalon_worker.identity import STATE_FILE, Identity, IdentityError, load_or_create

from conftest import launch_worker, run_cli


def test_state_dir_and_key_file_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    load_or_create(state, 2048)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / STATE_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == [STATE_FILE]


def test_an_existing_state_dir_that_others_can_read_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    load_or_create(state, 2048)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    load_or_create(state, 2048)  # and it is loaded from there again
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_missing_parents_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state"
    old = os.umask(0)
    try:
        load_or_create(state, 2048)
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", state):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_the_serving_worker_makes_no_core_dumps(tmp_path: Path) -> None:
    worker = launch_worker(tmp_path / "state")
    try:
        limits = Path(f"/proc/{worker.process.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
    finally:
        worker.stop()


def test_disable_core_dumps_clears_the_dumpable_flag() -> None:
    code = (
        "import ctypes, resource\n"
        "from avalon_worker.identity import disable_core_dumps\n"
        "disable_core_dumps()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split(None, 1) == ["0", "(0, 0)\n"], done.stderr


def test_loading_again_gives_the_same_keys(tmp_path: Path) -> None:
    first, created = load_or_create(tmp_path, 2048)
    second, created_again = load_or_create(tmp_path, 2048)
    assert (created, created_again) == (True, False)
    assert second.verifying_key_pem == first.verifying_key_pem
    assert second.encryption_key_pem == first.encryption_key_pem
    session_key = crypto.random_bytes(32)
    wrapped = crypto.rsa_oaep_encrypt(crypto.load_rsa_public_pem(first.encryption_key_pem), session_key)
    assert second.decrypt_session_key(wrapped) == session_key


def test_encryption_key_signature_signs_the_pem_digest(identity: Identity) -> None:
    digest = crypto.sha256(identity.encryption_key_pem.encode())
    crypto.VerifyingKey(identity.verifying_key_pem).verify_digest(bytes.fromhex(identity.encryption_key_signature), digest)


@pytest.mark.parametrize(
    "content",
    ["", "not json", json.dumps({"version": 1, "signing_key": "x", "encryption_key": "y"}), json.dumps({"version": 99})],
)
def test_a_corrupt_state_is_an_error_not_a_new_identity(tmp_path: Path, content: str) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(IdentityError, match="corrupt"):
        load_or_create(tmp_path, 2048)
    assert (tmp_path / STATE_FILE).read_text() == content


def test_a_secret_key_never_appears_in_the_corruption_message(tmp_path: Path) -> None:
    identity = Identity.generate(2048)
    state = json.loads(identity.to_state())
    state["encryption_key"] = state["encryption_key"][:-40]  # truncated PEM
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(IdentityError) as raised:
        load_or_create(tmp_path, 2048)
    secret_line = state["signing_key"].splitlines()[1]
    assert secret_line not in str(raised.value)


def test_restarted_worker_serves_the_same_verifying_key(tmp_path: Path) -> None:
    first = launch_worker(tmp_path)
    key = first.signup()["verifying_key"]
    assert first.stop() == 0
    second = launch_worker(tmp_path)
    try:
        assert second.signup()["verifying_key"] == key
    finally:
        second.stop()


def test_worker_with_a_corrupt_state_dir_fails_to_start_clearly(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 1, "signing_key": "garbage"}')
    done = run_cli("serve", "--state-dir", str(tmp_path), "--bind", "tcp://127.0.0.1:*")
    assert done.returncode == 2
    assert "is corrupt" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / STATE_FILE).read_text() == '{"version": 1, "signing_key": "garbage"}'


def test_an_unreadable_state_file_fails_to_start(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()  # a directory where the key file should be
    done = run_cli("serve", "--state-dir", str(tmp_path), "--bind", "tcp://127.0.0.1:*")
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_a_state_dir_that_takes_no_lock_is_served_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Some enclave file systems refuse flock (ENOLCK); this machine's do not, so the refusal is made here.
    import errno
    import fcntl

    from avalon_worker.identity import lock_state_dir

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="avalon_worker.identity"):
        assert lock_state_dir(tmp_path / "s") is None
    [record] = caplog.records
    assert record.getMessage() == (f"the state directory {tmp_path / 's'} takes no lock (No locks available): "
                                   "nothing stops a second serve on it; run one serve per state directory")
