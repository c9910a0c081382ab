"""Attack: an agent whose workspace root is the home directory goes after secrets and configuration.

The kernel runs with ``HOME`` set to a fake home (the real one is never touched) and the root at
that home. Keys, tokens, Jupyter's runtime files and the configuration that decides the agent's
own permission level must be out of reach of every file tool — also through a symlink or a hard
link inside the root — and left out of listings (with a count). Before the fix, every read and
write below worked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import KernelHarness, text_of

pytestmark = pytest.mark.compat

SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- fake"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / ".jupyter").mkdir()
    (home / ".jupyter" / "jupyter_server_config.py").write_text("c.ServerApp.token = 'secret-token'\n")
    (home / ".ipython" / "profile_default").mkdir(parents=True)
    (home / ".netrc").write_text(f"machine example.com password {SECRET}\n")
    (home / "apps" / "jupyter-runtime").mkdir(parents=True)  # a custom JUPYTER_RUNTIME_DIR
    (home / "apps" / "jupyter-runtime" / "kernel-1.json").write_text(json.dumps({"key": SECRET}))
    (home / "apps" / "tool.py").write_text("print('ok')\n")
    (home / "notes.txt").write_text("my notes\n")
    (home / "project").mkdir()
    os.symlink(home / ".ssh", home / "project" / "keys")
    os.link(home / ".netrc", home / "project" / "netrc-copy")
    return home


@pytest.fixture(scope="module")
def kernel(home):
    harness = KernelHarness(
        env={"HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "apps" / "jupyter-runtime")}
    )
    harness.load_ipymcp()
    harness.run(f"import ipymcp._state as _s; _s.runtime.config.root_dir = {str(home)!r}; del _s")
    harness.run("%mcp permissions edit")
    yield harness
    harness.shutdown()


async def call(kernel, name, **arguments):
    async with kernel.client() as client:
        return await client.call_tool(name, arguments)


def refused(result) -> bool:
    return result.is_error and "excluded_paths" in text_of(result)


@pytest.mark.parametrize(
    "path",
    [
        ".ssh/id_rsa",
        ".ssh",
        ".jupyter/jupyter_server_config.py",
        "apps/jupyter-runtime/kernel-1.json",
        ".netrc",
        "project/keys/id_rsa",  # a symlink inside the root into ~/.ssh
        "project/netrc-copy",  # a hard link to ~/.netrc
    ],
)
async def test_secrets_and_config_are_not_read(kernel, home, path):
    result = await call(kernel, "read_file", path=path)
    assert refused(result), text_of(result)
    assert SECRET not in text_of(result) and "secret-token" not in text_of(result)
    absolute = await call(kernel, "read_file", path=str(home / path))
    assert refused(absolute), text_of(absolute)


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("write_file", {"path": ".jupyter/jupyter_server_config.py", "content": "x", "overwrite": True}),
        (
            "write_file",
            {
                "path": ".ipython/profile_default/ipython_kernel_config.py",
                "content": "c.IPyMCP.permissions = 'full'\n",
            },
        ),
        ("write_file", {"path": ".ssh/authorized_keys", "content": "ssh-ed25519 AAAA attacker"}),
        ("write_file", {"path": "project/keys/authorized_keys", "content": "ssh-ed25519 AAAA attacker"}),
        ("edit_file", {"path": ".netrc", "old": "example.com", "new": "attacker.example"}),
        ("edit_file", {"path": "project/netrc-copy", "old": "example.com", "new": "attacker.example"}),
        ("make_directory", {"path": ".ipython/profile_default/startup"}),
        ("delete_path", {"path": ".ssh/id_rsa"}),
        ("delete_path", {"path": ".ssh", "recursive": True}),
        ("delete_path", {"path": "apps", "recursive": True}),  # holds the runtime directory
        ("move_path", {"src": ".ssh/id_rsa", "dst": "stolen"}),
        ("move_path", {"src": "apps", "dst": "elsewhere"}),  # would carry the runtime directory out
        ("move_path", {"src": "notes.txt", "dst": ".jupyter/jupyter_notebook_config.py"}),
        ("move_path", {"src": "project/keys", "dst": "project/keys2"}),  # allowed: moves the link only
    ],
)
async def test_secrets_and_config_are_not_changed(kernel, home, name, arguments):
    before = snapshot(home)
    result = await call(kernel, name, **arguments)
    if arguments.get("src") == "project/keys":
        assert not result.is_error, text_of(result)
        os.rename(home / "project" / "keys2", home / "project" / "keys")
    else:
        assert refused(result), text_of(result)
    assert snapshot(home) == before


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry and its content, but ipymcp's own runtime files (its log and audit grow per call)."""
    found: dict[str, str] = {}
    for current, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(current, name)
            relative = str(path.relative_to(directory))
            if not relative.startswith("apps/jupyter-runtime/ipymcp"):
                found[relative] = path.read_text() if path.is_file() else "<dir>"
    return found


async def test_listings_leave_excluded_locations_out_with_a_count(kernel, home):
    listing = text_of(await call(kernel, "list_files", path=".", include_hidden=True))
    names = [line.split()[-1] for line in listing.splitlines() if line.startswith(("file", "dir", "link"))]
    assert "notes.txt" in names and "apps/" in names and "project/" in names, listing
    assert not {".ssh/", ".jupyter/", ".ipython/", ".netrc"} & set(names), listing
    assert "4 entries in excluded locations not shown" in listing, listing
    deep = text_of(await call(kernel, "list_files", path=".", recursive=True, include_hidden=True))
    for hidden in ("id_rsa", "jupyter_server_config", "kernel-1.json", "netrc-copy", "project/keys"):
        assert hidden not in deep, deep
    assert "apps/tool.py" in deep and "excluded locations not shown" in deep
    inside = text_of(await call(kernel, "list_files", path="project"))
    assert "keys" not in inside and "netrc-copy" not in inside and "2 entries in excluded" in inside
    runtime = await call(kernel, "list_files", path="apps/jupyter-runtime")
    assert refused(runtime)


async def test_the_setting_decides_what_is_excluded(kernel, home):
    default = json.loads(
        kernel.run(
            "import json, ipymcp._state as _s; print(json.dumps(_s.runtime.config.excluded_paths)); del _s"
        )["stdout"]
    )
    assert "~/.ssh" in default and str(home / "apps" / "jupyter-runtime") in default
    try:
        kernel.run("import ipymcp._state as _s; _s.runtime.config.excluded_paths = ['notes.txt']; del _s")
        opened = await call(kernel, "read_file", path=".ssh/id_rsa")
        assert not opened.is_error and SECRET in text_of(opened)
        assert refused(await call(kernel, "read_file", path="notes.txt"))
    finally:
        kernel.run(f"import ipymcp._state as _s; _s.runtime.config.excluded_paths = {default!r}; del _s")
    assert refused(await call(kernel, "read_file", path=".ssh/id_rsa"))


def test_the_readme_lists_every_default_exclusion():
    from ipymcp.workspace import HOME_EXCLUSIONS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert [entry for entry in HOME_EXCLUSIONS if f"`{entry}`" not in readme] == []
