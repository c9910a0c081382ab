"""File tools: list_files, read_file, write_file, edit_file, delete_path, move_path, make_directory."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..content import Budget, shape_outputs
from ..policy.approval_detail import Diff
from ..workspace import Limits, Workspace, workspace_root
from .base import Services, ToolSet
from .results import FileRead

tools = ToolSet()

Path_ = Annotated[
    str, Field(description="path relative to the workspace root (absolute paths must lie inside it)")
]


def workspace_for(services: Services, *, exclusions: bool = True) -> Workspace:
    """The workspace for one call (the notebook's directory can change with a rename);
    ``exclusions=False`` for the terminal, a shell that is not confined."""
    config = services.config
    root = workspace_root(config.root_dir, services.notebook_path, services.load_cwd)
    return Workspace(root, Limits.from_config(config), config.excluded_paths if exclusions else ())


def _shown_edit(services: Services, arguments: dict[str, Any]) -> Diff | None:
    """The approval prompt shows edit_file as a diff: old → new."""
    old, new = arguments.get("old"), arguments.get("new")
    if not isinstance(old, str) or not isinstance(new, str):
        return None
    return Diff(old, new, ("old", "new"), f"in {arguments.get('path')}")


@tools.tool(level="read", read_only=True, title="List files")
def list_files(
    services: Services,
    path: Annotated[str, Field(description="directory (or file) relative to the workspace root")] = ".",
    pattern: Annotated[
        str | None,
        Field(description="glob on names (*.csv), or on paths when it contains / (data/*/*.csv)"),
    ] = None,
    recursive: Annotated[bool, Field(description="descend into subdirectories")] = False,
    include_hidden: Annotated[
        bool, Field(description="include dotfiles, .ipynb_checkpoints, __pycache__")
    ] = False,
    limit: Annotated[
        int | None, Field(description="maximum entries (default 200)", ge=1, le=10_000)
    ] = None,
) -> str:
    """List the files of the user's workspace: one line per entry with kind, size, modified time, path.

    Paths are relative to the workspace root (the notebook's directory unless configured) and
    can be passed as-is to read_file. Hidden files and .ipynb_checkpoints are skipped unless
    include_hidden=True; at most `limit` entries, with a marker when there are more.
    """
    return workspace_for(services).list_files(path, pattern, recursive, include_hidden, limit)


@tools.tool(level="read", read_only=True, title="Read a file")
def read_file(
    services: Services,
    path: Path_,
    offset: Annotated[int, Field(description="first line to return, 0-based", ge=0)] = 0,
    limit: Annotated[int, Field(description="maximum lines to return", ge=1, le=100_000)] = 2000,
    raw: Annotated[
        bool, Field(description=".ipynb: the JSON text instead of the rendered cells")
    ] = False,
) -> Annotated[CallToolResult, FileRead]:
    """Read a file from the workspace: text as numbered lines (`number<TAB>line`), paged.

    A footer says which lines were shown and the offset to continue from. Images (PNG, JPEG,
    GIF, WebP) come back as images, downscaled when large; other binary files are described
    (type and size), never dumped; .ipynb notebooks are rendered as cells with their text
    outputs (raw=True for the JSON). Text must be UTF-8: other encodings fail with a hint.
    Files over the size cap are paged, or refused if so configured. Paths outside the
    workspace root are refused.
    """
    view = workspace_for(services).read_file(path, offset, limit, raw)
    text = [TextContent(type="text", text=view.text)]
    if view.image_b64 is None:
        return CallToolResult(content=text, structured_content=dict(view.facts))
    image = [{"output_type": "display_data", "data": {view.image_mime: view.image_b64}}]
    images = shape_outputs(image, Budget.from_config(services.config, max_images=1))
    return CallToolResult(content=[*text, *images], structured_content=dict(view.facts))


@tools.tool(level="edit", read_only=False, destructive=True, title="Write a file")
def write_file(
    services: Services,
    path: Path_,
    content: Annotated[str, Field(description="the whole new content (UTF-8 text)")],
    overwrite: Annotated[bool, Field(description="replace the file if it exists")] = False,
) -> str:
    """Create a file (parent directories included) with `content`, atomically.

    The content goes to a temporary file that is then renamed into place, so the file is
    never seen half-written. An existing file is left alone unless overwrite=True (its
    permissions are kept). To change part of a file, prefer edit_file.
    """
    return workspace_for(services).write_file(path, content, overwrite)


@tools.tool(
    level="edit", read_only=False, destructive=True, title="Edit a file", approval_diff=_shown_edit
)
def edit_file(
    services: Services,
    path: Path_,
    old: Annotated[
        str, Field(description="exact text to replace, whitespace included (no line numbers)")
    ],
    new: Annotated[str, Field(description="replacement text")],
    count: Annotated[int, Field(description="how many occurrences may be replaced", ge=1)] = 1,
) -> str:
    """Replace exact text in a UTF-8 file, atomically.

    Fails, changing nothing, when `old` is not found or occurs more than `count` times: then
    include more surrounding lines in `old` to make it unique, or raise count to replace all.
    Copy `old` from read_file's output without the line-number prefix.
    """
    return workspace_for(services).edit_file(path, old, new, count)


@tools.tool(level="edit", read_only=False, destructive=True, title="Delete a file or directory")
def delete_path(
    services: Services,
    path: Path_,
    recursive: Annotated[
        bool, Field(description="delete a non-empty directory and all it contains")
    ] = False,
) -> str:
    """Delete a file, a symlink (not its target) or an empty directory; recursive=True for a full tree.

    There is no undo. The workspace root itself cannot be deleted.
    """
    return workspace_for(services).delete_path(path, recursive)


@tools.tool(level="edit", read_only=False, destructive=True, title="Move or rename")
def move_path(
    services: Services,
    src: Path_,
    dst: Annotated[str, Field(description="the new path (not a directory to move into)")],
    overwrite: Annotated[bool, Field(description="replace dst if it exists")] = False,
) -> str:
    """Move or rename a file or directory inside the workspace; dst's parent directories are created.

    Refuses to replace an existing dst unless overwrite=True (a non-empty directory is never replaced).
    """
    return workspace_for(services).move_path(src, dst, overwrite)


@tools.tool(level="edit", read_only=False, destructive=False, idempotent=True, title="Make a directory")
def make_directory(services: Services, path: Path_) -> str:
    """Create a directory and any missing parents; says so if it already exists."""
    return workspace_for(services).make_directory(path)
