"""The user's permission level and approval mode across restarts: a restart never loosens them.

Three sources can speak when ipymcp starts, and **the stricter wins** (approval is on if any says on):

* the user's last choice in this kernel (``%mcp permissions`` / ``%mcp approve``), remembered in
  ``<runtime dir>/ipymcp/policy-kernel-<kernel id>.json`` (a restart keeps the kernel id) and
  ``policy-notebook-<hash of the notebook path>.json`` (reopening a notebook starts a new kernel),
  mode 0600, never in the notebook; the kernel's own file wins over the notebook's older one;
* the configuration, when it is set: ``c.IPyMCP.permissions`` / ``IPYMCP_PERMISSIONS``,
  ``c.IPyMCP.approval``; unset, the default (``execute``) applies only when nothing was remembered;
* the notebook's metadata, ``metadata.ipymcp.permissions`` / ``metadata.ipymcp.approval``: a
  notebook may come from someone else, so it can only tighten.

Independent of the endpoint memory (``ipymcp/restart/endpoint.py``): it holds no secret and applies whether
the port is fixed, ``remember_endpoint`` is off, or there is no HTTP listener at all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .permissions import LEVELS, check_level

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.policy")

# Reading the notebook's metadata: the top-level "metadata" key of an nbformat file written with
# indent=1 and sorted keys (nbformat, JupyterLab) sits after the cells, near the end.
_TAIL_BYTES = 256 * 1024
_TOP_LEVEL_METADATA = '\n "metadata": '


@dataclass
class Start:
    """The level and approval ipymcp starts with, and which sources decided them."""

    level: str
    approval: bool
    sources: list[str] = field(default_factory=list)


def stricter(a: str, b: str) -> str:
    return a if LEVELS.index(a) <= LEVELS.index(b) else b


# -- where the choice is kept ----------------------------------------------------------------


def memory_files(kernel_id: str | None, notebook_paths: list[str]) -> list[Path]:
    """The kernel's own file first (the user's latest choice in it), then its notebook's."""
    from ..server import discovery

    directory = discovery.runtime_dir()
    files = [directory / f"policy-kernel-{kernel_id}.json"] if kernel_id else []
    for path in dict.fromkeys(os.path.abspath(p) for p in notebook_paths if p):
        digest = hashlib.sha256(path.encode()).hexdigest()[:24]
        files.append(directory / f"policy-notebook-{digest}.json")
    return files


def notebook_paths(runtime: Runtime) -> list[str]:
    return [p for p in (runtime.quick_notebook_path(), runtime.notebook_path) if p]


def remember(runtime: Runtime, level: str, approval: bool) -> None:
    """Keep the user's choice for the next start of this kernel or notebook (owner-only files)."""
    from ..server import discovery

    data = {
        "permissions": level,
        "approval": bool(approval),
        "kernel_id": runtime.kernel_id,
        "notebook_path": runtime.notebook_path or runtime.quick_notebook_path(),
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for path in memory_files(runtime.kernel_id, notebook_paths(runtime)):
        try:
            discovery.write_private_json(path, data)
        except OSError:
            log.warning("could not remember the permission level in %s", path, exc_info=True)


def recall(kernel_id: str | None, paths: list[str]) -> dict[str, Any] | None:
    """The remembered choice, from a file only this user can have written."""
    from ..server import discovery

    for path in memory_files(kernel_id, paths):
        try:
            return discovery.read_private_json(path)
        except FileNotFoundError:
            continue
        except (discovery.UntrustedFile, OSError) as exc:
            log.warning("ignored %s: %s", path, exc)
    return None


# -- deciding at start -------------------------------------------------------------------------


def starting_choice(runtime: Runtime) -> Start:
    """The level and approval to start with, from the memory and the configuration (cheap: one
    or two small files; the notebook's metadata is read later, on the server thread)."""
    config = runtime.config
    configured = _configured_level(config)
    remembered = recall(runtime.kernel_id, notebook_paths(runtime)) or {}
    start = Start(level=configured or config.permissions, approval=bool(config.approval))
    if configured:
        start.sources.append(f"configuration: {configured}")
    level = _level(remembered.get("permissions"))
    if level:
        start.level = stricter(level, configured) if configured else level
        start.sources.append(f"your choice before the restart: {level}")
    if remembered.get("approval") is True:
        start.approval = True
        start.sources.append("your choice before the restart: approval on")
    return start


def tighten_from_notebook(start: Start, notebook: Path | None) -> Start:
    """Apply the notebook's ``metadata.ipymcp``: only ever stricter."""
    metadata = read_notebook_metadata(notebook) if notebook is not None else {}
    said = metadata.get("ipymcp") if isinstance(metadata, dict) else None
    if not isinstance(said, dict):
        return start
    level = _level(said.get("permissions"))
    if level and stricter(level, start.level) != start.level:
        start.level = level
        start.sources.append(f"the notebook's metadata: {level}")
    if said.get("approval") in (True, "on", "true") and not start.approval:
        start.approval = True
        start.sources.append("the notebook's metadata: approval on")
    return start


def notebook_file(runtime: Runtime) -> Path | None:
    """The kernel's notebook on disk, from what the frontend told the kernel (no network)."""
    quick = runtime.quick_notebook_path()
    if not quick:
        return None
    candidates = [Path(quick), Path.cwd() / quick, Path.cwd() / Path(quick).name]
    return next((c for c in candidates if c.is_absolute() and c.is_file()), None)


def read_notebook_metadata(path: Path) -> dict[str, Any]:
    """The notebook's top-level metadata; from the file's tail when it is laid out as nbformat
    writes it (a 50 MB notebook is not parsed whole), else from the whole file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace")
        at = tail.rfind(_TOP_LEVEL_METADATA)
        if at >= 0:
            try:
                value, _ = json.JSONDecoder().raw_decode(tail, at + len(_TOP_LEVEL_METADATA))
                if isinstance(value, dict):
                    return value
            except ValueError:
                pass
        whole = json.loads(path.read_bytes())
    except (OSError, ValueError):
        log.info("could not read the notebook's metadata from %s", path, exc_info=True)
        return {}
    metadata = whole.get("metadata") if isinstance(whole, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _configured_level(config: Any) -> str | None:
    """The level the configuration sets explicitly (a profile, ``IPYMCP_PERMISSIONS``), else None."""
    section = config.config["IPyMCP"] if "IPyMCP" in config.config else {}
    if "permissions" in section or os.environ.get("IPYMCP_PERMISSIONS"):
        return check_level(config.permissions)
    return None


def _level(value: Any) -> str | None:
    try:
        return check_level(value) if isinstance(value, str) else None
    except ValueError:
        return None
