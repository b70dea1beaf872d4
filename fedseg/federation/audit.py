"""What the server received: ``RUN/messages.jsonl``, one line per reply (record names, kinds and keys; no values).

For the privacy officer (and the privacy tests): every field that reached the server, by site,
message type and round, to hold against ``fedseg.privacy.release``. Written by ``AuditedGrid``,
which wraps Flower's ``Grid`` by duck typing (the library never imports Flower).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedseg.files import append_jsonl

MESSAGES_FILE = "messages.jsonl"


def describe_reply(reply: Any) -> dict[str, Any]:
    """Type, round, sender and every record's kind and keys of one reply."""
    error = reply.has_error()
    content = {} if error else reply.content
    records = {name: {"kind": type(record).__name__, "keys": sorted(record.keys())} for name, record in content.items()}
    site = content["site"].get("site") if "site" in content else None
    return {
        "type": reply.metadata.message_type,
        "round": reply.metadata.group_id,
        "node": reply.metadata.src_node_id,
        "site": site,
        "records": records,
        "error": reply.error.reason if error else None,
    }


class AuditedGrid:
    """A Flower ``Grid`` that appends a description of every reply to ``path``; all else is the grid's."""

    def __init__(self, grid: Any, path: Path) -> None:
        self._grid, self.path = grid, Path(path)

    def send_and_receive(self, messages: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        for reply in replies:
            append_jsonl(self.path, describe_reply(reply))
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
