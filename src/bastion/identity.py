"""Who a call is counted as: the key decides, never a value the client merely states.

A key bound to a user fixes the user. A client-supplied end-user id (``X-Bastion-User``, the
OpenAI ``user`` field, Anthropic ``metadata.user_id``) is honoured only for keys with the
``end_users`` role, and is recorded as the end user; it becomes the subject of per-user caps and
rate limits only when the operator sets ``cost.caps.end_user_caps``, and then scoped to the key,
so one key's callers can never touch another key's counters. A call with no user is counted as
its key's anonymous user: the per-user cap is never skipped.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from typing import Any

from .call import Principal
from .dialects import dialect_for
from .providers.base import Format

__all__ = ["END_USERS_ROLE", "normalize_user_id", "resolve_user"]

END_USERS_ROLE = "end_users"
_MAX = 128


def normalize_user_id(value: object) -> str | None:
    """One spelling per id on every path: NFC, no control or format characters, ≤ 128 chars.

    A longer id keeps a prefix and a digest of the whole, so two long ids stay distinct.
    """
    if not isinstance(value, str):
        return None
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    text = text.strip()
    if not text:
        return None
    if len(text) > _MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        text = f"{text[: _MAX - 17]}~{digest}"
    return text


def resolve_user(
    principal: Principal,
    fmt: Format,
    body: dict[str, Any],
    headers: Mapping[str, str],
    *,
    end_user_caps: bool,
) -> tuple[str | None, str]:
    """(the user recorded for the call, the subject its per-user caps and limits count)."""
    bound = normalize_user_id(principal.user)
    if bound is not None:
        return bound, f"user:{bound}"
    anonymous = f"key:{principal.key_id}/anonymous"
    if END_USERS_ROLE not in principal.roles:
        return None, anonymous
    claimed = normalize_user_id(headers.get("x-bastion-user") or dialect_for(fmt).end_user(body))
    if claimed is None:
        return None, anonymous
    return claimed, (f"key:{principal.key_id}/{claimed}" if end_user_caps else anonymous)
