"""The agent's workspace: one root directory, every path resolved inside it, and the file operations.

Resolution walks the path one component at a time and follows symlinks itself (not
``os.path.realpath``), so a symlink loop is an error instead of a silently wrong path, and a
link that leads out of the root is caught whatever it points through. Files are then opened with
``O_NOFOLLOW`` and, where ``/proc`` exists, the opened descriptor's real location is checked
against the root again: a symlink swapped in between the check and the open cannot redirect a
read or a write outside the root. Writes go to a temporary file in the target's directory
(created ``O_EXCL`` through a directory descriptor), are fsynced, then renamed over the target.
"""

from __future__ import annotations

import base64
import datetime as _dt
import errno
import fnmatch
import json
import os
import secrets
import shutil
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
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
    """What read_file found: text (numbered lines or a description), or an image to return."""

    text: str
    image_b64: str | None = None
    image_mime: str | None = None
    notes: list[str] = field(default_factory=list)


def workspace_root(root_dir: str, notebook_path: str | None, fallback: str) -> str:
    """``root_dir`` if configured; else the notebook's directory; else the kernel's cwd at load."""
    if root_dir:
        return os.path.abspath(os.path.join(fallback, os.path.expanduser(root_dir)))
    if notebook_path and os.path.isabs(notebook_path) and os.path.isdir(os.path.dirname(notebook_path)):
        return os.path.dirname(notebook_path)
    return fallback


class Workspace:
    def __init__(self, root: str | os.PathLike[str], limits: Limits | None = None):
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise WorkspaceError(
                f"the workspace root {root} is not a directory; set c.IPyMCP.root_dir to an existing one"
            )
        self.root = real
        self.limits = limits or Limits()

    # -- paths -------------------------------------------------------------------------------
    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """The real absolute path of ``path`` (relative to the root), refused if it leaves the root.

        ``follow_final=False`` keeps a symlink at the end as itself (to delete or move the link).
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
        return resolved

    def contains(self, real_path: str) -> bool:
        return real_path == self.root or real_path.startswith(self.root.rstrip(os.sep) + os.sep)

    def relative(self, real_path: str) -> str:
        return "." if real_path == self.root else os.path.relpath(real_path, self.root)

    def _check_descriptor(self, fd: int, shown: str) -> None:
        """Where /proc tells the truth, refuse a descriptor that ended up outside the root."""
        link = f"/proc/self/fd/{fd}"
        try:
            real = os.readlink(link)
        except OSError:
            return
        if real.startswith("/") and not self.contains(real.removesuffix(" (deleted)")):
            os.close(fd)
            raise WorkspaceError(
                f"{shown!r} was swapped for a link to {real}, outside the workspace root {self.root}; refused"
            )

    def _open(self, real_path: str, flags: int, shown: str) -> int:
        try:
            # O_NONBLOCK: opening a FIFO must not hang waiting for a writer (it is refused after fstat).
            fd = os.open(real_path, flags | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
        except FileNotFoundError:
            raise WorkspaceError(f"{shown} does not exist under the workspace root {self.root}") from None
        except IsADirectoryError:
            raise WorkspaceError(f"{shown} is a directory: use list_files") from None
        except OSError as exc:
            if os.path.islink(real_path):
                raise WorkspaceError(
                    f"{shown} was replaced by a symlink while being opened; refused"
                ) from None
            raise WorkspaceError(f"cannot open {shown}: {exc.strerror}") from None
        self._check_descriptor(fd, shown)
        return fd

    def _open_regular(self, real_path: str, shown: str) -> Any:
        """A binary file object for a regular file; directories, FIFOs and devices are refused."""
        fd = self._open(real_path, os.O_RDONLY, shown)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
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
        limit = self.limits.list_limit if limit is None else limit
        try:
            base_stat = os.stat(base)
        except FileNotFoundError:
            raise WorkspaceError(f"{path} does not exist under the workspace root {self.root}") from None
        lines = [f"root: {self.root}"]
        if not stat.S_ISDIR(base_stat.st_mode):
            lines.append(self._entry_line(base, os.lstat(base)))
            return "\n".join(lines)
        shown, more, skipped, scanned = 0, False, 0, 0
        for entry_path, entry_stat in self._entries(base, recursive):
            scanned += 1
            if scanned > _SCAN_LIMIT:
                lines.append(f"[stopped after scanning {_SCAN_LIMIT:,} entries; list a subdirectory instead]")
                more = False
                break
            name = os.path.basename(entry_path)
            if not include_hidden and (name.startswith(".") or name in _SKIPPED_NAMES):
                skipped += 1
                continue
            if pattern and not _matches(pattern, os.path.relpath(entry_path, base)):
                continue
            if shown >= limit:
                more = True
                if recursive:
                    break
                continue
            lines.append(self._entry_line(entry_path, entry_stat))
            shown += 1
        if shown == 0:
            lines.append("(no entries" + (f" matching {pattern!r}" if pattern else "") + ")")
        if more:
            lines.append(
                f"[more entries not shown (limit {limit}): narrow with pattern or a subdirectory, or raise limit]"
            )
        if skipped and not recursive:
            lines.append(
                f"[{skipped} hidden entries skipped (dotfiles, .ipynb_checkpoints): include_hidden=True]"
            )
        return "\n".join(lines)

    def _entries(self, base: str, recursive: bool) -> Iterator[tuple[str, os.stat_result]]:
        pending = deque([base])
        while pending:
            directory = pending.popleft()
            try:
                with os.scandir(directory) as scan:
                    found = sorted(scan, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
            except OSError:
                continue
            for entry in found:
                try:
                    entry_stat = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield entry.path, entry_stat
                hidden = entry.name.startswith(".") or entry.name in _SKIPPED_NAMES
                if recursive and stat.S_ISDIR(entry_stat.st_mode) and not hidden:
                    pending.append(entry.path)

    def _entry_line(self, entry_path: str, entry_stat: os.stat_result) -> str:
        mode = entry_stat.st_mode
        modified = _dt.datetime.fromtimestamp(entry_stat.st_mtime).isoformat(sep=" ", timespec="minutes")
        name = self.relative(entry_path)
        if stat.S_ISDIR(mode):
            return f"dir   {'-':>12}  {modified}  {name}/"
        if stat.S_ISLNK(mode):
            target = os.readlink(entry_path)
            try:
                real, _ = _walk(entry_path, True, name, self.root)
                where = "outside the root" if not self.contains(real) else self.relative(real)
                if not os.path.lexists(real):
                    where = "broken"
            except WorkspaceError:
                where = "a symlink loop"
            return f"link  {'-':>12}  {modified}  {name} -> {target} ({where})"
        kind = "file" if stat.S_ISREG(mode) else "other"
        return f"{kind:<4}  {entry_stat.st_size:>12,}  {modified}  {name}"

    # -- reading -----------------------------------------------------------------------------
    def read_file(self, path: str, offset: int = 0, limit: int = 2000, raw: bool = False) -> FileView:
        real = self.resolve(path)
        shown = self.relative(real)
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
                    f"execute ({hint})."
                )
            if shown.endswith(".ipynb") and not raw:
                if size > self.limits.read_max_bytes:
                    raise WorkspaceError(
                        f"{shown} is {size:,} bytes, over read_max_bytes ({self.limits.read_max_bytes:,}); "
                        "read_file(path, raw=True) pages its JSON, or raise c.IPyMCP.read_max_bytes"
                    )
                handle.seek(0)
                lines = render_notebook(handle.read(), shown).splitlines(keepends=True)
                return self._page(iter(lines), shown, offset, limit, size=None, total=len(lines))
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
            return self._page(_raw_lines(handle), shown, offset, limit, size=size, total=total)

    def _image(self, handle: Any, head: bytes, size: int, mime: str, shown: str) -> FileView:
        if size > self.limits.read_max_bytes:
            raise WorkspaceError(
                f"{shown} is a {size:,}-byte image, over read_max_bytes ({self.limits.read_max_bytes:,}); "
                "make a smaller copy with execute (PIL) or raise c.IPyMCP.read_max_bytes"
            )
        data = head + handle.read()
        return FileView(
            f"{shown}: {mime} image, {size:,} bytes",
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
                return FileView(f"{shown}: empty file")
            raise WorkspaceError(f"offset {offset} is past the end of {shown} ({count:,} lines)")
        first, last = offset + 1, offset + len(out)
        of = f" of {total:,}" if total is not None else f" of a {size:,}-byte file (too large to count lines)"
        footer = f"[{shown}: lines {first:,}-{last:,}{of}"
        if next_offset is not None:
            footer += f"; read_file({shown!r}, offset={next_offset}) for more]"
        else:
            footer += "; end of file]"
        return FileView("\n".join(out) + "\n" + footer)

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
        return f"{verb} {self.relative(real)}: {len(data):,} bytes, {lines:,} lines."

    def _write_atomic(self, real: str, data: bytes, overwrite: bool) -> bool:
        """Write ``data`` to ``real`` through a temp file + rename; True if a file was replaced."""
        if real == self.root:
            raise WorkspaceError("the workspace root is a directory; give a file path")
        shown = self.relative(real)
        parent, name = os.path.split(real)
        self._make_parents(parent)
        dir_fd = self._open(parent, os.O_RDONLY | _DIRECTORY, self.relative(parent))
        temp = f".{name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        created = False
        try:
            existing = _lstat_at(name, dir_fd)
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise WorkspaceError(f"{shown} is a directory; choose a file path")
                if stat.S_ISLNK(existing.st_mode):
                    raise WorkspaceError(f"{shown} was replaced by a symlink; refused")
                if not overwrite:
                    raise WorkspaceError(
                        f"{shown} already exists ({existing.st_size:,} bytes); pass overwrite=True to replace "
                        "it, or use edit_file to change part of it"
                    )
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666, dir_fd=dir_fd
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
                _rename_no_clobber(temp, name, dir_fd, shown)
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
            os.close(dir_fd)

    def _make_parents(self, parent: str) -> None:
        missing: list[str] = []
        current = parent
        while not os.path.lexists(current):
            missing.append(current)
            current = os.path.dirname(current)
        if not os.path.isdir(current) or os.path.islink(current):
            raise WorkspaceError(f"{self.relative(current)} is not a directory; cannot create files under it")
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass
            if os.path.islink(directory) or not self.contains(os.path.realpath(directory)):
                raise WorkspaceError(f"{self.relative(directory)} was swapped for a symlink; refused")

    def edit_file(self, path: str, old: str, new: str, count: int = 1) -> str:
        if old == "":
            raise WorkspaceError("old is empty; give the exact text to replace (read_file shows it)")
        if old == new:
            raise WorkspaceError("old and new are the same; nothing to change")
        real = self.resolve(path)
        shown = self.relative(real)
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
        shown = self.relative(real)
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            raise WorkspaceError(f"{shown} does not exist; nothing deleted") from None
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(real)
            return f"Deleted {'symlink' if stat.S_ISLNK(info.st_mode) else 'file'} {shown}."
        if not recursive:
            try:
                os.rmdir(real)
            except OSError:
                count = len(os.listdir(real))
                raise WorkspaceError(
                    f"{shown} is a directory with {count} entries; pass recursive=True to delete it and "
                    "everything in it"
                ) from None
            return f"Deleted empty directory {shown}."
        files = sum(len(names) for _, _, names in os.walk(real))
        shutil.rmtree(real)  # does not follow symlinks inside the tree
        return f"Deleted directory {shown} ({files:,} files)."

    def move_path(self, src: str, dst: str, overwrite: bool = False) -> str:
        source = self.resolve(src, follow_final=False)
        target = self.resolve(dst, follow_final=False)
        if source == self.root:
            raise WorkspaceError("refusing to move the workspace root itself")
        shown_src, shown_dst = self.relative(source), self.relative(target)
        if not os.path.lexists(source):
            raise WorkspaceError(f"{shown_src} does not exist; nothing moved")
        if target == source:
            raise WorkspaceError("src and dst are the same path")
        if target.startswith(source + os.sep):
            raise WorkspaceError(f"cannot move {shown_src} into itself ({shown_dst})")
        if os.path.lexists(target):
            if not overwrite:
                raise WorkspaceError(f"{shown_dst} already exists; pass overwrite=True to replace it")
            if os.path.isdir(target) and not os.path.islink(target):
                if not os.path.isdir(source) or os.path.islink(source):
                    raise WorkspaceError(f"{shown_dst} is a directory; a file cannot replace it")
                if os.listdir(target):
                    raise WorkspaceError(f"{shown_dst} is a non-empty directory; delete it first")
        self._make_parents(os.path.dirname(target))
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another file system
                raise WorkspaceError(f"could not move {shown_src}: {exc.strerror}") from None
            shutil.move(source, target)
        return f"Moved {shown_src} to {shown_dst}."

    def make_directory(self, path: str) -> str:
        real = self.resolve(path)
        shown = self.relative(real)
        if os.path.isdir(real):
            return f"{shown} already exists."
        if os.path.lexists(real):
            raise WorkspaceError(f"{shown} exists and is not a directory")
        self._make_parents(real)
        return f"Created directory {shown}."


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


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _rename_no_clobber(temp: str, name: str, dir_fd: int, shown: str) -> None:
    """Atomically refuse to replace a file created meanwhile: link() fails if the name exists."""
    try:
        os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise WorkspaceError(f"{shown} was created meanwhile; pass overwrite=True to replace it") from None
    except OSError:  # no hard links on this file system: check, then rename
        if _lstat_at(name, dir_fd) is not None:
            raise WorkspaceError(
                f"{shown} was created meanwhile; pass overwrite=True to replace it"
            ) from None
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(temp, dir_fd=dir_fd)


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
    """A notebook as readable text: each cell's source, then its outputs as text."""
    from .outputs import output_text

    try:
        import nbformat

        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
    except ImportError:
        notebook = json.loads(data)
    except Exception as exc:  # noqa: BLE001 - any parse error: say so, offer the JSON
        raise WorkspaceError(
            f"{shown} is not a readable notebook ({exc}); read_file(path, raw=True) shows the JSON"
        ) from None
    cells = notebook.get("cells", [])
    kernel = (notebook.get("metadata", {}).get("kernelspec") or {}).get("name", "unknown")
    parts = [f"# {shown}: notebook with {len(cells)} cells, kernel {kernel} (raw=True shows the JSON)\n"]
    for index, cell in enumerate(cells, 1):
        kind = cell.get("cell_type", "?")
        count = cell.get("execution_count")
        label = f"[cell {index}] {kind}" + (f", execution_count {count}" if count is not None else "")
        cell_id = cell.get("id")
        parts.append(f"{label}" + (f" (id {cell_id})" if cell_id else "") + "\n")
        source = (
            "".join(cell.get("source", ""))
            if isinstance(cell.get("source"), list)
            else cell.get("source", "")
        )
        parts.append(source.rstrip("\n") + "\n")
        outputs = cell.get("outputs") or []
        if outputs:
            parts.append("[outputs]\n")
            for output in outputs:
                text = output_text(dict(output))
                if len(text) > 3000:
                    text = text[:2000] + f"\n[... output cut: {len(text):,} characters ...]\n" + text[-500:]
                parts.append(text)
                data_mimes = [m for m in (output.get("data") or {}) if m.startswith("image/")]
                for mime in data_mimes:
                    parts.append(f"[{mime} output not shown]\n")
        parts.append("\n")
    return "".join(parts)
