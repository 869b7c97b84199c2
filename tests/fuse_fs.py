"""A small FUSE file system in plain Python, for stand-ins of kernel file interfaces in tests.

Kernel interfaces such as configfs and sysfs are not ordinary files: a directory is populated
the moment `mkdir` returns, a read makes its content when it happens, a write of the wrong size
fails with the kernel's errno. A directory tree on a normal file system cannot behave like that
without changing the code that uses it, so the stand-ins serve their tree through FUSE: the
code under test makes its real system calls on a real mount, and the kernel hands each one to
the `Dir`/`File` objects below.

Only the FUSE protocol (include/uapi/linux/fuse.h, protocol 7.31 replies) is spoken here, over
/dev/fuse with mount(2): no libfuse, no fusermount. Mounting needs the right to mount (root or
CAP_SYS_ADMIN); `fuse_unavailable()` says why it cannot be had.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Opcodes (fuse.h).
LOOKUP, FORGET, GETATTR, SETATTR = 1, 2, 3, 4
MKDIR, UNLINK, RMDIR = 9, 10, 11
OPEN, READ, WRITE, STATFS, RELEASE = 14, 15, 16, 17, 18
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = 25, 26, 27, 28, 29
ACCESS, CREATE, INTERRUPT, DESTROY, BATCH_FORGET = 34, 35, 36, 38, 42
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # ino size blocks a/m/ctime, nsecs, mode nlink uid gid rdev blksize flags
FOPEN_DIRECT_IO = 1
ROOT_ID = 1
MAX_WRITE = 128 * 1024


class Handle:
    """An open file: what `File.open` returns. Raise OSError(errno) to fail an operation."""

    def read(self, offset: int, size: int) -> bytes:
        raise OSError(errno.EACCES, "not readable")

    def write(self, offset: int, data: bytes) -> int:
        raise OSError(errno.EACCES, "not writable")

    def flush(self) -> None:
        """close(2) of one descriptor of this open file (synchronous, unlike release)."""


class Node:
    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.ino = 0


class File(Node):
    """A file whose content is made by `open`: a new `Handle` per open."""

    def __init__(self, opener: Callable[[int], Handle], mode: int = 0o644) -> None:
        super().__init__(stat.S_IFREG | mode)
        self.opener = opener


class Dir(Node):
    """A directory. `on_mkdir(name)` makes a child directory (default: refused, as in sysfs);
    `on_rmdir(name, child)` is called before a child directory goes."""

    def __init__(
        self,
        children: dict[str, Node] | None = None,
        *,
        on_mkdir: Callable[[str], Dir] | None = None,
        on_rmdir: Callable[[str, Dir], None] | None = None,
        mode: int = 0o755,
    ) -> None:
        super().__init__(stat.S_IFDIR | mode)
        self.children: dict[str, Node] = dict(children or {})
        self.on_mkdir = on_mkdir
        self.on_rmdir = on_rmdir


def fuse_unavailable() -> str | None:
    """Why a FUSE file system cannot be mounted here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if os.geteuid() != 0:
        return "mounting a FUSE file system without fusermount needs root (or CAP_SYS_ADMIN)"
    return None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2


class FuseMount:
    """Serve `root` at `mountpoint` (an existing empty directory) from a thread until `stop()`."""

    def __init__(self, mountpoint: Path, root: Dir, *, name: str = "sim") -> None:
        self.mountpoint = Path(mountpoint)
        self.root = root
        self.name = name
        self._nodes: dict[int, Node] = {}
        self._handles: dict[int, Handle] = {}
        self._next_ino = ROOT_ID
        self._next_fh = 1
        self._fd = -1
        self._thread: threading.Thread | None = None
        self._mounted = False
        self.register(root)
        self.errors: list[BaseException] = []  # anything a handler raised that was not an OSError

    def register(self, node: Node) -> Node:
        if not node.ino:
            node.ino = self._next_ino
            self._next_ino += 1
        self._nodes[node.ino] = node
        if isinstance(node, Dir):
            for child in node.children.values():
                self.register(child)
        return node

    def __enter__(self) -> FuseMount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reason = fuse_unavailable()
        if reason is not None:
            raise OSError(errno.EPERM, reason)
        self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        options = f"fd={self._fd},rootmode=40755,user_id=0,group_id=0,allow_other".encode()
        if _libc.mount(self.name.encode(), str(self.mountpoint).encode(), f"fuse.{self.name}".encode(), 0, options):
            code = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(code, f"mount {self.mountpoint}: {os.strerror(code)}")
        self._mounted = True
        self._thread = threading.Thread(target=self._serve, name=f"fuse-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._mounted:
            _libc.umount2(str(self.mountpoint).encode(), MNT_DETACH)
            self._mounted = False
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the protocol ------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                request = os.read(self._fd, MAX_WRITE + 4096)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue  # an interrupted request, retried by the kernel
                return  # ENODEV: unmounted
            if not request:
                return
            length, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(request)
            body = request[IN_HEADER.size : length]
            if opcode in NO_REPLY:
                continue
            try:
                reply = self._dispatch(opcode, nodeid, body)
                error = 0
            except OSError as exc:
                reply, error = b"", -(exc.errno or errno.EIO)
            except Exception as exc:  # a bug in a stand-in: fail the call, keep the mount alive
                self.errors.append(exc)
                reply, error = b"", -errno.EIO
            try:
                os.write(self._fd, OUT_HEADER.pack(OUT_HEADER.size + len(reply), error, unique) + reply)
            except OSError:
                pass  # the request was interrupted and is gone
            if opcode == DESTROY:
                return

    def _node(self, nodeid: int) -> Node:
        node = self._nodes.get(nodeid)
        if node is None:
            raise OSError(errno.ENOENT, "stale node")
        return node

    def _dir(self, nodeid: int) -> Dir:
        node = self._node(nodeid)
        if not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, "not a directory")
        return node

    def _attr(self, node: Node) -> bytes:
        now = int(time.time())
        nlink = 2 if isinstance(node, Dir) else 1
        return ATTR.pack(node.ino, 0, 0, now, now, now, 0, 0, 0, node.mode, nlink, 0, 0, 0, 4096, 0)

    def _entry(self, node: Node) -> bytes:
        # No caching of names or attributes: every lookup asks, as a kernel interface would answer.
        return struct.pack("<QQQQII", node.ino, 0, 0, 0, 0, 0) + self._attr(node)

    def _attr_out(self, node: Node) -> bytes:
        return struct.pack("<QII", 0, 0, 0) + self._attr(node)

    @staticmethod
    def _name(body: bytes, offset: int = 0) -> str:
        return body[offset:].split(b"\0", 1)[0].decode()

    def _dispatch(self, opcode: int, nodeid: int, body: bytes) -> bytes:
        handler = self._handlers().get(opcode)
        if handler is None:
            raise OSError(errno.ENOSYS, "not implemented")
        return handler(nodeid, body)

    def _handlers(self) -> dict[int, Callable[[int, bytes], bytes]]:
        return {
            INIT: lambda _, body: self._init(body),
            LOOKUP: self._lookup,
            GETATTR: lambda nodeid, _: self._attr_out(self._node(nodeid)),
            SETATTR: lambda nodeid, _: self._attr_out(self._node(nodeid)),  # O_TRUNC: nothing to cut
            ACCESS: lambda nodeid, _: b"",
            MKDIR: lambda nodeid, body: self._mkdir(self._dir(nodeid), self._name(body, 8)),
            RMDIR: lambda nodeid, body: self._rmdir(self._dir(nodeid), self._name(body)),
            UNLINK: self._refuse_files,
            CREATE: self._refuse_files,
            OPEN: lambda nodeid, body: self._open(self._node(nodeid), struct.unpack_from("<I", body)[0]),
            READ: self._read,
            WRITE: self._write,
            FLUSH: self._flush,
            RELEASE: self._release,
            OPENDIR: self._opendir,
            RELEASEDIR: lambda nodeid, _: b"",
            READDIR: self._readdir,
            STATFS: lambda nodeid, _: bytes(80),
            DESTROY: lambda nodeid, _: b"",
        }

    @staticmethod
    def _init(body: bytes) -> bytes:
        _major, minor = struct.unpack_from("<II", body)
        # fuse_init_out of protocol 7.31 (64 bytes); no optional features asked for.
        return struct.pack("<IIIIHHIIHHI", 7, min(minor, 31), 0, 0, 16, 12, MAX_WRITE, 1, 32, 0, 0) + bytes(28)

    def _lookup(self, nodeid: int, body: bytes) -> bytes:
        child = self._dir(nodeid).children.get(self._name(body))
        if child is None:
            raise OSError(errno.ENOENT, "no such entry")
        return self._entry(child)

    @staticmethod
    def _refuse_files(nodeid: int, body: bytes) -> bytes:
        raise OSError(errno.EPERM, "files cannot be created or removed here")

    def _read(self, nodeid: int, body: bytes) -> bytes:
        fh, offset, size = struct.unpack_from("<QQI", body)
        return self._handle(fh).read(offset, size)

    def _write(self, nodeid: int, body: bytes) -> bytes:
        fh, offset, size = struct.unpack_from("<QQI", body)
        return struct.pack("<II", self._handle(fh).write(offset, body[40 : 40 + size]), 0)

    def _flush(self, nodeid: int, body: bytes) -> bytes:
        self._handle(struct.unpack_from("<Q", body)[0]).flush()
        return b""

    def _opendir(self, nodeid: int, body: bytes) -> bytes:
        self._dir(nodeid)
        return struct.pack("<QII", 0, 0, 0)

    def _release(self, nodeid: int, body: bytes) -> bytes:
        self._handles.pop(struct.unpack_from("<Q", body)[0], None)
        return b""

    def _mkdir(self, parent: Dir, name: str) -> bytes:
        if name in parent.children:
            raise OSError(errno.EEXIST, "exists")
        if parent.on_mkdir is None:
            raise OSError(errno.EPERM, "no directories can be made here")
        child = parent.on_mkdir(name)
        parent.children[name] = self.register(child)
        return self._entry(child)

    def _rmdir(self, parent: Dir, name: str) -> bytes:
        child = parent.children.get(name)
        if child is None:
            raise OSError(errno.ENOENT, "no such entry")
        if not isinstance(child, Dir):
            raise OSError(errno.ENOTDIR, "not a directory")
        if parent.on_rmdir is None:
            raise OSError(errno.EPERM, "this directory cannot be removed")
        parent.on_rmdir(name, child)
        del parent.children[name]
        return b""

    def _open(self, node: Node, flags: int) -> bytes:
        if not isinstance(node, File):
            raise OSError(errno.EISDIR, "is a directory")
        accmode = flags & os.O_ACCMODE
        if accmode in (os.O_RDONLY, os.O_RDWR) and not node.mode & stat.S_IRUSR:
            raise OSError(errno.EACCES, "write-only")
        if accmode in (os.O_WRONLY, os.O_RDWR) and not node.mode & stat.S_IWUSR:
            raise OSError(errno.EACCES, "read-only")
        handle = node.opener(flags)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        # Direct I/O: every read and write reaches the handle, none is served from a cache.
        return struct.pack("<QII", fh, FOPEN_DIRECT_IO, 0)

    def _handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "unknown handle")
        return handle

    def _readdir(self, nodeid: int, body: bytes) -> bytes:
        _fh, offset, size = struct.unpack_from("<QQI", body)
        directory = self._dir(nodeid)
        entries = [(".", directory), ("..", directory), *directory.children.items()]
        out = bytearray()
        for index in range(offset, len(entries)):
            name, node = entries[index]
            raw = name.encode()
            record = struct.pack("<QQII", node.ino, index + 1, len(raw), stat.S_IFMT(node.mode) >> 12) + raw
            record += bytes(-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)
