"""Attack (issue #16): Redis stalls while an idempotent call claims its key, on 2 workers.

The claim's script times out in the gateway (the caller gets a 503, in its own format) but is
still in Redis's socket buffer, and runs when Redis resumes: a claim nobody runs. The caller
then retries with the same Idempotency-Key, which is what the key is for. That retry must run
the request (once), not wait 10 s for a 409 and stay locked out for the claim's whole lock
(the feature's deadline + 30 s). A third send replays the retry's answer.

Real processes: a private redis-server on a free port (stopped with SIGSTOP, never the shared
one), ``bastion serve --workers 2`` on it, raw HTTP on fresh connections (either worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from tests.server._attack16_support import private_redis as _private_redis
from tests.server._attack16_support import workers_on


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with _private_redis() as server:
        yield server


@pytest.fixture
def gateway(
    tmp_path: Path, private_redis: tuple[int, subprocess.Popen[bytes]]
) -> Iterator[tuple[str, str]]:
    with workers_on(tmp_path, private_redis[0]) as gw:
        yield gw


def _send(url: str, key: str, idem: str, *, openai: bool) -> httpx.Response:
    if openai:
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {key}"}
        body: dict[str, Any] = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    else:
        path = "/v1/messages"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body = {"model": "claude-haiku-5-5", "max_tokens": 20}
        body["messages"] = [{"role": "user", "content": "hi"}]
    headers["idempotency-key"] = idem
    with httpx.Client(base_url=url, timeout=40) as client:  # its own connection
        return client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("openai", [False, True], ids=["anthropic", "openai"])
def test_a_claim_made_while_redis_stalls_does_not_lock_out_the_callers_retry(
    gateway: tuple[str, str], private_redis: tuple[int, subprocess.Popen[bytes]], openai: bool
) -> None:
    url, key = gateway
    _, redis_proc = private_redis
    for _ in range(12):  # warm: each worker holds an open Redis connection, so the claim's
        # script itself is what gets sent into the stall (a fresh connection stalls earlier)
        assert _send(url, key, uuid.uuid4().hex, openai=openai).status_code == 200
    idem = uuid.uuid4().hex
    os.kill(redis_proc.pid, signal.SIGSTOP)
    try:
        first = _send(url, key, idem, openai=openai)
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
    assert first.status_code == 503, first.text
    err = first.json()["error"]
    assert (err.get("code"), err["type"]) == (
        ("state_unavailable", "server_error") if openai else (None, "api_error")
    ), err

    started = time.monotonic()
    retry = _send(url, key, idem, openai=openai)
    waited = time.monotonic() - started
    assert retry.status_code == 200, (retry.status_code, retry.text, waited)
    assert retry.headers.get("x-bastion-idempotent-replay") is None  # it ran, as the first did not
    assert waited < 5.0, waited

    again = _send(url, key, idem, openai=openai)
    assert again.status_code == 200, again.text
    assert again.headers.get("x-bastion-idempotent-replay") == "true"
    assert again.json()["id"] == retry.json()["id"]
