"""The admin API: kill switch and status, behind a key with the ``admin`` role (or the admin env key)."""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

import orjson

from ..auth import key_from_headers
from ..call import Principal
from ..errors import BastionError, InvalidRequest, PermissionDenied
from ..gateway import Gateway
from ..reliability.killswitch import PREFIX, set_kill, switches_on, unconfigured_note


async def admin_principal(gateway: Gateway, headers: dict[str, str]) -> Principal:
    """The admin env key, or a virtual key holding the ``admin`` role."""
    secret = key_from_headers(headers)
    env_key = os.environ.get(gateway.config.server.admin_key_env)
    if secret and env_key and hmac.compare_digest(secret, env_key):
        return Principal(key_id="admin-env", name="admin", roles=("admin",))
    p = await gateway.keys.resolve(secret)
    if "admin" not in p.roles:
        raise PermissionDenied("this key lacks the admin role")
    return p


async def kill_status(gateway: Gateway) -> dict[str, Any]:
    """Each switch that is on, with who turned it on and when (ISO 8601 UTC and how long ago)."""
    now = time.time()
    out: dict[str, Any] = {}
    for switch, meta in await switches_on(gateway.state):
        out[switch.name] = {**switch.as_json(now), "meta": meta}
    return {"switches": out}


async def kill_toggle(gateway: Gateway, principal: Principal, raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
        raise InvalidRequest("on: required boolean", param="on")
    feature = body.get("feature")
    key_id = body.get("key_id")
    for name, v in (("feature", feature), ("key_id", key_id)):
        if v is not None and not isinstance(v, str):
            raise InvalidRequest(f"{name}: must be a string", param=name)
    who = str(body.get("who") or principal.name)
    via = f"admin API (key {principal.key_id})"
    key = await set_kill(
        gateway.state, body["on"], who=who, feature=feature, key_id=key_id, via=via
    )
    gateway.kill_switch.invalidate()
    out: dict[str, Any] = {"switch": key.removeprefix(PREFIX), "on": body["on"], "who": who}
    if feature and feature not in gateway.config.features:
        out["note"] = unconfigured_note(feature)
    return out


__all__ = ["BastionError", "admin_principal", "kill_status", "kill_toggle"]
