"""Runtime files: how ``ipymcp connect`` and ``ipymcp list`` find the kernels that opted in.

One JSON file per kernel, ``<jupyter_runtime_dir()>/ipymcp/kernel-<kernel id>.json``, mode 0600
(it holds the bearer token). Written when the server is ready, removed when it stops.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / "ipymcp"


def runtime_file(kernel_id: str) -> Path:
    return runtime_dir() / f"kernel-{kernel_id}.json"


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only; the file never exists with looser permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


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


def list_kernels(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every readable runtime file whose process is alive, newest first."""
    directory = directory or runtime_dir()
    found = []
    for path in directory.glob("kernel-*.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not pid_alive(int(info.get("pid", 0) or 0)):
            continue
        info["runtime_file"] = str(path)
        found.append(info)
    found.sort(key=lambda i: i.get("started", ""), reverse=True)
    return found
