"""Replies through the Jupyter server are bounded (``c.IPyMCP.tunnel_max_reply_bytes``).

The Jupyter server sends every IOPub message of a kernel to each websocket of that kernel: every
browser tab, every collaborator. A tool result sent through the tunnel therefore reaches all of
them (JupyterLab parses it and drops it: it knows no such comm). Over HTTP only the agent gets it.
A tool result above the limit is cut, the way ipymcp cuts long outputs: text keeps its head and
tail, what does not fit (images, audio, embedded files, a large structured result) is left out,
and a note at the end says what was left out, why, and how to ask for less. Any other reply that
is too large becomes a JSON-RPC error with the same sentence. Pure functions; no SDK import.
"""

from __future__ import annotations

import json
from typing import Any

# JSON-RPC error code for a reply too large for the tunnel (implementation-defined server error range).
REPLY_TOO_LARGE = -32002
# Bytes kept free for the note and the JSON-RPC envelope.
NOTE_RESERVE = 2_000
# Smallest room worth keeping a shortened text for.
MIN_TEXT_ROOM = 400
_KINDS = {"image": "image", "audio": "audio clip", "resource": "embedded file", "resource_link": "resource link"}


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON (ASCII-escaped: never less than the UTF-8 the kernel sends)."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


def bound_reply(payload: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """``payload`` if it fits in ``limit`` bytes (or ``limit`` is 0), else a cut tool result, an
    error response, or None for a notification or request that cannot be sent at all."""
    if limit <= 0:
        return payload
    size = json_size(payload)
    if size <= limit:
        return payload
    result = payload.get("result")
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        return {**payload, "result": cut_tool_result(result, size, limit)}
    if "id" in payload and ("result" in payload or "error" in payload):
        error = {"code": REPLY_TOO_LARGE, "message": too_large(size, limit)}
        return {"jsonrpc": "2.0", "id": payload["id"], "error": error}
    return None


def cut_tool_result(result: dict[str, Any], size: int, limit: int) -> dict[str, Any]:
    budget = max(0, limit - NOTE_RESERVE)
    cut = {key: value for key, value in result.items() if key not in ("content", "structuredContent")}
    used = json_size(cut)
    kept: list[Any] = []
    left_out: list[tuple[str, int]] = []  # (what, bytes)
    for item in result["content"]:
        item_size = json_size(item)
        if used + item_size <= budget:
            kept.append(item)
            used += item_size
            continue
        text = item.get("text") if isinstance(item, dict) and item.get("type") == "text" else None
        room = budget - used - 200
        if isinstance(text, str) and room >= MIN_TEXT_ROOM:
            shortened = shorten_text(text, room)
            kept.append({**item, "text": shortened})
            used += json_size(kept[-1])
            left_out.append((f"{len(text) - len(shortened):,} characters of text", 0))
            continue
        kind = item.get("type") if isinstance(item, dict) else None
        left_out.append((_KINDS.get(str(kind), "content item"), item_size))
    structured = result.get("structuredContent")
    if structured is not None:
        structured_size = json_size(structured)
        if used + structured_size <= budget:
            cut["structuredContent"] = structured
        else:
            left_out.append(("the structured result", structured_size))
            # Without it the client would reject the result against the tool's output schema;
            # an error result is shown as it is.
            cut["isError"] = True
    forced_error = cut.get("isError") is True and not result.get("isError")
    kept.append({"type": "text", "text": cut_note(size, limit, left_out, forced_error)})
    cut["content"] = kept
    return cut


def shorten_text(text: str, room: int) -> str:
    """Head and tail of ``text`` with a middle marker, at most ``room`` bytes as JSON."""
    keep = max(0, int(room * len(text) / max(1, json_size(text))) - 100)
    while True:
        head, tail = text[: keep // 2], text[len(text) - keep // 2 :] if keep > 1 else ""
        shortened = f"{head}\n[… {len(text) - len(head) - len(tail):,} characters cut …]\n{tail}"
        if json_size(shortened) <= room or keep == 0:
            return shortened
        keep = int(keep * 0.9)


def cut_note(size: int, limit: int, left_out: list[tuple[str, int]], forced_error: bool) -> str:
    what = "; ".join(_summarize(left_out)) or "nothing"
    note = (
        f"[ipymcp: this result was cut to pass through the Jupyter server: it was {_mb(size)}, and replies "
        f"through Jupyter are limited to {_mb(limit)} (c.IPyMCP.tunnel_max_reply_bytes) because the Jupyter "
        f"server sends each one to every browser tab of this kernel. Left out: {what}. The call itself "
        "completed; ask for less (fewer or smaller images, a smaller page of text), or write the data to a "
        "file and read it in parts."
    )
    if forced_error:
        note += " It is marked as an error only because its structured result was left out."
    return note + "]"


def too_large(size: int, limit: int) -> str:
    return (
        f"The reply was {_mb(size)}, more than the {_mb(limit)} that may pass through the Jupyter server "
        "(c.IPyMCP.tunnel_max_reply_bytes: the server sends every reply to each browser tab of this kernel). "
        "Ask for less (a smaller part or page), or have the data written to a file and read it in parts."
    )


def _summarize(left_out: list[tuple[str, int]]) -> list[str]:
    """``[("image", 900_000), ("image", 800_000)]`` -> ``["2 images (1.7 MB)"]``."""
    sizes: dict[str, list[int]] = {}
    for what, size in left_out:
        sizes.setdefault(what, []).append(size)
    parts = []
    for what, group in sizes.items():
        if not sum(group):  # shortened text: the entry says how much itself
            parts.extend([what] * len(group))
        elif len(group) > 1:
            parts.append(f"{len(group)} {what}s ({_mb(sum(group))})")
        else:
            article = "" if what.startswith("the ") else "an " if what[0] in "aeiou" else "a "
            parts.append(f"{article}{what} ({_mb(group[0])})")
    return parts


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size:,} bytes"
