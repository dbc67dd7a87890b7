"""The stage ``bastion demo`` plays on: a real gateway on a free 127.0.0.1 port, and a client for it.

The gateway is the ASGI app ``bastion serve`` runs, under uvicorn, inside the demo's own
process: every incident then goes through what an app's SDK meets (keys, HTTP, errors in
the caller's format, ``/metrics``, the admin API), while the demo can still read the record
store, the log lines and what reached the simulated providers, to show the evidence. The
client is aiohttp (a runtime dependency; the official SDKs are only dev dependencies), so
the demo runs from the installed wheel. Config, records and counters live in a temporary
folder removed on exit (or one the user names to keep), and no environment variable changes
the stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
import yaml

from .auth import new_key
from .config import Config, load_config
from .gateway import Gateway
from .observability.access import ACCESS_LOGGER
from .observability.tracecontext import format_traceparent, new_id
from .providers.sim import RecordedRequest
from .safety.pii.guard import PiiLogFilter
from .server.app import create_app
from .server.serve import server_config
from .store.models import CallRecord

__all__ = [
    "CONFIG_NAME",
    "CUT",
    "CUT_FALLBACK",
    "CUT_SOLO",
    "LOOP",
    "LOOP_CAP_USD",
    "OUTAGE",
    "OUTAGE_FALLBACK",
    "DemoReply",
    "Stage",
    "demo_config",
    "open_stage",
]

START_TIMEOUT_S = 10.0
LOOP_CAP_USD = 0.05  # the agent feature's daily cap
# the simulator counts the requests of each deployment under its scenario name
LOOP, OUTAGE, OUTAGE_FALLBACK = "demo:loop", "demo:outage", "demo:outage-fallback"
CUT, CUT_FALLBACK, CUT_SOLO = "demo:cut", "demo:cut-fallback", "demo:cut-solo"
CALL_TIMEOUT_S = 20.0
SETTLE_TIMEOUT_S = 5.0
CONFIG_NAME = "bastion.yaml"


def _dep(provider: str, model: str, scenario: str, **headers: str) -> dict[str, Any]:
    """A deployment whose requests the simulator counts under ``scenario`` (faults in ``headers``)."""
    hs = {"x-sim-scenario": scenario} | {k.replace("_", "-"): v for k, v in headers.items()}
    return {"provider": provider, "model": model, "headers": hs}


def demo_config(tmp: Path) -> dict[str, Any]:
    """The demo app's config: one feature per incident, simulated Anthropic and OpenAI APIs.

    The providers are Anthropic and OpenAI kinds pointed at the in-process simulator
    (``sim://``), so each speaks only its own wire format and a failover between them is
    translated as it would be against the real APIs.
    """
    drafting = {"mode": "message", "message": "Drafting unavailable - please reply manually."}
    return {
        "server": {"host": "127.0.0.1", "port": 0, "key_cache_seconds": 0.5},
        "store": {"url": f"sqlite:///{tmp / 'demo.db'}"},
        "state": {
            "url": f"sqlite:///{tmp / 'demo-state.db'}",
            "settle_journal": str(tmp / "settle-journal"),
        },
        "observability": {
            "spill_path": str(tmp / "spill.jsonl"),
            "review_rate": 0.0,
            "quality_rate": 0.0,
        },
        "providers": {
            "anthropic": {"kind": "anthropic", "base_url": "sim://anthropic"},
            "openai": {"kind": "openai", "base_url": "sim://openai/v1"},
        },
        "models": {
            # the agent's model; long answers (200 tokens) make each loop turn cost
            "gpt-4.1": {"deployments": [_dep("openai", "gpt-4.1", LOOP, x_sim_reply_tokens="200")]},
            # checkout's model: Anthropic answers 500 for the whole demo; OpenAI backs it
            "claude-sonnet": {
                "deployments": [
                    _dep("anthropic", "claude-sonnet-4-5", OUTAGE, x_sim_fault="status:500"),
                    _dep("openai", "gpt-4.1", OUTAGE_FALLBACK),
                ]
            },
            # the chat stream: the first deployment drops the connection after 12 events
            "claude-chat": {
                "deployments": [
                    _dep("anthropic", "claude-opus-4-1", CUT, x_sim_fault="cut_after:12"),
                    _dep("anthropic", "claude-sonnet-4-5", CUT_FALLBACK),
                ]
            },
            # the same cut with nowhere to carry the stream on
            "gpt-4o-solo": {
                "deployments": [_dep("openai", "gpt-4o", CUT_SOLO, x_sim_fault="cut_after:12")]
            },
            "claude-haiku": {"deployments": [_dep("anthropic", "claude-haiku-4-5", "demo:haiku")]},
        },
        "features": {
            "default": {"deadline": 20},
            "agent-loop": {"daily_budget_usd": LOOP_CAP_USD},
            "checkout": {},
            "chat": {},
            "support-drafter": {"degraded": drafting},
            # the same drafter with documents only flagged: the control for the withheld one
            "support-drafter-unguarded": {"safety": {"injection_doc_action": "flag"}},
            # the seed: the scrub happens at the boundary, so the provider gets no card either
            "billing": {"pii_provider": True},
        },
        "cost": {
            "caps": {"global_daily_usd": 50.0},
            "provider_caps_usd": {"anthropic": 100.0, "openai": 100.0},  # set in their consoles
        },
        "reliability": {
            "retry": {"backoff_base": 0.01, "backoff_max": 0.05},
            "breaker": {"failure_threshold": 3, "min_calls": 100, "cooldown_seconds": 60},
            "kill_switch_poll_seconds": 0.25,
        },
        "simulator": {"obey_injections": True},
    }


@dataclass(slots=True)
class DemoReply:
    """One HTTP answer as the client got it; ``text`` is the answer's text (streams joined)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    text: str = ""
    stream_error: str | None = None  # an in-band error event ended the stream
    complete: bool = False  # the stream's final event arrived

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id") or _error_request_id(self.body) or "-"

    def json(self) -> Any:
        return orjson.loads(self.body)


def _error_request_id(body: bytes) -> str | None:
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        obj = orjson.loads(body)
        rid = obj.get("request_id") or (obj.get("error") or {}).get("request_id")
        return rid if isinstance(rid, str) else None
    return None


class _LineCollector(logging.Handler):
    """Keeps every formatted log line of the process (after the PII filter has scrubbed it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Stage:
    """The running gateway, its keys, and the calls, scrapes and lookups the incidents make."""

    def __init__(
        self,
        gateway: Gateway,
        url: str,
        session: aiohttp.ClientSession,
        app_key: str,
        admin_key: str,
        logs: _LineCollector,
        config_path: Path,
    ) -> None:
        self.gateway = gateway
        self.config_path = config_path
        self.url = url
        self.session = session
        self.app_key = app_key
        self.admin_key = admin_key
        self._logs = logs

    @property
    def log_lines(self) -> list[str]:
        """Every log line the gateway wrote so far, as a log file would hold it."""
        return list(self._logs.lines)

    @property
    def upstream(self) -> list[RecordedRequest]:
        """What reached the simulated providers, oldest first."""
        return self.gateway.simulator.requests

    def sent(self, scenario: str) -> int:
        """How many requests reached the deployment counted under ``scenario``."""
        return self.gateway.simulator.request_count(scenario)

    @staticmethod
    def new_trace() -> tuple[str, str]:
        """A fresh trace id and the ``traceparent`` that puts a call in it."""
        trace = new_id(16)
        return trace, format_traceparent(trace, new_id(8))

    async def call(
        self,
        api: str,
        body: Mapping[str, Any],
        *,
        feature: str,
        traceparent: str,
        user: str = "demo-user",
    ) -> DemoReply:
        """One call as an app's SDK makes it (``api``: "anthropic" or "openai")."""
        headers = {
            "content-type": "application/json",
            "x-bastion-feature": feature,
            "x-bastion-user": user,
            "traceparent": traceparent,
        }
        if api == "anthropic":
            path = "/v1/messages"
            headers |= {"x-api-key": self.app_key, "anthropic-version": "2023-06-01"}
        else:
            path = "/v1/chat/completions"
            headers["authorization"] = f"Bearer {self.app_key}"
        async with self.session.post(
            self.url + path, data=orjson.dumps(body), headers=headers
        ) as r:
            if not r.headers.get("content-type", "").startswith("text/event-stream"):
                raw = await r.read()
                hs = {k.lower(): v for k, v in r.headers.items()}
                return DemoReply(r.status, hs, raw, text=_answer_text(raw))
            return await _read_events(r)

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The admin API, with the demo's admin key."""
        data = None if body is None else orjson.dumps(body)
        headers = {"x-api-key": self.admin_key, "content-type": "application/json"}
        async with self.session.request(method, self.url + path, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw) if raw else None

    async def metric(self, name: str, **labels: str) -> str | None:
        """The ``/metrics`` line of series ``name`` carrying these labels, as Prometheus scrapes it."""
        async with self.session.get(
            self.url + "/metrics", headers={"x-api-key": self.admin_key}
        ) as r:
            text = (await r.text()) if r.status == 200 else ""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        for line in text.splitlines():
            head = line.split("{", 1)[0].split(" ", 1)[0]
            if head == name and all(w in line for w in want):
                return line
        return None

    async def settled(self, request_id: str) -> bool:
        """Wait until the call has finished on the gateway's side: its access line is written.

        A stream's client can read the last event before the gateway has run the call's
        after-hooks (record, metrics, access line, in that order), so evidence waits for it.
        """
        needle = f" {request_id} "
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not any(needle in line for line in self._logs.lines):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def records(self, trace_id: str) -> list[CallRecord]:
        """The stored records of one trace, oldest first (the record queue is flushed first)."""
        await self.gateway.recorder.flush()
        return await self.gateway.store.get_calls_by_trace(trace_id)

    async def record(self, trace_id: str, request_id: str) -> CallRecord | None:
        """One call's stored record, once the call has settled."""
        await self.settled(request_id)
        return next((r for r in await self.records(trace_id) if r.request_id == request_id), None)


def _answer_text(raw: bytes) -> str:
    """The text of a unary answer in either format ("" for an error or a tool call)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(obj, dict):
        return ""
    if isinstance(obj.get("content"), list):
        return "".join(b.get("text", "") for b in obj["content"] if isinstance(b, dict))
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return str((choices[0].get("message") or {}).get("content") or "")
    return ""


async def _read_events(r: aiohttp.ClientResponse) -> DemoReply:
    """An Anthropic or OpenAI event stream: its text, whether it ended, and any error event."""
    text: list[str] = []
    error: str | None = None
    complete = False
    buf = b""
    raw: list[bytes] = []
    with contextlib.suppress(aiohttp.ClientPayloadError):  # a cut reads as a short stream
        async for chunk in r.content.iter_any():
            raw.append(chunk)
            buf += chunk.replace(b"\r\n", b"\n")
            *events, buf = buf.split(b"\n\n")
            for event in events:
                data = b"".join(
                    line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
                )
                if data == b"[DONE]":
                    complete = True
                    continue
                with contextlib.suppress(orjson.JSONDecodeError):
                    obj = orjson.loads(data)
                    if not isinstance(obj, dict):
                        continue
                    if obj.get("type") == "error" or "error" in obj:
                        err = obj.get("error") or {}
                        error = str(err.get("message") if isinstance(err, dict) else err)
                    elif obj.get("type") == "message_stop":
                        complete = True
                    elif obj.get("type") == "content_block_delta":
                        text.append(str((obj.get("delta") or {}).get("text") or ""))
                    elif obj.get("choices"):
                        delta = obj["choices"][0].get("delta") or {}
                        text.append(str(delta.get("content") or ""))
    return DemoReply(
        r.status,
        {k.lower(): v for k, v in r.headers.items()},
        b"".join(raw),
        text="".join(text),
        stream_error=error,
        complete=complete and error is None,
    )


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C must stop the demo, not only its server.

    uvicorn's handler would swallow the first SIGINT and shut the gateway down under the
    incidents still running; without it, ``asyncio.run`` cancels the demo and every context
    manager here cleans up (server, stores, temporary folder).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def _captured_logs() -> Any:
    """Collect the process's log lines, scrubbed the way ``bastion serve`` scrubs its handlers.

    Nothing is printed: the demo shows its own progress. The access logger does not
    propagate (its lines are whole), so it gets the collector directly.
    """
    collector = _LineCollector()
    root, access = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    saved = (root.level, access.level, access.propagate)
    root.addHandler(collector)
    access.addHandler(collector)
    root.setLevel(logging.INFO)
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        access.removeHandler(collector)
        root.setLevel(saved[0])
        access.setLevel(saved[1])
        access.propagate = saved[2]


@contextlib.contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    """A temporary folder removed on exit, or ``keep`` (created; it must hold no demo yet)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
            yield Path(tmp)
        return
    keep = keep.resolve()
    if (keep / CONFIG_NAME).exists():
        raise FileExistsError(f"{keep} already holds a demo ({CONFIG_NAME}): pick a new folder")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


@contextlib.asynccontextmanager
async def open_stage(edit: Any = None, *, keep: Path | None = None) -> AsyncIterator[Stage]:
    """Start the gateway on a free port with the demo config (``edit`` may change its data first).

    Its config, records and counters live in a temporary folder, or in ``keep``, left in place
    so the evidence can be looked up afterwards (``bastion trace ID --config keep/bastion.yaml``).
    """
    with _folder(keep) as tmp, _captured_logs() as logs:
        data = demo_config(tmp)
        if edit is not None:
            edit(data)
        path = tmp / CONFIG_NAME
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cfg: Config = load_config(path, env={})  # the file alone: no BASTION__* variable applies
        gateway = Gateway(cfg)
        logs.addFilter(PiiLogFilter(gateway.scrubber))  # as serve.install_log_scrubbing does
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = _Server(server_config(create_app(gateway), cfg, host="127.0.0.1", port=port))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while not server.started:
                    if task.done():
                        task.result()  # start-up failed: raise its error
                        raise RuntimeError("the demo gateway stopped during start-up")
                    await asyncio.sleep(0.01)
            app_secret, app_rec = new_key("demo-app", roles=("end_users",))
            admin_secret, admin_rec = new_key("demo-admin", roles=("admin",))
            await gateway.store.create_key(app_rec)
            await gateway.store.create_key(admin_rec)
            timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                yield Stage(
                    gateway,
                    f"http://127.0.0.1:{port}",
                    session,
                    app_secret,
                    admin_secret,
                    logs,
                    path,
                )
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=START_TIMEOUT_S)
            sock.close()
