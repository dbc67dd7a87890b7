"""JSON as other servers write it: ``json.dumps`` defaults instead of the providers' compact form.

The providers write compact JSON (``"choices":[]``), and so does the simulator; many
OpenAI-compatible servers write Python's default style (``"choices": []``, non-ASCII
escaped). A client or gateway that matches bytes instead of parsing works against the
first and breaks on the second, so the ``spaced_json`` fault rewrites every JSON payload
(SSE ``data:`` lines and whole bodies) in that style, keys in the same order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from .result import Frame

_DATA = b"data: "


def spaced(data: bytes) -> bytes:
    """One JSON document re-written with ``json.dumps``' default separators and escaping."""
    return json.dumps(json.loads(data)).encode()


def spaced_frames(frames: Sequence[Frame]) -> list[Frame]:
    """Every JSON ``data:`` line of these SSE frames re-written; ``[DONE]`` and names untouched."""
    return [dataclasses.replace(f, data=_spaced_event(f.data)) for f in frames]


def _spaced_event(event: bytes) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(_DATA + b"{"):  # not [DONE]
            lines[i] = _DATA + spaced(line[len(_DATA) :])
    return b"\n".join(lines)
