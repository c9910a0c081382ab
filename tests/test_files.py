"""File tools against a real kernel over real HTTP: the root rule, atomic writes, edits, reads of every kind."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import stat
import subprocess
import tempfile
import textwrap

import pytest
from conftest import KERNEL_PYTHON, text_of

pytestmark = pytest.mark.compat


async def call(kernel, name, **arguments):
    async with kernel.client() as c:
        return await c.call_tool(name, arguments)


def set_config(kernel, **values) -> None:
    assignments = "; ".join(f"_s.runtime.config.{k} = {v!r}" for k, v in values.items())
    kernel.run(f"import ipymcp._state as _s; {assignments}; del _s")


@pytest.fixture
def workdir(kernel):
    """A fresh directory under the kernel's root (its cwd), given as a relative path."""
    path = tempfile.mkdtemp(prefix="t-", dir=kernel.cwd)
    return os.path.relpath(path, kernel.cwd)


@pytest.fixture
def outside(tmp_path_factory):
    directory = tmp_path_factory.mktemp("outside")
    (directory / "secret.txt").write_text("do not touch\n")
    return directory


async def test_paths_that_leave_the_root_are_refused_naming_the_root(kernel, workdir, outside):
    root = os.path.realpath(kernel.cwd)
    base = kernel.cwd / workdir
    os.symlink(outside, base / "out_dir")
    os.symlink(outside / "secret.txt", base / "out_file")
    os.symlink("loop_b", base / "loop_a")
    os.symlink("loop_a", base / "loop_b")
    refused = [
        "../secret.txt",
        f"{workdir}/../../secret.txt",
        str(outside / "secret.txt"),
        f"{workdir}/out_dir/secret.txt",
        f"{workdir}/out_file",
        "~/.bashrc",
    ]
    for path in refused:
        for tool, extra in (("read_file", {}), ("write_file", {"content": "x", "overwrite": True})):
            result = await call(kernel, tool, path=path, **extra)
            assert result.is_error, (tool, path)
            assert root in text_of(result), (tool, path, text_of(result))
    loop = await call(kernel, "read_file", path=f"{workdir}/loop_a")
    assert loop.is_error and "symlink loop" in text_of(loop) and root in text_of(loop)
    listing = await call(kernel, "list_files", path=f"{workdir}/out_dir")
    assert listing.is_error and "outside the workspace root" in text_of(listing)
    assert (outside / "secret.txt").read_text() == "do not touch\n"


async def test_paths_inside_the_root_work_relative_absolute_and_through_inner_links(kernel, workdir):
    base = kernel.cwd / workdir
    (base / "real.txt").write_text("inside\n")
    os.symlink("real.txt", base / "link.txt")
    for path in (
        f"{workdir}/real.txt",
        str(base / "real.txt"),
        f"{workdir}/link.txt",
        f"{workdir}/x/../real.txt",
    ):
        result = await call(kernel, "read_file", path=path)
        assert not result.is_error, (path, text_of(result))
        assert "1\tinside" in text_of(result)


async def test_write_creates_parents_and_refuses_to_clobber_unless_overwrite_keeping_the_mode(
    kernel, workdir
):
    path = f"{workdir}/deep/er/new.txt"
    created = await call(kernel, "write_file", path=path, content="one\n")
    assert not created.is_error and "Created" in text_of(created)
    target = kernel.cwd / path
    assert target.read_text() == "one\n"
    os.chmod(target, 0o750)
    again = await call(kernel, "write_file", path=path, content="two\n")
    assert again.is_error and "already exists" in text_of(again) and "overwrite=True" in text_of(again)
    assert target.read_text() == "one\n"
    replaced = await call(kernel, "write_file", path=path, content="two\n", overwrite=True)
    assert not replaced.is_error and "Replaced" in text_of(replaced)
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(os.listdir(target.parent)) == ["new.txt"]  # no temp file left behind


@pytest.mark.parametrize("how", ["write error", "process killed"])
def test_atomic_write_interrupted_midway_leaves_the_old_file_whole(kernel, workdir, how):
    """A real interruption: the file-size rlimit stops the temp file's writes after 1 MB."""
    base = kernel.cwd / workdir
    (base / "data.txt").write_text("original\n")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from ipymcp.workspace import Limits, Workspace
        # Python ignores SIGXFSZ (the write then fails with EFBIG); its default action kills the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN if {how == "write error"!r} else signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            Workspace(sys.argv[1], Limits(write_max_bytes=1 << 30)).write_file("data.txt", "y" * (8 << 20), True)
        except Exception as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [KERNEL_PYTHON, "-c", script, str(base)], capture_output=True, text=True, timeout=60
    )
    assert (base / "data.txt").read_text() == "original\n"
    if how == "write error":
        assert "could not write data.txt" in done.stdout and "not changed" in done.stdout
        assert sorted(os.listdir(base)) == ["data.txt"]
    else:
        assert done.returncode == -signal.SIGXFSZ
        leftovers = [name for name in os.listdir(base) if name != "data.txt"]
        assert all(name.startswith(".data.txt.") for name in leftovers)  # hidden temp, never the target


async def test_edit_replaces_exact_text_and_fails_cleanly_on_zero_or_too_many_matches(kernel, workdir):
    path = f"{workdir}/code.py"
    (kernel.cwd / path).write_text("a = 1\nb = 1\nprint(a)\n")
    missing = await call(kernel, "edit_file", path=path, old="c = 1", new="c = 2")
    assert missing.is_error and "not found" in text_of(missing)
    twice = await call(kernel, "edit_file", path=path, old=" = 1", new=" = 2")
    assert twice.is_error and "matches 2 times" in text_of(twice) and "count=2" in text_of(twice)
    assert (kernel.cwd / path).read_text() == "a = 1\nb = 1\nprint(a)\n"
    one = await call(kernel, "edit_file", path=path, old="b = 1", new="b = 3")
    assert not one.is_error and "line 2" in text_of(one)
    both = await call(kernel, "edit_file", path=path, old="= ", new="== ", count=2)
    assert not both.is_error
    assert (kernel.cwd / path).read_text() == "a == 1\nb == 3\nprint(a)\n"


async def test_read_returns_numbered_lines_in_pages(kernel, workdir):
    path = f"{workdir}/lines.txt"
    (kernel.cwd / path).write_text("".join(f"line {i}\n" for i in range(1, 101)))
    first = text_of(await call(kernel, "read_file", path=path, limit=10))
    assert first.splitlines()[0] == "     1\tline 1" and "    10\tline 10" in first
    assert "lines 1-10 of 100" in first and "offset=10" in first and "line 11" not in first
    last = text_of(await call(kernel, "read_file", path=path, offset=95))
    assert "    96\tline 96" in last and "end of file" in last
    past = await call(kernel, "read_file", path=path, offset=500)
    assert past.is_error and "past the end" in text_of(past)


async def test_binary_files_are_described_and_bad_utf8_fails_with_a_hint(kernel, workdir):
    base = kernel.cwd / workdir
    (base / "blob.bin").write_bytes(b"\x00\x01\x02garbage" * 100)
    (base / "data.parquet").write_bytes(b"PAR1" + b"\x00" * 50)
    (base / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    blob = text_of(await call(kernel, "read_file", path=f"{workdir}/blob.bin"))
    assert "binary file, 1,000 bytes" in blob and "garbage" not in blob
    parquet = text_of(await call(kernel, "read_file", path=f"{workdir}/data.parquet"))
    assert "Parquet" in parquet and "read_parquet" in parquet
    latin = await call(kernel, "read_file", path=f"{workdir}/latin1.txt")
    assert latin.is_error and "not valid UTF-8" in text_of(latin) and "latin-1" in text_of(latin)


async def test_images_come_back_as_mcp_images_downscaled_when_large(kernel, workdir):
    from PIL import Image

    base = kernel.cwd / workdir
    Image.new("RGB", (40, 30), (255, 0, 0)).save(base / "small.png")
    Image.linear_gradient("L").resize((2400, 1200)).convert("RGB").save(base / "big.png")
    small = await call(kernel, "read_file", path=f"{workdir}/small.png")
    images = [b for b in small.content if b.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(images[0].data))).size == (40, 30)
    big = await call(kernel, "read_file", path=f"{workdir}/big.png")
    images = [b for b in big.content if b.type == "image"]
    assert len(images) == 1 and "downscaled" in text_of(big)
    width, height = Image.open(io.BytesIO(base64.b64decode(images[0].data))).size
    assert width * height <= 1_600_000


async def test_notebooks_are_rendered_as_cells_and_raw_gives_the_json(kernel, workdir):
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# Title\n", "Some text"]},
            {
                "cell_type": "code",
                "id": "c1",
                "metadata": {},
                "execution_count": 3,
                "source": "print('hi')",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "hi\n"},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
                    },
                ],
            },
        ],
    }
    path = f"{workdir}/nb.ipynb"
    (kernel.cwd / path).write_text(json.dumps(notebook))
    rendered = text_of(await call(kernel, "read_file", path=path))
    assert "notebook with 2 cells" in rendered
    assert "[cell 1] markdown" in rendered and "# Title" in rendered
    assert "[cell 2] code, execution_count 3" in rendered and "print('hi')" in rendered
    assert "hi" in rendered and "[image/png output not shown]" in rendered
    assert "iVBOR" not in rendered
    raw = text_of(await call(kernel, "read_file", path=path, raw=True))
    assert '"nbformat": 4' in raw


async def test_a_50mb_file_is_paged_by_default_and_refused_when_configured(kernel, workdir):
    path = kernel.cwd / workdir / "big.log"
    line = "x" * 99 + "\n"
    with open(path, "w") as handle:
        for _ in range(500):
            handle.write(line * 1000)
    assert path.stat().st_size == 50_000_000
    paged = await call(kernel, "read_file", path=f"{workdir}/big.log", limit=5)
    assert not paged.is_error
    text = text_of(paged)
    assert "     5\t" + "x" * 99 in text and "50,000,000-byte file" in text and "offset=5" in text
    deep = text_of(await call(kernel, "read_file", path=f"{workdir}/big.log", offset=400_000, limit=2))
    assert "400001\t" in deep
    set_config(kernel, read_page_large_files=False)
    try:
        refused = await call(kernel, "read_file", path=f"{workdir}/big.log")
        assert refused.is_error and "read_max_bytes" in text_of(refused) and "50,000,000" in text_of(refused)
        set_config(kernel, read_max_bytes=60_000_000)
        allowed = await call(kernel, "read_file", path=f"{workdir}/big.log", limit=1)
        assert "lines 1-1 of 500,000" in text_of(allowed)
    finally:
        set_config(kernel, read_page_large_files=True, read_max_bytes=10_000_000)


async def test_writes_over_the_size_cap_are_refused(kernel, workdir):
    set_config(kernel, write_max_bytes=1000)
    try:
        result = await call(kernel, "write_file", path=f"{workdir}/w.txt", content="z" * 1001)
        assert result.is_error and "write_max_bytes" in text_of(result)
        assert not (kernel.cwd / workdir / "w.txt").exists()
    finally:
        set_config(kernel, write_max_bytes=10_000_000)


async def test_list_files_skips_hidden_entries_and_bounds_the_count(kernel, workdir):
    base = kernel.cwd / workdir
    for i in range(12):
        (base / f"f{i:02}.csv").write_text("a,b\n")
    (base / "notes.md").write_text("x")
    (base / ".hidden").write_text("x")
    (base / ".ipynb_checkpoints").mkdir()
    (base / "sub").mkdir()
    (base / "sub" / "inner.csv").write_text("x")
    listing = text_of(await call(kernel, "list_files", path=workdir))
    assert f"{workdir}/f00.csv" in listing and f"{workdir}/sub/" in listing
    assert (
        "/.hidden" not in listing and "/.ipynb_checkpoints" not in listing and "2 hidden entries" in listing
    )
    assert listing.splitlines()[1].startswith("dir")  # directories first
    hidden = text_of(await call(kernel, "list_files", path=workdir, include_hidden=True))
    assert ".hidden" in hidden and ".ipynb_checkpoints" in hidden
    bounded = text_of(await call(kernel, "list_files", path=workdir, limit=5))
    assert sum(1 for line in bounded.splitlines() if line.startswith(("file", "dir"))) == 5
    assert "more entries not shown" in bounded
    csvs = text_of(await call(kernel, "list_files", path=workdir, pattern="*.csv", recursive=True))
    assert f"{workdir}/sub/inner.csv" in csvs and "notes.md" not in csvs
    assert f"{'file':<4}  {4:>12,}" in csvs  # kind and size columns


async def test_delete_move_and_make_directory(kernel, workdir):
    base = kernel.cwd / workdir
    made = await call(kernel, "make_directory", path=f"{workdir}/a/b")
    assert not made.is_error and (base / "a" / "b").is_dir()
    assert "already exists" in text_of(await call(kernel, "make_directory", path=f"{workdir}/a/b"))
    (base / "a" / "b" / "f.txt").write_text("f")
    (base / "g.txt").write_text("g")
    moved = await call(kernel, "move_path", src=f"{workdir}/g.txt", dst=f"{workdir}/new/place/g2.txt")
    assert not moved.is_error and (base / "new" / "place" / "g2.txt").read_text() == "g"
    clash = await call(kernel, "move_path", src=f"{workdir}/new/place/g2.txt", dst=f"{workdir}/a/b/f.txt")
    assert clash.is_error and "overwrite=True" in text_of(clash)
    not_empty = await call(kernel, "delete_path", path=f"{workdir}/a")
    assert not_empty.is_error and "recursive=True" in text_of(not_empty) and (base / "a").exists()
    deleted = await call(kernel, "delete_path", path=f"{workdir}/a", recursive=True)
    assert not deleted.is_error and not (base / "a").exists()
    root = await call(kernel, "delete_path", path=".")
    assert root.is_error and kernel.cwd.exists()
    escape = await call(kernel, "move_path", src=f"{workdir}/new", dst="../escaped")
    assert escape.is_error and (base / "new").exists()


async def test_file_tools_declare_levels_and_annotations(kernel):
    async with kernel.client() as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    for name in ("list_files", "read_file"):
        assert tools[name].annotations.read_only_hint is True
    for name in ("write_file", "edit_file", "delete_path", "move_path"):
        assert tools[name].annotations.read_only_hint is False
        assert tools[name].annotations.destructive_hint is True
    assert tools["make_directory"].annotations.destructive_hint is False
    levels = json.loads(
        kernel.run(
            "import json, ipymcp._state as _s\n"
            "print(json.dumps({n: s.level for n, s in _s.runtime.toolbox.specs.items()})); del _s"
        )["stdout"]
    )
    assert levels["read_file"] == levels["list_files"] == "read"
    assert {levels[n] for n in ("write_file", "edit_file", "delete_path", "move_path", "make_directory")} == {
        "edit"
    }


async def test_special_files_are_refused_without_hanging(kernel, workdir):
    os.mkfifo(kernel.cwd / workdir / "pipe")
    result = await call(kernel, "read_file", path=f"{workdir}/pipe")
    assert result.is_error and "not a regular file" in text_of(result)
    directory = await call(kernel, "read_file", path=workdir)
    assert directory.is_error and "list_files" in text_of(directory)


async def test_root_is_root_dir_if_set_else_the_notebooks_directory(kernel, workdir):
    base = (kernel.cwd / workdir).resolve()
    (base / "nbdir").mkdir()
    (base / "nbdir" / "here.txt").write_text("x")
    (base / "cfg").mkdir()
    kernel.run(
        f"import ipymcp._state as _s; _s.runtime.notebook_path = {str(base / 'nbdir' / 'a.ipynb')!r}; del _s"
    )
    try:
        listing = text_of(await call(kernel, "list_files"))
        assert listing.splitlines()[0] == f"root: {base / 'nbdir'}" and "here.txt" in listing
        set_config(kernel, root_dir=str(base / "cfg"))
        listing = text_of(await call(kernel, "list_files"))
        assert listing.splitlines()[0] == f"root: {base / 'cfg'}"
        escape = await call(kernel, "read_file", path="../nbdir/here.txt")
        assert escape.is_error and f"outside the workspace root {base / 'cfg'}" in text_of(escape)
    finally:
        set_config(kernel, root_dir="")
        kernel.run("import ipymcp._state as _s; _s.runtime.notebook_path = None; del _s")


def test_moves_across_file_systems_copy_through_descriptors_and_never_clobber(tmp_path):
    """A tmpfs mounted inside the root (a private mount namespace): rename fails with EXDEV there."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m)")
    (tmp_path / "mnt").mkdir()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "a.txt").write_text("hello\n")
    os.symlink("/etc/passwd", tmp_path / "tree" / "link")
    (tmp_path / "file.txt").write_text("file\n")
    os.chmod(tmp_path / "file.txt", 0o640)
    script = textwrap.dedent(
        """
        import os, sys
        from ipymcp.workspace import Workspace, WorkspaceError
        root = sys.argv[1]
        workspace = Workspace(root)
        print(workspace.move_path("tree", "mnt/tree"))
        print(workspace.move_path("file.txt", "mnt/file.txt"))
        print("mode", oct(os.stat(os.path.join(root, "mnt/file.txt")).st_mode & 0o777))
        open(os.path.join(root, "again.txt"), "w").write("again\\n")
        try:
            workspace.move_path("again.txt", "mnt/file.txt")
        except WorkspaceError as exc:
            print("refused:", exc)
        print(workspace.move_path("again.txt", "mnt/file.txt", overwrite=True))
        os.makedirs(os.path.join(root, "deep", *["d"] * 60))
        try:
            workspace.move_path("deep", "mnt/deep")
        except WorkspaceError as exc:
            print("too deep:", exc)
        for current, dirs, files in sorted(os.walk(os.path.join(root, "mnt"))):
            for name in sorted(dirs + files):
                path = os.path.join(current, name)
                kind = "link " + os.readlink(path) if os.path.islink(path) else open(path).read().strip() if os.path.isfile(path) else "dir"
                print("found", os.path.relpath(path, root), kind, oct(os.lstat(path).st_mode & 0o777))
        """
    )
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount -t tmpfs tmpfs "$1/mnt" && exec "$2" -c "$3" "$1"',
            "-",
            str(tmp_path),
            KERNEL_PYTHON,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Moved tree to mnt/tree." in out and "Moved file.txt to mnt/file.txt." in out
    assert "refused: mnt/file.txt already exists" in out and "overwrite=True" in out
    assert "found mnt/tree/link link /etc/passwd" in out  # the link itself, never its target
    assert "found mnt/tree/sub/a.txt hello" in out
    assert "mode 0o640" in out and "found mnt/file.txt again" in out  # permissions copied; then replaced
    assert "too deep: could not move deep: the tree is more than 48 levels deep" in out
    assert sorted(os.listdir(tmp_path)) == ["deep", "mnt"]  # sources gone but the refused one
    assert "found mnt/deep" not in out and ".ipymcp-tmp" not in out  # no half copy left


@pytest.mark.parametrize("native", [True, False], ids=["renameat2", "without renameat2"])
def test_no_overwrite_moves_refuse_an_existing_destination_with_or_without_renameat2(
    tmp_path, monkeypatch, native
):
    """Where the OS has no atomic no-replace rename, files fall back to link+unlink (still atomic)."""
    from ipymcp import _dirfd
    from ipymcp.workspace import Workspace, WorkspaceError

    if not native:
        monkeypatch.setattr(_dirfd, "_native_noreplace", lambda: None)
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    workspace = Workspace(tmp_path, excluded=[])
    for src, dst in (("a.txt", "b.txt"), ("d1", "d2"), ("a.txt", "d2")):
        with pytest.raises(WorkspaceError, match="already exists"):
            workspace.move_path(src, dst)
    assert (tmp_path / "b.txt").read_text() == "b\n" and (tmp_path / "a.txt").read_text() == "a\n"
    assert workspace.move_path("a.txt", "c.txt") == "Moved a.txt to c.txt."
    assert workspace.move_path("d1", "d3") == "Moved d1 to d3."
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.txt", "d2", "d3"]
    assert workspace.write_file("new.txt", "n\n") == "Created new.txt: 2 bytes, 1 lines."
    with pytest.raises(WorkspaceError, match="already exists"):
        workspace.write_file("new.txt", "again\n")


def test_a_very_deep_tree_is_deleted_with_few_descriptors():
    """1,500 nested directories under a 200-descriptor limit: the walk must not hold one fd per level.

    (The kernel shares its descriptors with the user's code; a delete must not starve it.) The
    tree lives outside pytest's tmp_path, whose own cleanup cannot delete a tree that deep.
    """
    script = textwrap.dedent(
        """
        import os, resource, sys
        from ipymcp.workspace import Workspace
        root = sys.argv[1]
        os.chdir(root)
        for _ in range(1500):  # relative steps: the full path is longer than PATH_MAX
            os.mkdir("d")
            os.chdir("d")
        open("leaf.txt", "w").write("x")
        os.chdir(root)
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(Workspace(root, excluded=[]).delete_path("d", recursive=True))
        print(sorted(os.listdir(root)))
        """
    )
    memory = (
        "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    )  # 1,500 rmdirs on a busy disk take seconds
    root = tempfile.mkdtemp(prefix="ipymcp-deep-", dir=memory)
    try:
        done = subprocess.run(
            [KERNEL_PYTHON, "-c", script, root], capture_output=True, text=True, timeout=120
        )
    finally:
        subprocess.run(["rm", "-rf", root], check=True)
    assert "Deleted directory d (1 files)." in done.stdout, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
