"""Runtime files: how ``ipymcp connect`` and ``ipymcp list`` find the kernels that opted in.

One JSON file per kernel, ``<jupyter_runtime_dir()>/ipymcp/kernel-<kernel id>.json``, mode 0600 in
a 0700 directory (it holds the bearer token). Written when the server is ready, removed when it
stops.

``ipymcp connect`` sends the agent's code, and the file's token, to the URL a runtime file names, so
``list_kernels`` uses a file only if the user's own kernel can have written it (``SkippedFile``
says why another was not):

* the directory is the user's and closed to others (no group/other bits, as ``write_private_json``
  leaves it), so nobody else can plant or swap files in it;
* the file is a regular file (not a symlink, not a FIFO), the user's, closed to others;
* its URL is ``http://`` to a loopback IP address, as a kernel writes it;
* its pid is a live process of the user's that listens on that address and port. With /proc
  (Linux) this is checked from the process's own socket table and file descriptors, which also
  means something for root (for whom every pid "belongs to the user"): pid 1, or the user's real
  kernel named beside an attacker's port, does not hold the socket. Without /proc (macOS) it is
  "a live process this user may signal".
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import stat
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ipymcp.discovery")

# A kernel writes a few hundred bytes; a huge "runtime file" is not one (and must not be read whole).
MAX_RUNTIME_FILE_BYTES = 64 * 1024
_TCP_LISTEN = "0A"  # the state column of /proc/<pid>/net/tcp for a listening socket
# Mode bits a trusted file or directory must not have: ipymcp's own (tokens inside) are closed to
# others; another program's must at least be writable by nobody else.
PRIVATE_BITS = 0o077
WRITE_BITS = 0o022


def runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / "ipymcp"


def runtime_file(kernel_id: str) -> Path:
    return runtime_dir() / f"kernel-{kernel_id}.json"


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, in a directory only the owner can enter; the file
    never exists with looser permissions. Refuses (PermissionError) a directory another user owns:
    its owner could read the token or replace the file."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = os.stat(directory).st_uid
    if owner != os.geteuid():
        raise PermissionError(
            f"{directory} is owned by uid {owner}, not by you (uid {os.geteuid()}): ipymcp does not write its "
            "token there. Remove that directory, or set JUPYTER_RUNTIME_DIR to a directory of your own."
        )
    os.chmod(directory, 0o700)
    # A fresh, unpredictable name opened with O_EXCL | O_NOFOLLOW: never writes through a symlink
    # or into a file someone else created.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- which runtime files to trust -------------------------------------------------------------


@dataclass(frozen=True)
class SkippedFile:
    """A runtime file (or the whole directory) ``list_kernels`` did not use, and why."""

    path: Path
    reason: str
    # A genuine file whose kernel is no longer running (it crashed or was killed): not a warning.
    stale: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class UntrustedFile(Exception):
    """Why a file is not one the user's own process wrote (the message is the reason)."""

    def __init__(self, reason: str, stale: bool = False):
        super().__init__(reason)
        self.stale = stale


def read_private_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` if only the user can have written it and only the user can read
    it (ipymcp's own files, which hold tokens): a regular file (no symlink), the user's, no access
    for others, in a directory that is the user's and closed to others. Raises ``UntrustedFile``
    saying why not (``FileNotFoundError`` if it is missing)."""
    _check_directory(path.parent)
    return _read_private_object(path)


def read_users_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` if only the user can have written it (files other programs of
    the user write, such as a Jupyter server's ``jpserver-*.json``): a regular file (no symlink),
    the user's, writable by nobody else, in a directory that is the user's and writable by nobody
    else. Raises ``UntrustedFile`` saying why not (``FileNotFoundError`` if it is missing)."""
    _check_directory(path.parent, WRITE_BITS)
    return _read_private_object(path, WRITE_BITS)


_warned: set[tuple[str, str]] = set()


def list_kernels(
    directory: Path | None = None, *, skipped: list[SkippedFile] | None = None, warn: bool = True
) -> list[dict[str, Any]]:
    """Every trusted runtime file whose kernel is alive, newest first (see the module docstring).

    Files passed over are appended to ``skipped``; with ``warn``, each untrusted one is logged as
    a warning once per process (``ipymcp connect`` lists kernels every few seconds).
    """
    directory = directory or runtime_dir()
    found: list[dict[str, Any]] = []
    passed_over: list[SkippedFile] = []
    sockets = _ListeningSockets()
    try:
        _check_directory(directory)
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    except UntrustedFile as exc:
        passed_over.append(SkippedFile(directory, f"the directory is not trusted: {exc}"))
        names = []
    for name in names:
        if not (name.startswith("kernel-") and name.endswith(".json")):
            continue
        path = directory / name
        try:
            info = _read_trusted(path, sockets)
        except UntrustedFile as exc:
            passed_over.append(SkippedFile(path, str(exc), exc.stale))
            continue
        info["runtime_file"] = str(path)
        found.append(info)
    found.sort(key=lambda i: str(i.get("started", "")), reverse=True)
    if skipped is not None:
        skipped.extend(passed_over)
    if warn:
        _warn_once(passed_over)
    return found


def _warn_once(passed_over: list[SkippedFile]) -> None:
    for item in passed_over:
        key = (str(item.path), item.reason)
        if key in _warned:
            continue
        _warned.add(key)
        if item.stale:
            log.debug("ignored %s", item)
        else:
            log.warning("skipped %s", item)


def _check_directory(directory: Path, forbidden: int = PRIVATE_BITS) -> None:
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise  # no directory yet: no kernels, nothing to warn about
    except OSError as exc:
        raise UntrustedFile(f"it cannot be read ({exc.strerror})") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedFile("it is not a directory")
    _check_owner_and_mode(info, forbidden, "0700", "chmod 700")


def _check_owner_and_mode(info: os.stat_result, forbidden: int, expected: str, fix: str) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise UntrustedFile(f"owned by uid {info.st_uid}, not by you (uid {me}); another user could have written it")
    mode = stat.S_IMODE(info.st_mode)
    if mode & forbidden == 0:
        return
    if forbidden == PRIVATE_BITS:
        raise UntrustedFile(
            f"mode {mode:04o} lets other users read or change it (ipymcp makes it {expected}; `{fix}` it if you trust it)"
        )
    raise UntrustedFile(f"mode {mode:04o} lets other users change it (`chmod go-w` it if you trust it)")


def _read_trusted(path: Path, sockets: _ListeningSockets) -> dict[str, Any]:
    data = _read_private_object(path)
    url, token, pid, kernel_id = (data.get(key) for key in ("url", "token", "pid", "kernel_id"))
    if not (isinstance(url, str) and isinstance(token, str) and token and type(pid) is int):
        raise UntrustedFile("it lacks the url, token and pid a kernel writes")
    expected_id = path.name.removeprefix("kernel-").removesuffix(".json")
    if kernel_id != expected_id:
        raise UntrustedFile(
            f"it names kernel {kernel_id!r}, but a kernel writes only its own file (kernel-{kernel_id}.json)"
        )
    host, port = _loopback_address(url)
    _check_server_process(pid, host, port, sockets)
    return data


def _read_private_object(path: Path, forbidden: int = PRIVATE_BITS) -> dict[str, Any]:
    try:
        # O_NOFOLLOW: a symlink planted under a kernel's name is refused; O_NONBLOCK: a FIFO cannot hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UntrustedFile(
            "it is a symbolic link" if os.path.islink(path) else f"it cannot be read ({exc.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFile("it is not a regular file")
        _check_owner_and_mode(info, forbidden, "0600", "chmod 600")
        raw = f.read(MAX_RUNTIME_FILE_BYTES + 1)
    if len(raw) > MAX_RUNTIME_FILE_BYTES:
        raise UntrustedFile(f"it is larger than {MAX_RUNTIME_FILE_BYTES} bytes, which no kernel writes")
    try:
        data = json.loads(raw)
    except ValueError:
        raise UntrustedFile("it is not valid JSON") from None
    if not isinstance(data, dict):
        raise UntrustedFile("it is not a JSON object")
    return data


def _loopback_address(url: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """The (IP, port) of ``url`` if it is plain http:// to a loopback IP; the token goes nowhere else."""
    problem = UntrustedFile(
        f"its URL {url!r} is not a loopback http:// URL (like http://127.0.0.1:PORT/mcp, as kernels write)"
    )
    try:
        parts = urllib.parse.urlsplit(url)
        host = ipaddress.ip_address(parts.hostname or "")
        port = parts.port
    except ValueError:
        raise problem from None
    if parts.scheme != "http" or not host.is_loopback or port is None or parts.username or parts.password:
        raise problem
    return host, port


def _check_server_process(
    pid: int, host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, sockets: _ListeningSockets
) -> None:
    if pid <= 0:
        raise UntrustedFile(f"its pid {pid} is not a process id")
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise UntrustedFile(f"its kernel (pid {pid}) is no longer running", stale=True) from None
        except PermissionError:
            raise UntrustedFile(f"process {pid} is not yours") from None
        return
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        raise UntrustedFile(f"its kernel (pid {pid}) is no longer running", stale=True) from None
    me = os.geteuid()
    if owner != me:
        raise UntrustedFile(f"process {pid} belongs to uid {owner}, not to you (uid {me})")
    if not _holds_any(pid, sockets.inodes(pid, host, port)):
        raise UntrustedFile(f"process {pid} does not listen on {host}:{port}, the address the file names")


class _ListeningSockets:
    """The listening TCP sockets of each network namespace, read once per scan: /proc/<pid>/net/tcp
    lists every socket of the namespace (~15 ms with a few hundred connections)."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]]] = {}

    def inodes(self, pid: int, host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> set[str]:
        """The fd link names (``socket:[inode]``) of sockets listening on host:port, or on every
        interface at that port, in the network namespace of ``pid``."""
        table = "tcp6" if host.version == 6 else "tcp"
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            namespace = f"of pid {pid}"
        key = (namespace, table)
        if key not in self._tables:
            self._tables[key] = _read_listening(pid, table)
        return {
            f"socket:[{inode}]"
            for address, listen_port, inode in self._tables[key]
            if listen_port == port and (address == host or address.is_unspecified)
        }


def _read_listening(pid: int, table: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]]:
    try:
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return []
    listening = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        address_hex, port_hex = fields[1].split(":")
        listening.append((_proc_address(address_hex), int(port_hex, 16), fields[9]))
    return listening


def _holds_any(pid: int, socket_links: set[str]) -> bool:
    """Whether one of ``pid``'s own file descriptors is one of these sockets."""
    if not socket_links:
        return False
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in socket_links:
                return True
        except OSError:
            continue
    return False


def _proc_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} print each 32-bit word of the address in host byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)
