"""Records through the real gateway: the client's X-Request-Id is stored beside Bastion's own
id (never as the key), and a PostgreSQL outage with hostile fields in flight ends with every
call recorded exactly once, poisoned records sanitised or quarantined with a logged reason."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from tests.asgi import asgi_request
from tests.conftest import sim_models
from tests.observability._records_support import TcpProxy, quarantined
from tests.store.conftest import PG_URL

import bastion
from bastion.auth import new_key
from bastion.gateway import LIBRARY_PRINCIPAL
from bastion.providers.base import Format
from bastion.store.sanitize import ID_MAX_CHARS

BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello"}]}


def _cfg(tmp: Path, store_url: str) -> dict[str, Any]:
    return {
        "store": {"url": store_url},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
    }


async def test_five_calls_with_one_client_request_id_leave_five_records(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(
        None, **_cfg(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    ) as gw:
        secret, key = new_key("t")
        await gw.store.create_key(key)
        app = bastion.server_app(gw)
        ids = []
        for _ in range(5):
            status, headers, _ = await asgi_request(
                app,
                "POST",
                "/v1/chat/completions",
                orjson.dumps(BODY),
                {"authorization": f"Bearer {secret}", "x-request-id": "client-dup-1"},
            )
            assert status == 200
            assert headers["x-client-request-id"] == "client-dup-1"
            ids.append(headers["x-request-id"])
        for hostile in ("x" * 8000, "bad\x01id"):
            status, headers, _ = await asgi_request(
                app,
                "POST",
                "/v1/chat/completions",
                orjson.dumps(BODY),
                {"authorization": f"Bearer {secret}", "x-request-id": hostile},
            )
            assert status == 200 and "x-client-request-id" not in headers
            ids.append(headers["x-request-id"])
        await gw.recorder.flush()
        records = {r.request_id: r for r in await gw.store.recent_calls(100)}
    assert len(set(ids)) == 7 and all(i.startswith("req_") for i in ids)
    assert set(records) == set(ids)
    assert [records[i].client_request_id for i in ids] == ["client-dup-1"] * 5 + [None, None]


async def _count(conn: asyncpg.Connection, schema: str, ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        f'SELECT request_id, count(*) FROM "{schema}".calls '
        "WHERE request_id = ANY($1::text[]) GROUP BY request_id",
        ids,
    )
    return {r[0]: r[1] for r in rows}


async def test_postgres_outage_with_hostile_records_loses_none_and_blocks_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    proxy = TcpProxy(5432)
    await proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?search_path={schema}"
    raw = orjson.dumps(BODY)

    async def call(headers: dict[str, str], body: bytes = raw) -> str:
        reply = await gw.handle(Format.OPENAI, body, headers, principal=LIBRARY_PRINCIPAL)
        assert reply.status == 200
        return reply.headers["x-request-id"]

    nul_body = orjson.dumps(
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "nul\x00in the prompt"}]}
    )
    long_id = "L" * 8000
    try:
        async with bastion.Gateway.from_config(None, **_cfg(tmp_path, url)) as gw:
            gw.recorder._retry = 0.2  # replay promptly for the test
            # a check constraint makes PostgreSQL itself refuse one kind of record
            await admin.execute(
                f'ALTER TABLE "{schema}".calls ADD CONSTRAINT no_poison '
                "CHECK (coalesce(feature, '') <> 'poison')"
            )
            ok = [await call({}) for _ in range(5)]
            await gw.recorder.flush()
            assert await _count(admin, schema, ok) == dict.fromkeys(ok, 1)

            await proxy.kill()  # the outage: every pooled connection is reset
            hostile: dict[str, str] = {}
            with caplog.at_level(logging.WARNING, "bastion.recorder"):
                t0 = time.monotonic()
                for i in range(30):
                    ok.append(await call({"x-request-id": f"dup-{i % 3}"}))
                hostile["nul_prompt"] = await call({}, nul_body)
                hostile["long_conversation"] = await call({"x-bastion-conversation": long_id})
                hostile["long_client_id"] = await call({"x-request-id": long_id})
                hostile["nul_feature"] = await call({"x-bastion-feature": "f\x00" + long_id})
                hostile["nul_prompt_version"] = await call({"x-bastion-prompt-version": "v\x00"})
                poison = [await call({"x-bastion-feature": "poison"}) for _ in range(2)]
                ok += [await call({}) for _ in range(30)]
                await gw.recorder.flush()
                assert gw.recorder.stats.spilled >= 60
                await asyncio.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))  # a 2.5 s outage
                await proxy.start()

                every = ok + list(hostile.values()) + poison
                good = ok + list(hostile.values())
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    counts = await _count(admin, schema, every)
                    if len(counts) >= len(good) and not gw.recorder.spill_path.exists():
                        break
                    await asyncio.sleep(0.1)
            assert gw.recorder.stats.dropped == 0
            q = quarantined(gw.recorder.quarantine_path)

        counts = await _count(admin, schema, every)
        assert counts == dict.fromkeys(good, 1)  # every call once, the poisoned ones too
        assert sorted(e["call"]["request_id"] for e in q) == sorted(poison)
        assert all("CheckViolation" in e["reason"] for e in q)
        for rid in poison:  # each skipped record named in a log line, with the reason
            assert any(
                rid in m and "quarantined" in m and "no_poison" in m for m in caplog.messages
            )
        assert any("unreachable" in m for m in caplog.messages)
        assert any("answers again" in m for m in caplog.messages)
        rows = {
            r["request_id"]: r
            for r in await admin.fetch(
                f"SELECT request_id, input_text, conversation_id, feature, prompt_version, "
                f'client_request_id, flags::text AS flags FROM "{schema}".calls '
                "WHERE request_id = ANY($1::text[])",
                list(hostile.values()),
            )
        }
        assert "\x00" not in rows[hostile["nul_prompt"]]["input_text"]
        assert len(rows[hostile["long_conversation"]]["conversation_id"]) == ID_MAX_CHARS
        assert rows[hostile["long_client_id"]]["client_request_id"] is None  # refused at the door
        assert rows[hostile["nul_feature"]]["feature"].startswith("f" + "L" * 10)
        assert "\x00" not in (rows[hostile["nul_prompt_version"]]["prompt_version"] or "")
        for name in ("nul_prompt", "long_conversation", "nul_feature"):
            assert "record_sanitized" in rows[hostile[name]]["flags"], name
            assert any(hostile[name] in m and "sanitised" in m for m in caplog.messages), name
        dup = await admin.fetch(
            f'SELECT client_request_id, count(*) FROM "{schema}".calls '
            "WHERE client_request_id LIKE 'dup-%' GROUP BY 1 ORDER BY 1"
        )
        assert [(r[0], r[1]) for r in dup] == [("dup-0", 10), ("dup-1", 10), ("dup-2", 10)]
    finally:
        await proxy.kill()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
