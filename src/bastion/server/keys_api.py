"""Keys as a product over HTTP: list, create, change and revoke keys, and spend per key or group.

    GET   /admin/api/keys[?all=1]      keys (never a secret or hash) with today's and this
                                       month's spend each
    POST  /admin/api/keys              {"name", "feature"?, "user"?, "roles"?, limits...}
                                       -> the key and its secret, shown this once
    PATCH /admin/api/keys              {"id", limits...} or {"id", "revoked": true}
    GET   /admin/api/keys/spend?by=&days=  spend by key, user, team, model or feature

Every route needs the admin key (the dashboard's transport checks it before any body is
read). Limits are validated by ``auth.with_fields``, the same validator the CLI uses. A change
is seen at once on this replica and within the key cache time on the others.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..auth import KEY_FIELDS, iso_utc, new_key, with_fields
from ..errors import InvalidRequest, NotFound
from ..gateway import Gateway
from ..spend import MAX_DAYS, SpendBy, key_spend, last_days, spend_rows
from ..store import KeyRecord
from .dashboard_api import Query, int_param

__all__ = ["create_key", "key_json", "key_routes", "list_keys", "spend", "update_key"]

Body = dict[str, Any]
_NAME_MAX: Final = 100
_CREATE_ONLY: Final = ("name", "feature", "user", "roles")
_BY: Final[tuple[SpendBy, ...]] = ("key", "user", "team", "model", "feature")


def key_json(k: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API shows it: everything but its hash (the secret is never stored)."""
    lim = k.limits
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "feature": k.feature,
        "user": k.user,
        "roles": list(k.roles),
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "status": "revoked" if k.revoked else ("expired" if lim.expired(now) else "active"),
        "daily_usd": lim.daily_usd,
        "monthly_usd": lim.monthly_usd,
        "rpm": lim.rpm,
        "tpm": lim.tpm,
        "models": list(lim.models),
        "expires_at": lim.expires_at,
        "expires": iso_utc(lim.expires_at),
        "team": k.team,
        "owner": k.owner,
    }


def _optional_text(body: Body, name: str) -> str | None:
    v = body.get(name)
    if v is None or v == "":
        return None
    if not isinstance(v, str) or len(v) > _NAME_MAX:
        raise InvalidRequest(f"{name}: must be text of at most {_NAME_MAX} characters", param=name)
    return v.strip() or None


async def list_keys(gw: Gateway, q: Query) -> dict[str, Any]:
    """Keys oldest first, with their spend in the windows of their budgets."""
    everything = q.get("all", ["0"])[-1] in ("1", "true")
    keys = await gw.store.list_keys(include_revoked=everything)
    spent = await key_spend(gw.store, gw.config.cost.timezone)
    now = time.time()
    rows = []
    for k in keys:
        s = spent["keys"].get(k.id, {})
        rows.append(
            {
                **key_json(k, now),
                "today_usd": s.get("today_usd", 0.0),
                "month_usd": s.get("month_usd", 0.0),
            }
        )
    return {
        "day": spent["day"],
        "month": spent["month"],
        "timezone": gw.config.cost.timezone,
        "keys": rows,
    }


async def create_key(gw: Gateway, body: Body) -> dict[str, Any]:
    """Mint a key with its limits; the answer holds the secret, which is never shown again."""
    unknown = sorted(set(body) - set(_CREATE_ONLY) - set(KEY_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", param=unknown[0])
    name = _optional_text(body, "name")
    if name is None:
        raise InvalidRequest("name: required", param="name")
    roles = body.get("roles") or []
    if isinstance(roles, str):
        roles = roles.split(",")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidRequest("roles: must be a list of role names", param="roles")
    secret, record = new_key(
        name,
        feature=_optional_text(body, "feature"),
        user=_optional_text(body, "user"),
        roles=tuple(r.strip() for r in roles if r.strip()),
    )
    fields = {k: v for k, v in body.items() if k in KEY_FIELDS}
    record = with_fields(record, fields, gw.config.cost.timezone)
    await gw.store.create_key(record)
    return {"key": key_json(record, time.time()), "secret": secret}


async def update_key(gw: Gateway, body: Body) -> dict[str, Any]:
    """Change an active key's limits or metadata, or revoke it (``"revoked": true``)."""
    kid = body.get("id")
    if not isinstance(kid, str) or not kid:
        raise InvalidRequest("id: required (the key's id)", param="id")
    current = await gw.store.get_key(kid)
    if current is None or current.revoked:
        raise NotFound(f"no active key with id {kid!r}")
    rest = {k: v for k, v in body.items() if k != "id"}
    revoke = rest.pop("revoked", None)
    if revoke is not None and revoke is not True:
        raise InvalidRequest(
            "revoked: only true is accepted (a revoked key stays revoked)", param="revoked"
        )
    if revoke:
        if rest:
            raise InvalidRequest("revoke alone: send only id and revoked", param="revoked")
        await gw.store.revoke_key(kid)
        gw.keys.invalidate()
        after = await gw.store.get_key(kid)
        return {"key": key_json(after or current, time.time())}
    if not rest:
        raise InvalidRequest(f"nothing to change: send one of {', '.join(KEY_FIELDS)}")
    updated = with_fields(current, rest, gw.config.cost.timezone)
    if not await gw.store.update_key(updated):
        raise NotFound(f"no active key with id {kid!r}")
    gw.keys.invalidate()
    return {"key": key_json(updated, time.time())}


async def spend(gw: Gateway, q: Query) -> dict[str, Any]:
    """Spend by key, user, team, model or feature over the last ``days`` days (ledger)."""
    by = q.get("by", ["key"])[-1]
    if by not in _BY:
        raise InvalidRequest(f"by: must be one of {', '.join(_BY)}", param="by")
    days = int_param(q, "days", 1, 1, MAX_DAYS)
    window = last_days(days, gw.config.cost.timezone)
    rows = await spend_rows(gw.store, by, window)
    return {
        "by": by,
        "from": window[-1],
        "to": window[0],
        "timezone": gw.config.cost.timezone,
        "rows": [r.as_json() for r in rows],
        "total_usd": sum(r.spend_usd for r in rows),
    }


Api = Callable[[Callable[[Query], Awaitable[dict[str, Any]]]], Any]
Post = Callable[[Callable[[Body], Awaitable[dict[str, Any]]]], Any]


def key_routes(gw: Gateway, api: Api, post: Post) -> dict[tuple[str, str], Any]:
    """The routes, wrapped by the dashboard's admin-checking transport (``api`` and ``post``)."""

    async def _list(q: Query) -> dict[str, Any]:
        return await list_keys(gw, q)

    async def _create(b: Body) -> dict[str, Any]:
        return await create_key(gw, b)

    async def _update(b: Body) -> dict[str, Any]:
        return await update_key(gw, b)

    async def _spend(q: Query) -> dict[str, Any]:
        return await spend(gw, q)

    return {
        ("GET", "/admin/api/keys"): api(_list),
        ("POST", "/admin/api/keys"): post(_create),
        ("PATCH", "/admin/api/keys"): post(_update),
        ("GET", "/admin/api/keys/spend"): api(_spend),
    }
