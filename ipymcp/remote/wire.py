"""Jupyter kernel messages as jupyter_server carries them over a kernel websocket.

Two framings exist (``jupyter_server/services/kernels/connection/base.py``):

- ``v1.kernel.websocket.jupyter.org``: one binary frame per message, a table of 8-byte offsets,
  then the channel name and the header, parent header, metadata and content as JSON parts
  (then buffers). The server passes the parts to the kernel as they are.
- legacy (no subprotocol): one JSON text frame with a ``channel`` key; a message with buffers
  comes as a binary frame (4-byte offsets, the JSON, the buffers). Colab's runtime proxy speaks
  only this one.

Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as _dt
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
# The Jupyter messaging protocol version our headers claim (subshell_id is a 5.5 header field,
# but kernels accept it from any client that knows about subshells).
MESSAGING_VERSION = "5.4"
_PARTS = ("header", "parent_header", "metadata", "content")


class WireError(ValueError):
    """A websocket frame that is not a Jupyter message."""


@dataclass
class Message:
    """One Jupyter message and the channel it travels on."""

    channel: str
    header: dict[str, Any]
    parent_header: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)
    buffers: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def parent_id(self) -> str | None:
        parent = self.parent_header or {}
        return parent.get("msg_id")


def new_message(
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    session_id: str,
    username: str = "ipymcp",
    subshell_id: str | None = None,
) -> Message:
    header: dict[str, Any] = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": username,
        "session": session_id,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "version": MESSAGING_VERSION,
    }
    if subshell_id is not None:
        header["subshell_id"] = subshell_id
    return Message(channel, header, {}, {}, content)


def encode(message: Message, subprotocol: str | None) -> bytes | str:
    """The websocket frame for ``message`` in the framing the server selected."""
    if subprotocol == V1_PROTOCOL:
        return _pack_v1(message)
    if message.buffers:
        raise WireError("the legacy framing cannot send buffers")
    return json.dumps(
        {
            "channel": message.channel,
            "header": message.header,
            "parent_header": message.parent_header,
            "metadata": message.metadata,
            "content": message.content,
        }
    )


def decode(frame: bytes | str, subprotocol: str | None) -> Message:
    """The message in a websocket frame; raises ``WireError`` for anything else."""
    try:
        if subprotocol == V1_PROTOCOL:
            if not isinstance(frame, bytes):
                raise WireError("a text frame on a v1 connection")
            return _unpack_v1(frame)
        if isinstance(frame, bytes):
            return _unpack_legacy_binary(frame)
        return _from_dict(json.loads(frame), [])
    except WireError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise WireError(f"not a Jupyter message: {exc}") from None


def _pack_v1(message: Message) -> bytes:
    parts = [json.dumps(getattr(message, name)).encode() for name in _PARTS] + list(message.buffers)
    channel = message.channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(channel))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    table = [len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets)]
    return b"".join([*table, channel, *parts])


def _unpack_v1(frame: bytes) -> Message:
    count = int.from_bytes(frame[:8], "little")
    if count < 2 + len(_PARTS) or 8 * (count + 1) > len(frame):
        raise WireError("a v1 frame with too few parts")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    channel = frame[offsets[0] : offsets[1]].decode()
    parts = [frame[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
    fields = {name: json.loads(parts[i]) for i, name in enumerate(_PARTS)}
    return Message(channel, buffers=[bytes(p) for p in parts[len(_PARTS) :]], **fields)


def _unpack_legacy_binary(frame: bytes) -> Message:
    count = struct.unpack("!I", frame[:4])[0]
    offsets = [*struct.unpack("!" + "I" * count, frame[4 : 4 * (count + 1)]), None]
    pieces = [frame[start:stop] for start, stop in zip(offsets[:-1], offsets[1:], strict=True)]
    return _from_dict(json.loads(pieces[0].decode()), [bytes(p) for p in pieces[1:]])


def _from_dict(data: dict[str, Any], buffers: list[bytes]) -> Message:
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict):
        raise WireError("a frame without a message header")
    return Message(
        str(data.get("channel") or ""),
        data["header"],
        data.get("parent_header") or {},
        data.get("metadata") or {},
        data.get("content") or {},
        buffers,
    )
