"""File operations on directory descriptors that never follow a symlink.

Everything here works on an open directory (``dir_fd``) and a single name inside it, so no path
is looked up twice: what was checked is what is changed. Directories are opened with
``O_NOFOLLOW | O_DIRECTORY``; a symlink where a directory was expected fails the open instead of
being followed. Python 3.10 has no ``shutil.rmtree(dir_fd=)``, and ``shutil.move`` /
``shutil.copytree`` take paths, so the tree walks are written here.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import sys
from collections.abc import Callable

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
DIRECTORY_FLAGS = os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC
_COPY_CHUNK = 1 << 20
_MAX_OPEN = 32  # descriptors a tree walk holds at most
_MAX_COPY_DEPTH = 48  # a move across file systems copies trees this deep (2 descriptors a level)

# renameat2 system call numbers, for a glibc older than 2.28 (no renameat2 wrapper).
_SYS_RENAMEAT2 = {
    "x86_64": 316,
    "i386": 353,
    "i686": 353,
    "aarch64": 276,
    "riscv64": 276,
    "armv7l": 382,
    "armv6l": 382,
    "ppc64le": 357,
    "ppc64": 357,
    "s390x": 347,
}
_RENAME_NOREPLACE = 1  # Linux
_RENAME_EXCL = 4  # macOS renameatx_np


def open_directory(name: str, dir_fd: int) -> int:
    """``name`` inside ``dir_fd`` as a directory descriptor; a symlink there raises OSError (ELOOP)."""
    return os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_symlink_at(name: str, dir_fd: int) -> bool:
    info = lstat_at(name, dir_fd)
    return info is not None and stat.S_ISLNK(info.st_mode)


def count_entries(name: str, dir_fd: int) -> int:
    fd = open_directory(name, dir_fd)
    try:
        with os.scandir(fd) as scan:
            return sum(1 for _ in scan)
    finally:
        os.close(fd)


# -- removing a tree ---------------------------------------------------------------------------
def remove_tree(name: str, dir_fd: int, check_directory: Callable[[os.stat_result], None]) -> int:
    """Delete directory ``name`` in ``dir_fd`` and everything in it; returns the non-directories removed.

    Depth-first over an explicit stack (no recursion limit). A symlink is unlinked, never
    entered. At most ``_MAX_OPEN`` levels hold a descriptor (the kernel shares its descriptors
    with the user's code): a level whose descriptor was closed is reopened by name from the
    nearest open ancestor, and must still be the same directory (device, inode), else the walk
    stops. ``check_directory`` sees each directory before it is emptied and raises to stop (an
    excluded location mounted inside the tree).
    """
    removed = 0
    stack: list[_Level] = []
    try:
        _enter(stack, name, dir_fd, check_directory)
        while stack:
            level = stack[-1]
            current_fd = _opened(stack, len(stack) - 1, dir_fd)
            if level.subdirectories:
                _enter(stack, level.subdirectories.pop(), current_fd, check_directory)
                continue
            removed += _unlink_all(current_fd)
            stack.pop()
            os.close(current_fd)
            os.rmdir(level.name, dir_fd=_opened(stack, len(stack) - 1, dir_fd) if stack else dir_fd)
    finally:
        for level in stack:
            if level.fd is not None:
                os.close(level.fd)
    return removed


class _Level:
    """One directory on the way down: its name, descriptor (None when closed) and identity."""

    __slots__ = ("name", "fd", "identity", "subdirectories")

    def __init__(self, name: str, fd: int | None, identity: tuple[int, int], subdirectories: list[str]):
        self.name, self.fd, self.identity, self.subdirectories = name, fd, identity, subdirectories


def _enter(
    stack: list[_Level], name: str, dir_fd: int, check_directory: Callable[[os.stat_result], None]
) -> None:
    fd = open_directory(name, dir_fd)
    info = os.fstat(fd)
    stack.append(_Level(name, fd, (info.st_dev, info.st_ino), []))
    check_directory(info)
    with os.scandir(fd) as scan:
        stack[-1].subdirectories.extend(entry.name for entry in scan if entry.is_dir(follow_symlinks=False))
    _close_shallow_levels(stack)


def _close_shallow_levels(stack: list[_Level]) -> None:
    """Keep descriptors for the deepest ``_MAX_OPEN`` levels only."""
    open_levels = [level for level in stack if level.fd is not None]
    for level in open_levels[: max(0, len(open_levels) - _MAX_OPEN)]:
        os.close(level.fd)  # type: ignore[arg-type]
        level.fd = None


def _opened(stack: list[_Level], index: int, base_fd: int) -> int:
    """The descriptor of ``stack[index]``, reopened by name from the nearest open ancestor if closed."""
    if stack[index].fd is not None:
        return stack[index].fd  # type: ignore[return-value]
    start = index
    while start > 0 and stack[start - 1].fd is None:
        start -= 1
    fd = stack[start - 1].fd if start > 0 else base_fd
    passing: int | None = None  # a level on the way down that stays closed (outside the window)
    for position in range(start, index + 1):
        level = stack[position]
        child = open_directory(level.name, fd)  # type: ignore[arg-type]
        if passing is not None:
            os.close(passing)
            passing = None
        info = os.fstat(child)
        if (info.st_dev, info.st_ino) != level.identity:
            os.close(child)
            raise OSError(errno.ESTALE, "the tree was changed while it was being deleted", level.name)
        if index - position < _MAX_OPEN:
            level.fd = child
        else:
            passing = child
        fd = child
    _close_shallow_levels(stack)
    return stack[index].fd  # type: ignore[return-value]


def _unlink_all(dir_fd: int) -> int:
    """Unlink every non-directory in ``dir_fd`` (a directory that appeared meanwhile fails the rmdir)."""
    removed = 0
    with os.scandir(dir_fd) as scan:
        names = [entry.name for entry in scan if not entry.is_dir(follow_symlinks=False)]
    for name in names:
        os.unlink(name, dir_fd=dir_fd)
        removed += 1
    return removed


# -- renaming without replacing ----------------------------------------------------------------
def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename, failing with FileExistsError if ``dst`` exists, atomically where the OS allows.

    Linux: ``renameat2(RENAME_NOREPLACE)``; macOS: ``renameatx_np(RENAME_EXCL)``. Where neither
    works (an old kernel, a file system without the flag), a non-directory is hard-linked
    (``link`` fails if the name exists) then its old name unlinked; a directory falls back to
    check-then-rename, the one residual window (documented in the README).
    """
    native = _native_noreplace()
    if native is not None:
        try:
            native(src_fd, src, dst_fd, dst)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    info = os.stat(src, dir_fd=src_fd, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links here: fall through to check-then-rename
        else:
            os.unlink(src, dir_fd=src_fd)
            return
    if lstat_at(dst, dst_fd) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


@functools.cache
def _native_noreplace() -> Callable[[int, str, int, str], None] | None:
    """The platform's atomic no-replace rename through ctypes, or None. Loaded on first use."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux"):
        flag = _RENAME_NOREPLACE
        function = getattr(libc, "renameat2", None)
        if function is None:
            import platform

            number = _SYS_RENAMEAT2.get(platform.machine())
            if number is None:
                return None
            syscall = libc.syscall
            syscall.restype = ctypes.c_long

            def function(*args: object) -> int:
                return syscall(ctypes.c_long(number), *args)
    elif sys.platform == "darwin":
        flag = _RENAME_EXCL
        function = getattr(libc, "renameatx_np", None)
    else:
        return None
    if function is None:
        return None

    def rename(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
        result = function(
            ctypes.c_int(src_fd),
            ctypes.c_char_p(os.fsencode(src)),
            ctypes.c_int(dst_fd),
            ctypes.c_char_p(os.fsencode(dst)),
            ctypes.c_uint(flag),
        )
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), dst)

    return rename


# -- copying across file systems (a move that rename cannot do) --------------------------------
def copy_entry(
    src_fd: int, src: str, dst_fd: int, dst: str, check: Callable[[os.stat_result], None], depth: int = 0
) -> None:
    """Copy ``src`` (a file, symlink or directory tree) to the new name ``dst``, never following links.

    ``dst`` must not exist (created exclusively). Permissions are copied; FIFOs, sockets and
    devices are refused (OSError) rather than opened. ``check`` sees every entry first and raises
    to stop (a hard link to, or a mount of, an excluded location must not be copied out).
    """
    info = os.stat(src, dir_fd=src_fd, follow_symlinks=False)
    check(info)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(src, dir_fd=src_fd), dst, dir_fd=dst_fd)
    elif stat.S_ISREG(info.st_mode):
        _copy_file(src_fd, src, dst_fd, dst, mode)
    elif stat.S_ISDIR(info.st_mode):
        if depth >= _MAX_COPY_DEPTH:
            raise OSError(
                errno.E2BIG,
                f"the tree is more than {_MAX_COPY_DEPTH} levels deep to copy onto another file system; "
                "nothing was moved: move it with run_command (mv)",
                src,
            )
        os.mkdir(dst, 0o700, dir_fd=dst_fd)
        from_fd, to_fd = open_directory(src, src_fd), open_directory(dst, dst_fd)
        try:
            with os.scandir(from_fd) as scan:
                names = [entry.name for entry in scan]
            for name in names:
                copy_entry(from_fd, name, to_fd, name, check, depth + 1)
            os.fchmod(to_fd, mode)
        finally:
            os.close(from_fd)
            os.close(to_fd)
    else:
        raise OSError(errno.EPERM, "not a regular file, directory or symlink (a device, FIFO or socket)", src)


def _copy_file(src_fd: int, src: str, dst_fd: int, dst: str, mode: int) -> None:
    reader = os.open(src, os.O_RDONLY | NOFOLLOW | CLOEXEC, dir_fd=src_fd)
    try:
        writer = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600, dir_fd=dst_fd)
        try:
            while chunk := os.read(reader, _COPY_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(writer, view) :]
            os.fchmod(writer, mode)
            os.fsync(writer)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
