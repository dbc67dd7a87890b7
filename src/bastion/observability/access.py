"""One access line per call, every status included: the serve terminal shows what happened.

A call that ran (answered, refused by a guard, failed upstream) is logged by ``AccessGuard``
after it finished, from the call itself; a request refused before it became a call (no key, no
such route, a body that is not JSON) is logged by ``AccessLog.refusal``. Lines go to the
``bastion.access`` logger at INFO, already rendered in the configured format (``text`` for a
person, ``json`` for a log pipeline), so the PII filter that every handler of a serving process
carries (``serve.install_log_scrubbing``) scrubs the whole line, whatever its format.

Given the gateway's scrubber (``AccessLog(scrub=...)``), the access log scrubs each value a
client or an operator chose (key and user names, feature, model, deployment, method, path,
flags, the error and its reason) itself, remembering the clean form of values it has seen (a
bounded map per ``AccessLog``: the same user, key and model names recur on every call), and
marks its records ``SCRUBBED_ATTR`` so the handler's filter does not scan the line again. The
whole-line scan cost more than everything else an access line costs (issue 16); what it read
besides those values is Bastion's own: the time, the request id it minted, status, numbers.

Nothing here reads a request or answer body: an access line holds ids, names, numbers and the
refusal's reason, never content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ..call import Call
from ..config import LogFormat
from ..errors import BastionError

ACCESS_LOGGER = "bastion.access"
# set (True) on an access record whose values were scrubbed one by one: the log filter skips it
SCRUBBED_ATTR = "bastion_scrubbed"
_REASON_CHARS = 200
_MEMO_MAX = 4096

Clean = Callable[[str], str]


def _same(value: str) -> str:
    return value


def _first_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, BastionError) else type(exc).__name__
    return text.splitlines()[0][:_REASON_CHARS] if text else type(exc).__name__


def _one_line(value: str) -> str:
    """A field as it may appear in a text line: control characters escaped, so no value a
    client chose (a user id, a model name) can end the line and forge another."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in value)


def _iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _flag_names(call: Call) -> list[str]:
    names = sorted(k for k, v in call.flags.items() if v not in (None, False, "", [], {}))
    for f in getattr(call, "findings", ()):
        label = getattr(f, "detector", None)
        if isinstance(label, str) and label not in names:
            names.append(label)
    return names


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """What one access line says; ``None`` fields are left out of the line."""

    ts: float
    request_id: str | None
    status: int
    method: str = "POST"
    path: str | None = None
    key: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None
    deployment: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int | None = None
    error: str | None = None
    reason: str | None = None
    flags: tuple[str, ...] = ()

    def as_dict(self, clean: Clean | None = None) -> dict[str, Any]:
        """The JSON line's object; ``clean`` applied to every value a client or operator chose."""
        out: dict[str, Any] = {"ts": _iso_ms(self.ts)}
        for name in self.__slots__:
            if name == "ts":
                continue
            v = getattr(self, name)
            if v is None or v == ():
                continue
            if clean is not None and name in _CHOSEN:
                v = tuple(map(clean, v)) if isinstance(v, tuple) else clean(v)
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    def text(self, clean: Clean | None = None) -> str:
        """``time request status key user feature model→deployment tokens cost latency ttft flags``;
        ``clean`` applied to every value a client or operator chose."""
        # read from the fields, not from as_dict(): this runs once per call on the hot path
        c = _same if clean is None else clean
        parts = [_iso_ms(self.ts), _one_line(self.request_id or "-"), str(self.status)]
        if self.key is not None:
            parts.append(f"key={_one_line(c(self.key))}")
        if self.user is not None:
            parts.append(f"user={_one_line(c(self.user))}")
        if self.feature is not None:
            parts.append(f"feature={_one_line(c(self.feature))}")
        if self.model is not None:
            model = _one_line(c(self.model))
            parts.append(model if self.deployment is None else f"{model}→{c(self.deployment)}")
        elif self.path is not None:
            parts.append(f"{c(self.method)} {_one_line(c(self.path))}")
        if self.input_tokens is not None or self.output_tokens is not None:
            parts.append(f"tokens={self.input_tokens or 0}/{self.output_tokens or 0}")
        if self.cost_usd is not None:
            parts.append(f"cost=${self.cost_usd:.6f}")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.0f}ms")
        if self.ttft_ms is not None:
            parts.append(f"ttft={self.ttft_ms:.0f}ms")
        if self.attempts is not None and self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        if self.flags:
            parts.append("flags=" + ",".join(map(c, self.flags)))
        if self.error is not None:
            parts.append(f"error={c(self.error)}")
        if self.reason is not None:
            parts.append(f'reason="{_one_line(c(self.reason))}"')
        return " ".join(parts)

    @classmethod
    def of_call(cls, call: Call, error: BaseException | None, now: float) -> AccessEntry:
        status = call.status or (200 if error is None else 500)
        ended = call.ended if call.ended is not None else now
        u = call.usage
        return cls(
            ts=call.wall_started,
            request_id=call.request_id,
            status=status,
            key=call.principal.name,
            user=call.user_id,
            feature=call.feature or "default",
            model=call.requested_model or None,
            deployment=call.deployment,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=call.cost_usd,
            latency_ms=max(0.0, (ended - call.started) * 1000.0),
            ttft_ms=call.ttft_ms,
            attempts=len(call.attempts),
            error=call.error_type if error is not None else None,
            reason=_first_line(error) if error is not None else None,
            flags=tuple(_flag_names(call)),
        )


# the fields whose values a client or an operator chose (the rest are Bastion's own)
_CHOSEN: Final = frozenset(
    {"method", "path", "key", "user", "feature", "model", "deployment", "error", "reason", "flags"}
)


class AccessLog:
    """Renders access entries in one format and hands them to the ``bastion.access`` logger.

    With ``scrub`` (the gateway's ``Scrubber.redact``), chosen values are scrubbed here, each
    once per distinct value, and the line is marked scrubbed (see the module docstring).
    """

    def __init__(
        self,
        fmt: LogFormat = "text",
        logger: logging.Logger | None = None,
        *,
        scrub: Clean | None = None,
        memo_max: int = _MEMO_MAX,
    ) -> None:
        self.format: LogFormat = fmt
        self._log = logger or logging.getLogger(ACCESS_LOGGER)
        self._scrub = scrub
        self._memo: dict[str, str] = {}
        self._memo_max = memo_max

    def _clean(self, value: str) -> str:
        """``scrub(value)``, remembered: bounded, forgotten all at once when full."""
        out = self._memo.get(value)
        if out is None:
            out = value if self._scrub is None else self._scrub(value)
            if len(self._memo) >= self._memo_max:
                self._memo.clear()
            self._memo[value] = out
        return out

    def render(self, entry: AccessEntry) -> str:
        clean = None if self._scrub is None else self._clean
        if self.format == "json":
            return orjson.dumps(entry.as_dict(clean)).decode()
        return entry.text(clean)

    def enabled(self) -> bool:
        """Whether access lines are logged at all (``log_level`` warning turns them off)."""
        return self._log.isEnabledFor(logging.INFO)

    def emit(self, entry: AccessEntry) -> None:
        log = self._log
        if not log.isEnabledFor(logging.INFO):
            return
        if self._scrub is None:
            log.info("%s", self.render(entry))
            return
        # the record made directly (no caller lookup: the line says where it is from)
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, self.render(entry), (), None, "emit"
        )
        setattr(record, SCRUBBED_ATTR, True)
        log.handle(record)

    def refusal(
        self,
        *,
        ts: float,
        method: str,
        path: str,
        status: int,
        exc: BaseException,
        request_id: str | None = None,
    ) -> None:
        """A request refused before it became a call (no key, no route, unreadable body)."""
        self.emit(
            AccessEntry(
                ts=ts,
                request_id=request_id,
                status=status,
                method=method,
                path=path[:200],
                error=type(exc).__name__,
                reason=_first_line(exc),
            )
        )


class AccessGuard:
    """After-phase only: one line per finished call; a bug here never fails the call."""

    name = "access_log"
    after_send = True  # only reads the finished call: may run once the response is out

    def __init__(self, access: AccessLog) -> None:
        self._access = access

    async def after(self, call: Call, error: BaseException | None) -> None:
        if not self._access.enabled():
            return  # no line would be written: no entry is built either
        try:
            self._access.emit(AccessEntry.of_call(call, error, time.monotonic()))
        except Exception:
            logging.getLogger(__name__).exception("access log: call %s", call.request_id)


class JsonLogFormatter(logging.Formatter):
    """Every other log line as one JSON object, for ``--log-format json``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out).decode()


def configure_logging(level: str, fmt: LogFormat) -> None:
    """A serving process's logging: stderr, in ``fmt``, access lines unprefixed (already rendered)."""
    lvl = level.upper()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonLogFormatter()
            if fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(handler)
    root.setLevel(lvl)
    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False  # its lines are whole already: no second prefix
    if not access.handlers:
        line = logging.StreamHandler()
        line.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(line)
    access.setLevel(lvl)
