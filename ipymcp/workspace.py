"""The agent's workspace: one root directory, every path resolved inside it, and the file operations.

Resolution walks the path one component at a time and follows symlinks itself (not
``os.path.realpath``), so a symlink loop is an error instead of a silently wrong path, and a
link that leads out of the root is caught whatever it points through. That gives the *real*
path a call is about, and it is checked (inside the root, not in an excluded location).

Then every operation is carried out on directory descriptors, never on that path: the root is
opened, and each component of the real path is opened inside the previous one with
``O_NOFOLLOW | O_DIRECTORY`` (``ipymcp._dirfd``). A symlink swapped in after the check fails that
open instead of being followed, so what was checked is what is read, listed, written, created,
moved or deleted. Writes go to a temporary file created ``O_EXCL`` in the target's directory,
fsynced, then renamed over the target; a no-overwrite rename is atomic (``renameat2``).

Names with newlines or control characters are never created, and are escaped where they are
shown. Locations that hold secrets or configuration (``c.IPyMCP.excluded_paths``) are refused
by every file tool and left out of listings, matched on the real path and on the identity
(device, inode) of what exists there, so a symlink, hard link or mount inside the root does not
reach them either.
"""

from __future__ import annotations

import base64
import datetime as _dt
import errno
import fnmatch
import json
import os
import secrets
import stat
import sys
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ._dirfd import (
    CLOEXEC,
    NOFOLLOW,
    copy_entry,
    count_entries,
    is_symlink_at,
    lstat_at,
    open_directory,
    remove_tree,
    rename_noreplace,
)

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_MAX_SYMLINK_HOPS = 40
_LINE_CHARS = 2_000  # a longer line is cut in read_file (minified JSON, base64 blobs)
_LINE_BYTES = 1 << 20  # never hold more than this of one line in memory
_WRITE_CHUNK = 1 << 20
_SNIFF_BYTES = 8192
_SCAN_LIMIT = 50_000  # entries a recursive listing looks at before it gives up
_SKIPPED_NAMES = {".ipynb_checkpoints", "__pycache__"}
_TEMP_SUFFIX = ".ipymcp-tmp"

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_BINARY_MAGIC = (
    (b"%PDF", "a PDF document", "e.g. pypdf"),
    (b"PK\x03\x04", "a ZIP archive (also .docx/.xlsx/.whl/.jar)", "zipfile, or openpyxl / pandas.read_excel"),
    (b"\x1f\x8b", "gzip-compressed data", "gzip.open"),
    (b"\x7fELF", "an ELF executable or library", "run_command with file / readelf"),
    (b"SQLite format 3\x00", "an SQLite database", "sqlite3"),
    (b"PAR1", "a Parquet file", "pandas.read_parquet"),
    (b"\x93NUMPY", "a NumPy .npy array", "numpy.load"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file", "h5py or pandas.read_hdf"),
    (b"BM", "a BMP image", "PIL.Image.open"),
    (b"II*\x00", "a TIFF image", "PIL.Image.open"),
    (b"MM\x00*", "a TIFF image", "PIL.Image.open"),
)


class WorkspaceError(Exception):
    """A refusal or failure written for the agent: shown as is."""


@dataclass
class Limits:
    read_max_bytes: int = 10_000_000
    read_page_large_files: bool = True
    read_max_chars: int = 60_000
    write_max_bytes: int = 10_000_000
    list_limit: int = 200

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        return cls(
            read_max_bytes=config.read_max_bytes,
            read_page_large_files=config.read_page_large_files,
            read_max_chars=config.read_max_chars,
            write_max_bytes=config.write_max_bytes,
            list_limit=config.list_files_limit,
        )


@dataclass
class FileView:
    """What read_file found: text (numbered lines or a description), or an image to return, and
    the facts about it (read_file's structured result: path, kind, size, the lines shown)."""

    text: str
    facts: dict[str, Any]
    image_b64: str | None = None
    image_mime: str | None = None


def workspace_root(root_dir: str, notebook_path: str | None, fallback: str) -> str:
    """``root_dir`` if configured; else the notebook's directory; else the kernel's cwd at load."""
    if root_dir:
        return os.path.abspath(os.path.join(fallback, os.path.expanduser(root_dir)))
    if notebook_path and os.path.isabs(notebook_path) and os.path.isdir(os.path.dirname(notebook_path)):
        return os.path.dirname(notebook_path)
    return fallback


# Secrets and configuration under the home directory; the Jupyter and IPython directories (where
# they really are) and the kernel environment's own config directories are added at run time.
HOME_EXCLUSIONS = (
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config",
    "~/.local",
    "~/.jupyter",
    "~/.ipython",
    "~/.docker",
    "~/.kube",
    "~/.netrc",
    "~/.git-credentials",
    "~/.gitconfig",
    "~/.pypirc",
    "~/.npmrc",
    "~/.yarnrc",
    "~/.condarc",
    "~/.pgpass",
    "~/.my.cnf",
    "~/.kaggle",
    "~/.huggingface",
    "~/.cache/huggingface/token",
    "~/.terraform.d",
    "~/.vault-token",
    "~/.password-store",
    "~/.cargo/credentials",
    "~/.cargo/credentials.toml",
    "~/.m2/settings.xml",
    "~/.mozilla",
    "~/.pki",
    "~/.Xauthority",
    "~/.bashrc",
    "~/.bash_profile",
    "~/.bash_login",
    "~/.profile",
    "~/.zshrc",
    "~/.zshenv",
    "~/.zprofile",
    "~/.bash_history",
    "~/.zsh_history",
    "~/.python_history",
    "~/Library/Keychains",
)


def default_excluded_paths() -> list[str]:
    """The default of ``c.IPyMCP.excluded_paths``: where this kernel keeps secrets and configuration."""
    found: list[str] = []
    try:
        from jupyter_core.paths import jupyter_config_dir, jupyter_data_dir, jupyter_runtime_dir

        found += [jupyter_runtime_dir(), jupyter_data_dir(), jupyter_config_dir()]
    except ImportError:
        pass
    try:
        from IPython.paths import get_ipython_dir

        found.append(get_ipython_dir())
    except ImportError:
        pass
    found += [os.path.join(sys.prefix, "etc", "jupyter"), os.path.join(sys.prefix, "etc", "ipython")]
    if os.environ.get("XDG_CONFIG_HOME"):
        found.append(os.environ["XDG_CONFIG_HOME"])
    found += HOME_EXCLUSIONS
    return list(dict.fromkeys(found))


class Exclusions:
    """Excluded locations, matched on real paths and on the (device, inode) of those that exist."""

    def __init__(self, entries: Iterable[str], root: str):
        self._paths: list[tuple[str, str]] = []  # (absolute or real path, the entry as configured)
        self._identities: dict[tuple[int, int], str] = {}
        real_parents: dict[str, str] = {}  # most entries share a parent (~): resolve it once
        for entry in entries:
            if not entry:
                continue
            absolute = os.path.abspath(os.path.join(root, os.path.expanduser(entry)))
            parent, name = os.path.split(absolute)
            if parent not in real_parents:
                real_parents[parent] = os.path.realpath(parent)
            real = os.path.join(real_parents[parent], name)
            try:
                info = os.lstat(real)
                if stat.S_ISLNK(info.st_mode):
                    real = os.path.realpath(real)
                    info = os.stat(real)
            except OSError:
                info = None
            for path in dict.fromkeys((absolute, real)):
                self._paths.append((path.rstrip(os.sep) or os.sep, entry))
            if info is not None:
                self._identities[(info.st_dev, info.st_ino)] = entry

    def match(self, real_path: str) -> str | None:
        """The entry ``real_path`` lies in (or is), if any."""
        for path, entry in self._paths:
            if real_path == path or real_path.startswith(path.rstrip(os.sep) + os.sep):
                return entry
        return None

    def within(self, real_path: str) -> str | None:
        """An entry lying under the directory ``real_path``: deleting or moving it would take that along."""
        prefix = real_path.rstrip(os.sep) + os.sep
        for path, entry in self._paths:
            if path.startswith(prefix):
                return entry
        return None

    def identity(self, info: os.stat_result) -> str | None:
        return self._identities.get((info.st_dev, info.st_ino))

    def under(self, directory: str) -> Exclusions:
        """The same exclusions, with only the paths below ``directory`` (a listing's base) to compare."""
        narrowed = Exclusions((), directory)
        prefix = directory.rstrip(os.sep) + os.sep
        narrowed._paths = [(path, entry) for path, entry in self._paths if path.startswith(prefix)]
        narrowed._identities = self._identities
        return narrowed


class _NotFound(WorkspaceError):
    """A directory on the way does not exist (callers that know what was meant rephrase it)."""


class Workspace:
    def __init__(
        self,
        root: str | os.PathLike[str],
        limits: Limits | None = None,
        excluded: Iterable[str] | None = None,
    ):
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise WorkspaceError(
                f"the workspace root {root} is not a directory; set c.IPyMCP.root_dir to an existing one"
            )
        self.root = real
        self.limits = limits or Limits()
        self.excluded = Exclusions(default_excluded_paths() if excluded is None else excluded, real)

    # -- paths -------------------------------------------------------------------------------
    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """The real absolute path of ``path`` (relative to the root), refused if it leaves the root.

        ``follow_final=False`` keeps a symlink at the end as itself (to delete or move the link).
        Also refused: a path in an excluded location (``c.IPyMCP.excluded_paths``).
        """
        if not isinstance(path, str) or not path.strip():
            raise WorkspaceError("empty path: use '.' for the workspace root")
        if "\x00" in path:
            raise WorkspaceError(f"{path!r} contains a NUL character")
        if path.startswith("~"):
            raise WorkspaceError(
                f"{path!r}: '~' is not expanded; give a path relative to the workspace root {self.root}"
            )
        start = path if os.path.isabs(path) else os.path.join(self.root, path)
        resolved, via_link = _walk(start, follow_final, path, self.root)
        if not self.contains(resolved):
            how = " through a symlink" if via_link else ""
            raise WorkspaceError(
                f"{path!r} resolves{how} to {resolved}, outside the workspace root {self.root}; file tools "
                f"only reach files under the root (relative paths start there; set c.IPyMCP.root_dir to change it)"
            )
        entry = self.excluded.match(resolved)
        if entry is not None:
            raise WorkspaceError(_excluded_message(path, entry))
        return resolved

    def contains(self, real_path: str) -> bool:
        return real_path == self.root or real_path.startswith(self.root.rstrip(os.sep) + os.sep)

    def relative(self, real_path: str) -> str:
        return "." if real_path == self.root else os.path.relpath(real_path, self.root)

    def shown(self, real_path: str) -> str:
        """The root-relative path as the agent is told it: escaped if it holds control characters."""
        return displayed_name(self.relative(real_path))

    # -- descriptors -------------------------------------------------------------------------
    @contextmanager
    def _descend(self, real: str, shown: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """The open parent directory of ``real`` and its last name, reached from the root without links.

        Each component is opened inside the previous one with O_NOFOLLOW: a symlink swapped in
        since ``resolve`` fails here instead of being followed. ``create`` makes missing
        directories on the way (refusing names with control characters). The root itself is
        ``(root_fd, ".")``.
        """
        parts = [] if real == self.root else self.relative(real).split(os.sep)
        fd = self._open_root()
        try:
            for depth, part in enumerate(parts[:-1], 1):
                child = self._open_step(fd, part, os.path.join(*parts[:depth]), shown, create)
                os.close(fd)
                fd = child
            yield fd, parts[-1] if parts else "."
        finally:
            os.close(fd)

    def _open_root(self) -> int:
        try:
            fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC)
        except OSError as exc:
            raise WorkspaceError(f"cannot open the workspace root {self.root}: {exc.strerror}") from None
        self._refuse_identity(fd, os.fstat(fd), ".")
        return fd

    def _open_step(self, dir_fd: int, name: str, walked: str, shown: str, create: bool) -> int:
        """Open directory ``name`` in ``dir_fd`` (``walked`` is its root-relative path), never through a link."""
        try:
            fd = open_directory(name, dir_fd)
        except FileNotFoundError:
            if not create:
                raise _NotFound(f"{shown} does not exist under the workspace root {self.root}") from None
            refuse_unsafe_name(name)
            try:
                os.mkdir(name, dir_fd=dir_fd)
            except FileExistsError:
                pass  # made meanwhile: open whatever is there now, under the same rules
            except OSError as exc:
                raise WorkspaceError(
                    f"cannot create directory {displayed_name(walked)}: {exc.strerror}"
                ) from None
            return self._open_step(dir_fd, name, walked, shown, create=False)
        except OSError as exc:
            raise self._open_failed(dir_fd, name, walked, exc) from None
        self._refuse_identity(fd, os.fstat(fd), walked)
        return fd

    def _open_failed(self, dir_fd: int, name: str, walked: str, exc: OSError) -> WorkspaceError:
        where = displayed_name(walked)
        if is_symlink_at(name, dir_fd):
            return WorkspaceError(
                f"{where} became a symlink while this call ran (something is changing the workspace); "
                "refused, nothing was done: retry"
            )
        if exc.errno == errno.ENOTDIR:
            return WorkspaceError(f"{where} is not a directory")
        return WorkspaceError(f"cannot open {where}: {exc.strerror}")

    def _refuse_identity(self, fd: int | None, info: os.stat_result, walked: str) -> None:
        """Refuse what *is* an excluded location, whatever name it was reached by (link, mount)."""
        entry = self.excluded.identity(info)
        if entry is None:
            return
        if fd is not None:
            os.close(fd)
        raise WorkspaceError(_excluded_message(walked, entry))

    def _open_regular(self, real_path: str, shown: str) -> Any:
        """A binary file object for a regular file; directories, FIFOs and devices are refused."""
        with self._descend(real_path, shown) as (dir_fd, name):
            try:
                # O_NONBLOCK: opening a FIFO must not hang waiting for a writer (it is refused after fstat).
                fd = os.open(name, os.O_RDONLY | NOFOLLOW | CLOEXEC | _NONBLOCK, dir_fd=dir_fd)
            except FileNotFoundError:
                raise WorkspaceError(f"{shown} does not exist under the workspace root {self.root}") from None
            except OSError as exc:
                if is_symlink_at(name, dir_fd):
                    raise WorkspaceError(
                        f"{shown} was replaced by a symlink while being opened; refused"
                    ) from None
                raise WorkspaceError(f"cannot open {shown}: {exc.strerror}") from None
        info = os.fstat(fd)
        self._refuse_identity(fd, info, self.relative(real_path))
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISDIR(info.st_mode):
                raise WorkspaceError(f"{shown} is a directory: use list_files({shown!r})")
            raise WorkspaceError(f"{shown} is not a regular file (a device, FIFO or socket); not read")
        return os.fdopen(fd, "rb")

    # -- listing -----------------------------------------------------------------------------
    def list_files(
        self,
        path: str = ".",
        pattern: str | None = None,
        recursive: bool = False,
        include_hidden: bool = False,
        limit: int | None = None,
    ) -> str:
        base = self.resolve(path)
        shown_base = self.shown(base)
        limit = self.limits.list_limit if limit is None else limit
        lines = [f"root: {displayed_name(self.root)}"]
        with self._descend(base, shown_base) as (dir_fd, name):
            info = lstat_at(name, dir_fd)
            if info is None:
                raise WorkspaceError(f"{path} does not exist under the workspace root {self.root}")
            if not stat.S_ISDIR(info.st_mode):
                self._refuse_identity(None, info, self.relative(base))
                lines.append(self._entry_line(dir_fd, name, base, info))
                return "\n".join(lines)
            base_fd = self._open_step(dir_fd, name, self.relative(base), shown_base, create=False)
        try:
            lines += self._listing(base_fd, base, pattern, recursive, include_hidden, limit)
        finally:
            os.close(base_fd)
        return "\n".join(lines)

    def _listing(
        self, base_fd: int, base: str, pattern: str | None, recursive: bool, include_hidden: bool, limit: int
    ) -> list[str]:
        lines: list[str] = []
        shown, more, hidden, excluded, scanned, quoted = 0, False, 0, 0, 0, False
        below = self.excluded.under(base)  # up to 50,000 entries are compared: only with what can match
        for dir_fd, entry, entry_path, entry_stat in self._entries(base_fd, base, recursive, below):
            scanned += 1
            if scanned > _SCAN_LIMIT:
                lines.append(f"[stopped after scanning {_SCAN_LIMIT:,} entries; list a subdirectory instead]")
                more = False
                break
            if not include_hidden and _is_hidden(entry):
                hidden += 1
                continue
            if self._is_excluded_entry(entry_path, entry_stat, below):
                excluded += 1
                continue
            if pattern and not _matches(pattern, os.path.relpath(entry_path, base)):
                continue
            if shown >= limit:
                more = True
                if recursive:
                    break
                continue
            lines.append(self._entry_line(dir_fd, entry, entry_path, entry_stat))
            quoted = quoted or has_unsafe_characters(self.relative(entry_path))
            shown += 1
        if shown == 0:
            lines.append("(no entries" + (f" matching {pattern!r}" if pattern else "") + ")")
        if more:
            lines.append(
                f"[more entries not shown (limit {limit}): narrow with pattern or a subdirectory, or raise limit]"
            )
        if hidden and not recursive:
            lines.append(
                f"[{hidden} hidden entries skipped (dotfiles, .ipynb_checkpoints): include_hidden=True]"
            )
        if excluded:
            lines.append(
                f"[{excluded} entries in excluded locations not shown: secrets and configuration "
                "(c.IPyMCP.excluded_paths) are out of reach of file tools]"
            )
        if quoted:
            lines.append(
                "[names in double quotes hold newlines or control characters and are JSON-escaped: "
                "pass them to other tools as those JSON strings]"
            )
        return lines

    def _entries(
        self, base_fd: int, base: str, recursive: bool, below: Exclusions
    ) -> Iterator[tuple[int, str, str, os.stat_result]]:
        """(directory fd, name, real path, lstat) per entry, breadth first, directories first.

        Subdirectories are reopened from ``base_fd`` one component at a time without following
        links; one that cannot be (gone, swapped for a symlink, excluded) is skipped.
        """
        pending: deque[tuple[str, ...]] = deque([()])
        while pending:
            parts = pending.popleft()
            dir_fd = self._reopen(base_fd, parts)
            if dir_fd is None:
                continue
            try:
                with os.scandir(dir_fd) as scan:
                    found = sorted(scan, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
                for entry in found:
                    try:
                        entry_stat = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    entry_path = os.path.join(base, *parts, entry.name)
                    yield dir_fd, entry.name, entry_path, entry_stat
                    if recursive and stat.S_ISDIR(entry_stat.st_mode) and not _is_hidden(entry.name):
                        if not self._is_excluded_entry(entry_path, entry_stat, below):
                            pending.append((*parts, entry.name))
            except OSError:
                continue
            finally:
                if dir_fd != base_fd:
                    os.close(dir_fd)

    def _reopen(self, base_fd: int, parts: tuple[str, ...]) -> int | None:
        fd = base_fd
        try:
            for part in parts:
                child = open_directory(part, fd)
                if fd != base_fd:
                    os.close(fd)
                fd = child
                if self.excluded.identity(os.fstat(fd)) is not None:
                    raise OSError(errno.EACCES, "excluded")
        except OSError:
            if fd != base_fd:
                os.close(fd)
            return None
        return fd

    def _is_excluded_entry(self, entry_path: str, entry_stat: os.stat_result, below: Exclusions) -> bool:
        if below.match(entry_path) is not None or below.identity(entry_stat) is not None:
            return True
        if not stat.S_ISLNK(entry_stat.st_mode):
            return False
        try:  # a symlink into an excluded location is left out like the location itself
            target, _ = _walk(entry_path, True, entry_path, self.root)
        except WorkspaceError:
            return False
        return self.excluded.match(target) is not None

    def _entry_line(self, dir_fd: int, name: str, entry_path: str, entry_stat: os.stat_result) -> str:
        mode = entry_stat.st_mode
        modified = _dt.datetime.fromtimestamp(entry_stat.st_mtime).isoformat(sep=" ", timespec="minutes")
        shown = self.shown(entry_path)
        if stat.S_ISDIR(mode):
            return f"dir   {'-':>12}  {modified}  {shown}/"
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                target = "?"
            try:
                real, _ = _walk(entry_path, True, shown, self.root)
                where = "outside the root" if not self.contains(real) else self.shown(real)
                if not os.path.lexists(real):
                    where = "broken"
            except WorkspaceError:
                where = "a symlink loop"
            return f"link  {'-':>12}  {modified}  {shown} -> {displayed_name(target)} ({where})"
        kind = "file" if stat.S_ISREG(mode) else "other"
        return f"{kind:<4}  {entry_stat.st_size:>12,}  {modified}  {shown}"

    # -- reading -----------------------------------------------------------------------------
    def read_file(self, path: str, offset: int = 0, limit: int = 2000, raw: bool = False) -> FileView:
        real = self.resolve(path)
        shown = self.shown(real)
        with self._open_regular(real, shown) as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(_SNIFF_BYTES)
            for magic, mime in _IMAGE_MAGIC:
                if head.startswith(magic):
                    return self._image(handle, head, size, mime, shown)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return self._image(handle, head, size, "image/webp", shown)
            binary = _binary_kind(head)
            if binary is not None:
                kind, hint = binary
                return FileView(
                    f"{shown}: binary file, {size:,} bytes: {kind}. Not shown as text; inspect it with "
                    f"execute ({hint}).",
                    {"path": shown, "kind": "binary", "size_bytes": size},
                )
            if shown.endswith(".ipynb") and not raw:
                if size > self.limits.read_max_bytes:
                    raise WorkspaceError(
                        f"{shown} is {size:,} bytes, over read_max_bytes ({self.limits.read_max_bytes:,}); "
                        "read_file(path, raw=True) pages its JSON, or raise c.IPyMCP.read_max_bytes"
                    )
                handle.seek(0)
                lines = render_notebook(handle.read(), shown).splitlines(keepends=True)
                page = self._page(iter(lines), shown, offset, limit, size=None, total=len(lines))
                page.facts.update(kind="notebook", size_bytes=size)
                return page
            large = size > self.limits.read_max_bytes
            if large and not self.limits.read_page_large_files:
                raise WorkspaceError(
                    f"{shown} is {size:,} bytes, over read_max_bytes ({self.limits.read_max_bytes:,}); "
                    "read a part of it with run_command (head, tail, grep), or change "
                    "c.IPyMCP.read_max_bytes / c.IPyMCP.read_page_large_files"
                )
            handle.seek(0)
            total = None if large else _count_lines(handle)
            handle.seek(0)
            page = self._page(_raw_lines(handle), shown, offset, limit, size=size, total=total)
            page.facts["size_bytes"] = size
            return page

    def _image(self, handle: Any, head: bytes, size: int, mime: str, shown: str) -> FileView:
        if size > self.limits.read_max_bytes:
            raise WorkspaceError(
                f"{shown} is a {size:,}-byte image, over read_max_bytes ({self.limits.read_max_bytes:,}); "
                "make a smaller copy with execute (PIL) or raise c.IPyMCP.read_max_bytes"
            )
        data = head + handle.read()
        return FileView(
            f"{shown}: {mime} image, {size:,} bytes",
            {"path": shown, "kind": "image", "size_bytes": size},
            image_b64=base64.b64encode(data).decode(),
            image_mime=mime,
        )

    def _page(
        self,
        lines: Iterator[bytes | str],
        shown: str,
        offset: int,
        limit: int,
        size: int | None,
        total: int | None,
    ) -> FileView:
        out: list[str] = []
        chars, seen, next_offset = 0, 0, None
        for number, line in enumerate(lines):
            seen = number + 1
            if number < offset:
                continue
            if len(out) >= limit:
                next_offset = number
                break
            text = _decode_line(line, number, shown) if isinstance(line, bytes) else line
            text = text.rstrip("\n").rstrip("\r")
            if len(text) > _LINE_CHARS:
                text = text[:_LINE_CHARS] + f"… [line cut: {len(text):,} characters]"
            entry = f"{number + 1:>6}\t{text}"
            if out and chars + len(entry) + 1 > self.limits.read_max_chars:
                next_offset = number
                break
            out.append(entry)
            chars += len(entry) + 1
        if not out:
            count = total if total is not None else seen
            if count == 0:
                return FileView(f"{shown}: empty file", {"path": shown, "kind": "empty", "size_bytes": 0})
            raise WorkspaceError(f"offset {offset} is past the end of {shown} ({count:,} lines)")
        first, last = offset + 1, offset + len(out)
        of = f" of {total:,}" if total is not None else f" of a {size:,}-byte file (too large to count lines)"
        footer = f"[{shown}: lines {first:,}-{last:,}{of}"
        if next_offset is not None:
            footer += f"; read_file({shown!r}, offset={next_offset}) for more]"
        else:
            footer += "; end of file]"
        facts = {
            "path": shown,
            "kind": "text",
            "size_bytes": size,
            "first_line": first,
            "last_line": last,
            "total_lines": total,
            "next_offset": next_offset,
        }
        return FileView("\n".join(out) + "\n" + footer, facts)

    # -- writing -----------------------------------------------------------------------------
    def write_file(self, path: str, content: str, overwrite: bool = False) -> str:
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise WorkspaceError(f"content cannot be encoded as UTF-8: {exc.reason} at {exc.start}") from None
        if len(data) > self.limits.write_max_bytes:
            raise WorkspaceError(
                f"content is {len(data):,} bytes, over write_max_bytes ({self.limits.write_max_bytes:,}); "
                "write it in parts from execute, or raise c.IPyMCP.write_max_bytes"
            )
        real = self.resolve(path)
        replaced = self._write_atomic(real, data, overwrite)
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        verb = "Replaced" if replaced else "Created"
        return f"{verb} {self.shown(real)}: {len(data):,} bytes, {lines:,} lines."

    def _write_atomic(self, real: str, data: bytes, overwrite: bool) -> bool:
        """Write ``data`` to ``real`` through a temp file + rename; True if a file was replaced."""
        if real == self.root:
            raise WorkspaceError("the workspace root is a directory; give a file path")
        shown = self.shown(real)
        with self._descend(real, shown, create=True) as (dir_fd, name):
            return self._write_in(dir_fd, name, shown, data, overwrite)

    def _write_in(self, dir_fd: int, name: str, shown: str, data: bytes, overwrite: bool) -> bool:
        temp = f".{name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        created = False
        try:
            existing = lstat_at(name, dir_fd)
            if existing is not None:
                self._refuse_identity(None, existing, shown)
            if existing is None:
                refuse_unsafe_name(name)
            elif stat.S_ISDIR(existing.st_mode):
                raise WorkspaceError(f"{shown} is a directory; choose a file path")
            elif stat.S_ISLNK(existing.st_mode):
                raise WorkspaceError(f"{shown} was replaced by a symlink; refused")
            elif not overwrite:
                raise WorkspaceError(
                    f"{shown} already exists ({existing.st_size:,} bytes); pass overwrite=True to replace "
                    "it, or use edit_file to change part of it"
                )
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o666, dir_fd=dir_fd
            )
            created = True
            try:
                view = memoryview(data)
                for start in range(0, len(data), _WRITE_CHUNK):
                    chunk = view[start : start + _WRITE_CHUNK]
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
                if existing is not None:
                    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                try:
                    rename_noreplace(dir_fd, temp, dir_fd, name)
                except FileExistsError:
                    raise WorkspaceError(
                        f"{shown} was created meanwhile; pass overwrite=True to replace it"
                    ) from None
            created = False
            try:
                os.fsync(dir_fd)
            except OSError:
                pass
            return existing is not None
        except OSError as exc:
            raise WorkspaceError(
                f"could not write {shown}: {exc.strerror or exc}; the file was not changed"
            ) from None
        finally:
            if created:
                try:
                    os.unlink(temp, dir_fd=dir_fd)
                except OSError:
                    pass

    def edit_file(self, path: str, old: str, new: str, count: int = 1) -> str:
        if old == "":
            raise WorkspaceError("old is empty; give the exact text to replace (read_file shows it)")
        if old == new:
            raise WorkspaceError("old and new are the same; nothing to change")
        real = self.resolve(path)
        shown = self.shown(real)
        with self._open_regular(real, shown) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > self.limits.write_max_bytes:
                raise WorkspaceError(
                    f"{shown} is {size:,} bytes, over write_max_bytes ({self.limits.write_max_bytes:,}); "
                    "edit it from execute or run_command"
                )
            data = handle.read()
        if b"\x00" in data[:_SNIFF_BYTES]:
            raise WorkspaceError(f"{shown} is a binary file; edit_file only changes UTF-8 text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkspaceError(_undecodable(shown, data, exc.start)) from None
        found = text.count(old)
        if found == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            found = text.count(old)
        if found == 0:
            raise WorkspaceError(
                f"old text not found in {shown}; it must match exactly, whitespace and indentation "
                "included. read_file shows the current text (without the line-number prefix)."
            )
        if found > count:
            raise WorkspaceError(
                f"old text matches {found} times in {shown}, more than count={count}; include more "
                f"surrounding lines to make it unique, or pass count={found} to replace them all"
            )
        first_line = text[: text.index(old)].count("\n") + 1
        self._write_atomic(real, text.replace(old, new, count).encode("utf-8"), overwrite=True)
        times = "once" if found == 1 else f"{found} times"
        return f"Edited {shown}: replaced {times} (first at line {first_line})."

    # -- managing ----------------------------------------------------------------------------
    def delete_path(self, path: str, recursive: bool = False) -> str:
        real = self.resolve(path, follow_final=False)
        if real == self.root:
            raise WorkspaceError("refusing to delete the workspace root itself")
        shown = self.shown(real)
        self._refuse_holding_excluded(real, shown, "deleted")
        try:
            with self._descend(real, shown) as (dir_fd, name):
                return self._delete_in(dir_fd, name, real, shown, recursive)
        except _NotFound:
            raise WorkspaceError(f"{shown} does not exist; nothing deleted") from None

    def _delete_in(self, dir_fd: int, name: str, real: str, shown: str, recursive: bool) -> str:
        info = lstat_at(name, dir_fd)
        if info is None:
            raise WorkspaceError(f"{shown} does not exist; nothing deleted")
        self._refuse_identity(None, info, self.relative(real))
        try:
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=dir_fd)  # a symlink is removed itself, never its target
                return f"Deleted {'symlink' if stat.S_ISLNK(info.st_mode) else 'file'} {shown}."
            if not recursive:
                return self._delete_empty(dir_fd, name, shown)
            files = remove_tree(name, dir_fd, lambda found: self._refuse_identity(None, found, shown))
        except OSError as exc:
            if is_symlink_at(name, dir_fd):
                raise WorkspaceError(
                    f"{shown} became a symlink while this call ran; refused, only the link may be deleted: retry"
                ) from None
            raise WorkspaceError(
                f"could not delete {shown}: {exc.strerror}; what was deleted before the error is gone "
                "(list_files shows what is left)"
            ) from None
        return f"Deleted directory {shown} ({files:,} files)."

    def _delete_empty(self, dir_fd: int, name: str, shown: str) -> str:
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise WorkspaceError(
                f"{shown} is a directory with {count_entries(name, dir_fd)} entries; pass recursive=True to "
                "delete it and everything in it"
            ) from None
        return f"Deleted empty directory {shown}."

    def _refuse_holding_excluded(self, real: str, shown: str, verb: str) -> None:
        entry = self.excluded.within(real)
        if entry is not None:
            raise WorkspaceError(
                f"{shown} contains {entry}, a location excluded from file tools (secrets and configuration: "
                f"c.IPyMCP.excluded_paths), so it is not {verb} as a whole; work on the entries beside it"
            )

    def move_path(self, src: str, dst: str, overwrite: bool = False) -> str:
        source = self.resolve(src, follow_final=False)
        target = self.resolve(dst, follow_final=False)
        if source == self.root:
            raise WorkspaceError("refusing to move the workspace root itself")
        shown_src, shown_dst = self.shown(source), self.shown(target)
        if target == source:
            raise WorkspaceError("src and dst are the same path")
        if target.startswith(source + os.sep):
            raise WorkspaceError(f"cannot move {shown_src} into itself ({shown_dst})")
        self._refuse_holding_excluded(source, shown_src, "moved")
        try:
            with self._descend(source, shown_src) as (src_fd, src_name):
                info = lstat_at(src_name, src_fd)
                if info is None:
                    raise _NotFound(shown_src)
                self._refuse_identity(None, info, self.relative(source))
                with self._descend(target, shown_dst, create=True) as (dst_fd, dst_name):
                    move = _Move(src_fd, src_name, dst_fd, dst_name, shown_src, shown_dst, info)
                    self._move(move, overwrite)
        except _NotFound:
            raise WorkspaceError(f"{shown_src} does not exist; nothing moved") from None
        return f"Moved {shown_src} to {shown_dst}."

    def _move(self, move: _Move, overwrite: bool) -> None:
        existing = lstat_at(move.dst_name, move.dst_fd)
        if existing is None:
            refuse_unsafe_name(move.dst_name)
        elif not overwrite:
            raise WorkspaceError(f"{move.shown_dst} already exists; pass overwrite=True to replace it")
        elif stat.S_ISDIR(existing.st_mode) and not stat.S_ISDIR(move.info.st_mode):
            raise WorkspaceError(f"{move.shown_dst} is a directory; a file cannot replace it")
        try:
            if overwrite:
                os.rename(move.src_name, move.dst_name, src_dir_fd=move.src_fd, dst_dir_fd=move.dst_fd)
            else:
                rename_noreplace(move.src_fd, move.src_name, move.dst_fd, move.dst_name)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another file system: copy, then delete the source
                self._move_across(move, overwrite)
                return
            raise WorkspaceError(_move_refusal(move, exc, overwrite)) from None

    def _move_across(self, move: _Move, overwrite: bool) -> None:
        """Copy through descriptors to a temp name beside dst, rename it into place, then delete src."""
        temp = f".{move.dst_name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        try:
            copy_entry(
                move.src_fd,
                move.src_name,
                move.dst_fd,
                temp,
                lambda found: self._refuse_identity(None, found, move.shown_src),
            )
            if overwrite:
                os.rename(temp, move.dst_name, src_dir_fd=move.dst_fd, dst_dir_fd=move.dst_fd)
            else:
                rename_noreplace(move.dst_fd, temp, move.dst_fd, move.dst_name)
        except WorkspaceError:
            _discard(move.dst_fd, temp)
            raise
        except OSError as exc:
            _discard(move.dst_fd, temp)
            raise WorkspaceError(_move_refusal(move, exc, overwrite)) from None
        try:
            if stat.S_ISDIR(move.info.st_mode):
                remove_tree(move.src_name, move.src_fd, lambda found: None)
            else:
                os.unlink(move.src_name, dir_fd=move.src_fd)
        except OSError as exc:
            raise WorkspaceError(
                f"copied {move.shown_src} to {move.shown_dst} (another file system), but could not delete "
                f"the original: {exc.strerror}; delete_path it when it is free"
            ) from None

    def make_directory(self, path: str) -> str:
        real = self.resolve(path)
        shown = self.shown(real)
        with self._descend(real, shown, create=True) as (dir_fd, name):
            info = lstat_at(name, dir_fd)
            if info is None:
                refuse_unsafe_name(name)
                try:
                    os.mkdir(name, dir_fd=dir_fd)
                    return f"Created directory {shown}."
                except FileExistsError:
                    info = lstat_at(name, dir_fd)
                except OSError as exc:
                    raise WorkspaceError(f"could not create {shown}: {exc.strerror}") from None
            if info is not None and stat.S_ISDIR(info.st_mode):
                return f"{shown} already exists."
            raise WorkspaceError(f"{shown} exists and is not a directory")


@dataclass
class _Move:
    src_fd: int
    src_name: str
    dst_fd: int
    dst_name: str
    shown_src: str
    shown_dst: str
    info: os.stat_result


def _move_refusal(move: _Move, exc: OSError, overwrite: bool) -> str:
    if exc.errno == errno.EEXIST and not overwrite:
        return f"{move.shown_dst} already exists (it appeared meanwhile); pass overwrite=True to replace it"
    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
        return f"{move.shown_dst} is a non-empty directory; delete it first"
    if exc.errno == errno.EINVAL:
        return f"cannot move {move.shown_src} into itself ({move.shown_dst})"
    if exc.errno == errno.ENOTDIR:
        return f"{move.shown_dst} is not a directory; a directory cannot replace it"
    if exc.errno == errno.EISDIR:
        return f"{move.shown_dst} is a directory; a file cannot replace it"
    if exc.errno == errno.ENOENT:
        return f"{move.shown_src} does not exist; nothing moved"
    return f"could not move {move.shown_src}: {exc.strerror}"


def _discard(dir_fd: int, name: str) -> None:
    """Remove a half-made temp entry (file, link or tree); best effort."""
    info = lstat_at(name, dir_fd)
    try:
        if info is not None and stat.S_ISDIR(info.st_mode):
            remove_tree(name, dir_fd, lambda found: None)
        elif info is not None:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _excluded_message(path: str, entry: str) -> str:
    return (
        f"{displayed_name(path)} is in {entry}, a location excluded from file tools (secrets and "
        "configuration: c.IPyMCP.excluded_paths); it is not read, listed or changed. Ask the user if "
        "you need something from it."
    )


# -- names -------------------------------------------------------------------------------------
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(character: str) -> bool:
    """Newlines, other control characters, line separators and bidi overrides: they forge listings."""
    return unicodedata.category(character) in ("Cc", "Zl", "Zp") or character in _BIDI_CONTROLS


def has_unsafe_characters(text: str) -> bool:
    return not text.isprintable() and any(_unsafe(character) for character in text)


def displayed_name(text: str) -> str:
    """``text`` as is, or as a JSON string (quoted, escaped) if it holds control characters."""
    if not has_unsafe_characters(text):
        return text
    escaped = (json.dumps(c)[1:-1] if _unsafe(c) or c in '"\\' else c for c in text)
    return '"' + "".join(escaped) + '"'


def refuse_unsafe_name(name: str) -> None:
    if has_unsafe_characters(name):
        first = next(character for character in name if _unsafe(character))
        raise WorkspaceError(
            f"the name {name!r} contains a newline or control character ({first!r}); file tools do not "
            "create such names (they forge listings and break shells): choose a name without them"
        )


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_NAMES


# -- helpers ---------------------------------------------------------------------------------
def _walk(start: str, follow_final: bool, shown: str, root: str) -> tuple[str, bool]:
    """Resolve ``start`` (absolute) component by component; returns (real path, went via a link)."""
    pending = deque(part for part in start.split("/") if part not in ("", "."))
    current, hops = "/", 0
    while pending:
        name = pending.popleft()
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        if not pending and not follow_final:
            current = candidate
            break
        try:
            info = os.lstat(candidate)
        except OSError:
            current = candidate  # does not exist (yet): nothing further can be a link
            continue
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            raise WorkspaceError(
                f"{shown!r}: too many levels of symbolic links (a symlink loop) under the workspace root {root}"
            )
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = "/"
        pending.extendleft(reversed([part for part in target.split("/") if part not in ("", ".")]))
    return current, hops > 0


def _matches(pattern: str, relative: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatch(relative, pattern.removeprefix("**/")) or fnmatch.fnmatch(relative, pattern)
    return fnmatch.fnmatch(os.path.basename(relative), pattern)


def _binary_kind(head: bytes) -> tuple[str, str] | None:
    for magic, kind, hint in _BINARY_MAGIC:
        if head.startswith(magic):
            return kind, hint
    if b"\x00" in head:
        return (
            "unknown binary data (it contains NUL bytes)",
            "open(path, 'rb').read(64) shows the first bytes",
        )
    return None


def _raw_lines(handle: Any) -> Iterator[bytes]:
    """Lines as bytes; a line longer than _LINE_BYTES is cut there and the rest skipped."""
    while True:
        line = handle.readline(_LINE_BYTES)
        if not line:
            return
        if len(line) == _LINE_BYTES and not line.endswith(b"\n"):
            while True:
                rest = handle.readline(_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def _count_lines(handle: Any) -> int:
    count, last = 0, b"\n"
    while chunk := handle.read(1 << 20):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def _decode_line(line: bytes, number: int, shown: str) -> str:
    try:
        return line.decode("utf-8-sig" if number == 0 else "utf-8")
    except UnicodeDecodeError as exc:
        raise WorkspaceError(_undecodable(shown, line, exc.start, number + 1)) from None


def _undecodable(shown: str, data: bytes, position: int, line: int | None = None) -> str:
    if line is None:
        line = data[:position].count(b"\n") + 1
    byte = data[position : position + 1].hex()
    return (
        f"{shown} is not valid UTF-8 (line {line}: byte 0x{byte}); it may be another encoding such as "
        f"latin-1 or cp1252, or binary. Read it with execute, e.g. open({shown!r}, encoding='latin-1').read()"
    )


def render_notebook(data: bytes, shown: str) -> str:
    """A notebook file as readable text: each cell's source, then its outputs as text."""
    from .outputs import notebook_text

    try:
        import nbformat

        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
    except ImportError:
        notebook = json.loads(data)
    except Exception as exc:  # noqa: BLE001 - any parse error: say so, offer the JSON
        raise WorkspaceError(
            f"{shown} is not a readable notebook ({exc}); read_file(path, raw=True) shows the JSON"
        ) from None
    return notebook_text(notebook, shown)
