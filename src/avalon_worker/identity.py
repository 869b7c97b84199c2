"""The worker's identity: its signing and encryption keys, kept in a state directory.

Created once, loaded on every later start. Private keys never leave this object except into
the state file (mode 0600, in a 0700 directory, written atomically). A state directory that
exists but cannot be read is an error, never a reason to make a new identity over an old one.
`disable_core_dumps` keeps the keys out of core files and away from other processes' ptrace.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import resource
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto, defaults
from .crypto import SigningKey
from .errors import SetupError

logger = logging.getLogger(__name__)

STATE_FILE = "identity.json"
STATE_VERSION = 1


class IdentityError(SetupError):
    """The state directory holds no usable identity and must not be overwritten."""


@dataclass(frozen=True)
class Identity:
    """A worker's keys and the public values derived from them."""

    signing_key: SigningKey
    encryption_key: rsa.RSAPrivateKey
    encryption_key_pem: str
    encryption_key_signature: str

    @classmethod
    def from_keys(cls, signing_key: SigningKey, encryption_key: rsa.RSAPrivateKey) -> Identity:
        pem = crypto.public_pem(encryption_key)
        # PROTOCOL §6: the digest of the PEM string is signed directly, DER, hex.
        signature = signing_key.sign_digest(crypto.sha256(pem.encode("utf-8"))).hex()
        return cls(signing_key, encryption_key, pem, signature)

    @classmethod
    def generate(cls, rsa_bits: int = defaults.RSA_BITS) -> Identity:
        if rsa_bits not in defaults.RSA_BITS_ALLOWED:
            raise ValueError(f"RSA key size must be one of {defaults.RSA_BITS_ALLOWED}")
        return cls.from_keys(SigningKey.generate(), crypto.generate_rsa_key(rsa_bits))

    @property
    def verifying_key_pem(self) -> str:
        return self.signing_key.verifying_key_pem

    @property
    def worker_id(self) -> str:
        """Hex SHA-256 of the verifying key PEM: a stable name for this identity."""
        return crypto.sha256(self.verifying_key_pem.encode("utf-8")).hex()

    @property
    def rsa_bits(self) -> int:
        return self.encryption_key.key_size

    def decrypt_session_key(self, encrypted: bytes) -> bytes:
        return crypto.rsa_oaep_decrypt(self.encryption_key, encrypted)

    def sign_digest(self, digest: bytes) -> bytes:
        return self.signing_key.sign_digest(digest)

    def to_state(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "signing_key": self.signing_key.to_pem(),
                "encryption_key": crypto.private_pem(self.encryption_key),
            },
            indent=1,
        )

    @classmethod
    def from_state(cls, text: str, source: str) -> Identity:
        try:
            state = json.loads(text)
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {state.get('version')!r}")
            signing_key = SigningKey.from_pem(state["signing_key"])
            encryption_key = serialization.load_pem_private_key(
                state["encryption_key"].encode("ascii"), password=None
            )
            if not isinstance(encryption_key, rsa.RSAPrivateKey):
                raise ValueError("encryption key is not RSA")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
            raise IdentityError(
                f"{source} is corrupt ({exc.__class__.__name__}: {exc}); restore it from a backup, "
                "or point --state-dir at an empty directory to create a new identity"
            ) from None
        return cls.from_keys(signing_key, encryption_key)


def _write_new(path: Path, text: str) -> None:
    """Write `path` completely or not at all, and never over an existing file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".identity-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the identity first
        except FileExistsError:
            raise
        except OSError:
            # Some file systems (Gramine's encrypted mounts among them) have no hard links.
            if path.exists():
                raise FileExistsError(str(path)) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file for this process and its children, and no ptrace by same-user processes.

    RLIMIT_CORE 0 stops core files; PR_SET_DUMPABLE 0 also stops the kernel's core pipe
    (systemd-coredump, apport), which ignores that limit, and makes /proc/<pid>/mem root's.
    Gramine's library OS has no PR_SET_DUMPABLE (ENOSYS); there the host never sees the
    process's memory under SGX, and RLIMIT_CORE still holds.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 and ctypes.get_errno() != errno.ENOSYS:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _private_directory(folder: Path) -> None:
    """Make `folder` and any missing parents with mode 0700 whatever the umask; tighten an
    existing `folder` that others could read or enter."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                where = f"the state directory {path} is" if path == folder else \
                    f"the state directory {folder} is inside {path}, which is"
                raise IdentityError(f"{where} a file, not a directory",
                                    hint="give a directory (it is created if it does not exist)")
            break
        missing.append(path)
    try:
        for path in reversed(missing):
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, which may be anything
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            os.chmod(folder, 0o700)
    except OSError as exc:
        raise IdentityError(
            f"cannot make state directory {folder} private (mode 0700): {exc.strerror}",
            hint="create it yourself, owned by the worker's user, with chmod 700",
        ) from None


LOCK_FILE = "serve.lock"


def lock_state_dir(state_dir: str | Path) -> int | None:
    """Take the state directory for this process: one `serve` per identity. Returns the lock's
    descriptor, held (and kept by the processes it forks) until the process ends; raises
    `IdentityError` naming the process that holds it. A file system without locks (some
    enclave mounts) is served unlocked: None."""
    import fcntl

    folder = Path(state_dir)
    _private_directory(folder)
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise IdentityError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise IdentityError(f"the state directory {folder} is in use by process {holder} (another avalon-worker "
                            "serve): one worker per identity",
                            hint="stop that one first, or give this one a --state-dir of its own") from None
    except OSError as exc:
        os.close(fd)
        logger.warning("the state directory %s takes no lock (%s): nothing stops a second serve on it; "
                       "run one serve per state directory", folder, exc.strerror or exc)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def load_or_create(state_dir: str | Path, rsa_bits: int = defaults.RSA_BITS) -> tuple[Identity, bool]:
    """The identity kept in `state_dir`, created there if the directory holds none.

    The directory (and any parent it creates) is made mode 0700; an existing one that others
    could read is tightened to 0700. Returns (identity, created). Raises `IdentityError` when
    the state cannot be read.
    """
    folder = Path(state_dir)
    _private_directory(folder)
    path = folder / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeError) as exc:
        raise IdentityError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text is not None:
        return Identity.from_state(text, str(path)), False
    identity = Identity.generate(rsa_bits)
    try:
        _write_new(path, identity.to_state())
    except FileExistsError:
        return load_or_create(folder, rsa_bits)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror}") from None
    return identity, True
