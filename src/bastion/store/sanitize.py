"""Making a record storable on every backend, so a hostile field can never stop a record landing.

What a client sends reaches the call record (user ids, headers, prompts, guard verdicts), and
each backend refuses something different: PostgreSQL rejects NUL in text and ``\\u0000`` in JSONB,
index entries over 2,704 bytes (an 8,000-character id) and integers past BIGINT; SQLite turns
NaN into NULL (then a NOT NULL failure) and refuses integers past 64 bits; neither driver can
encode a lone surrogate. One bad field used to fail its whole batch. Here each field is made
safe for its column instead, the same way on both backends:

- NUL characters are removed from every string (JSON ones included);
- lone surrogates become U+FFFD (a valid pair written as two code points is joined);
- id-like text is cut to ``ID_MAX_CHARS`` (at most 2,048 UTF-8 bytes, under the index limit)
  and prompt/answer text to ``BODY_MAX_CHARS``; a ``request_id`` that must change also gets
  a hash of the whole id, so two hostile ids never collapse into one row;
- non-finite numbers become 0 (or None where the column allows), integers are clamped to the
  column's range, and values of the wrong type (a decoded spill line of an older release) are
  coerced or defaulted.

A record that needed none of this is returned as the same object, so the common case costs a
scan and no copy. The names of the fields that changed are returned for the log line and kept
in ``flags["record_sanitized"]``, so the stored record says it was altered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson

from bastion.findings import Finding, findings_of
from bastion.store.models import CallRecord, LedgerEntry

__all__ = [
    "BODY_MAX_CHARS",
    "ID_MAX_CHARS",
    "SANITIZED_FLAG",
    "clean_text",
    "sanitize_call",
    "sanitize_entry",
]

ID_MAX_CHARS: Final = 512
BODY_MAX_CHARS: Final = 1_000_000
SANITIZED_FLAG: Final = "record_sanitized"

_INT4: Final = (-(2**31), 2**31 - 1)
_INT8: Final = (-(2**63), 2**63 - 1)
_JSON_OPTS: Final = orjson.OPT_NON_STR_KEYS
_BODY_FIELDS: Final = frozenset({"input_text", "output_text"})
_INT4_FIELDS: Final = frozenset({"status", "attempts"})

_R = TypeVar("_R", CallRecord, LedgerEntry)


def _kinds(cls: type[Any]) -> dict[str, str]:
    """Each field's column kind, read once from the dataclass annotations."""
    kinds: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        t = str(f.type)
        optional = "None" in t
        if t.startswith("dict"):
            kind = "json"
        elif t.startswith("tuple[Finding"):
            kind = "findings"
        elif t.startswith("bool"):
            kind = "bool"
        elif t.startswith("int"):
            kind = "int4" if f.name in _INT4_FIELDS else "int8"
        elif t.startswith("float"):
            kind = "float"
        elif f.name in _BODY_FIELDS:
            kind = "body"
        else:  # str and ApiFormat (the Format StrEnum, a str)
            kind = "id"
        kinds[f.name] = kind + ("?" if optional else "")
    return kinds


_CALL_KINDS: Final = _kinds(CallRecord)
_LEDGER_KINDS: Final = _kinds(LedgerEntry)


def clean_text(s: str, limit: int) -> str:
    """Drop NUL, replace lone surrogates, cut to ``limit`` characters."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s if len(s) <= limit else s[:limit]


def _text_ok(s: str, limit: int) -> bool:
    if len(s) > limit or "\x00" in s:
        return False
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_ok(value: Any) -> bool:
    """Whether the store can write this as JSON text as it is (what ``dump_json`` does)."""
    if not isinstance(value, dict):
        return False
    try:
        raw = orjson.dumps(value, default=str, option=_JSON_OPTS)
    except (orjson.JSONEncodeError, TypeError):
        return False
    return b"\\u0000" not in raw and len(raw) <= BODY_MAX_CHARS


def _clean_json(value: Any, depth: int = 0) -> Any:
    """Rebuild a JSON value from what survives every store: str keys, clean text, safe numbers."""
    if depth > 64:
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT8[0] <= value <= _INT8[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value, BODY_MAX_CHARS)
    if isinstance(value, dict):
        return {
            clean_text(str(k), ID_MAX_CHARS): _clean_json(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_json(v, depth + 1) for v in value]
    return clean_text(str(value), BODY_MAX_CHARS)


def _fix(kind: str, value: Any, name: str) -> tuple[bool, Any]:
    """(changed, safe value) for one field of one kind."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return False, None
        return True, {"id": "", "body": "", "int4": 0, "int8": 0, "float": 0.0, "bool": False}.get(
            base, {}
        )
    if base in ("id", "body"):
        limit = BODY_MAX_CHARS if base == "body" else ID_MAX_CHARS
        if isinstance(value, str):
            if _text_ok(value, limit):
                return False, value
            if name == "request_id":
                return True, _unique_id(value)
            return True, clean_text(value, limit)
        return True, clean_text(str(value), limit)
    if base == "bool":
        return (False, value) if isinstance(value, bool) else (True, bool(value))
    if base in ("int4", "int8"):
        lo, hi = _INT4 if base == "int4" else _INT8
        if isinstance(value, int) and not isinstance(value, bool):
            return (False, value) if lo <= value <= hi else (True, max(lo, min(hi, value)))
        try:
            n = int(value)
        except (TypeError, ValueError, OverflowError):
            return True, 0
        return True, max(lo, min(hi, n))
    if base == "float":
        if isinstance(value, float) and math.isfinite(value):
            return False, value
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            f = math.nan
        if math.isfinite(f):
            return True, f
        return True, (None if optional else 0.0)
    if base == "findings":
        return _fix_findings(value)
    # json
    if _json_ok(value):
        return False, value
    cleaned = _clean_json(value if isinstance(value, dict) else {"value": value})
    return True, cleaned if isinstance(cleaned, dict) else {}


def _fix_findings(value: Any) -> tuple[bool, tuple[Finding, ...]]:
    """Findings with text every store takes (their reasons are rule ids already)."""
    found = findings_of(value) if isinstance(value, list | tuple) else ()
    if isinstance(value, tuple) and found == value:
        texts = (
            t
            for f in found
            for t in (f.detector, f.kind, f.version, f.subject or "", *f.reasons, *dict(f.counts))
        )
        if all(_text_ok(t, ID_MAX_CHARS) for t in texts):
            return False, value
    cleaned = _clean_json([f.as_dict() for f in found])
    return True, findings_of(c for c in cleaned if isinstance(c, dict))


def _unique_id(value: str) -> str:
    """Clean a request_id without letting two different ids become one row (the key)."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return clean_text(value, ID_MAX_CHARS - 34) + "~h" + digest


def _ok_check(kind: str) -> Callable[[Any], bool]:
    """A fast test that is true exactly when ``_fix`` would leave a value of ``kind`` as it is."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    check: Callable[[Any], bool]
    if base in ("id", "body"):
        limit = BODY_MAX_CHARS if base == "body" else ID_MAX_CHARS

        def check(v: Any) -> bool:
            return isinstance(v, str) and _text_ok(v, limit)
    elif base == "bool":

        def check(v: Any) -> bool:
            return isinstance(v, bool)
    elif base in ("int4", "int8"):
        lo, hi = _INT4 if base == "int4" else _INT8

        def check(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    elif base == "float":

        def check(v: Any) -> bool:
            return isinstance(v, float) and math.isfinite(v)
    elif base == "findings":

        def check(v: Any) -> bool:
            return not _fix_findings(v)[0]
    else:
        check = _json_ok
    if not optional:
        return check
    return lambda v: v is None or check(v)


def _checks(kinds: dict[str, str]) -> tuple[tuple[str, Callable[[Any], bool]], ...]:
    return tuple((name, _ok_check(kind)) for name, kind in kinds.items())


_CALL_CHECKS: Final = _checks(_CALL_KINDS)
_LEDGER_CHECKS: Final = _checks(_LEDGER_KINDS)


def _compile_check(kinds: dict[str, str]) -> Callable[[Any], bool]:
    """The per-field checks of ``_ok_check`` as one straight-line function, generated once
    from the column kinds (as ``dataclasses`` generates ``__init__``): this runs for every
    record written, and a Python call per field cost more than the rest of the check.

    It may only err towards False: a record it passes is one that every ``_ok_check`` passes
    (strict ``type(v) is int`` where the check takes int subclasses, for one); any other record
    takes the field-by-field path, which decides exactly as before. Text is tested for NUL and
    for lone surrogates once, joined: a surrogate fails to encode wherever it is.
    """
    body = ["def ok(r):", "    texts = []"]
    for name, kind in kinds.items():
        base, optional = kind.rstrip("?"), kind.endswith("?")
        if not name.isidentifier():
            raise TypeError(f"column {name!r} is not an identifier")
        body.append(f"    v = r.{name}")
        test = {
            "id": f"isinstance(v, str) and len(v) <= {ID_MAX_CHARS}",
            "body": f"isinstance(v, str) and len(v) <= {BODY_MAX_CHARS}",
            "int4": f"type(v) is int and {_INT4[0]} <= v <= {_INT4[1]}",
            "int8": f"type(v) is int and {_INT8[0]} <= v <= {_INT8[1]}",
            "float": "type(v) is float and isfinite(v)",
            "bool": "type(v) is bool",
            "json": "json_ok(v)",
            "findings": "v == () or not fix_findings(v)[0]",
        }.get(base)
        if test is None:  # a new kind of column: no fast test, every record takes the full path
            return lambda _r: False
        test = f"v is None or ({test})" if optional else test
        body.append(f"    if not ({test}):")
        body.append("        return False")
        if base in ("id", "body"):
            body.append("    texts.append(v)" if not optional else "    if v is not None:")
            if optional:
                body.append("        texts.append(v)")
    body += [
        "    t = ''.join(texts)",
        "    if '\\x00' in t:",
        "        return False",
        "    if not t.isascii():",
        "        try:",
        "            t.encode('utf-8')",
        "        except UnicodeEncodeError:",
        "            return False",
        "    return True",
    ]
    scope: dict[str, Any] = {
        "isfinite": math.isfinite,
        "json_ok": _json_ok,
        "fix_findings": _fix_findings,
    }
    exec("\n".join(body), scope)  # names and limits above are ours, not data
    ok: Callable[[Any], bool] = scope["ok"]
    return ok


_CALL_OK: Final = _compile_check(_CALL_KINDS)
_LEDGER_OK: Final = _compile_check(_LEDGER_KINDS)


def _sanitize(
    record: _R, kinds: dict[str, str], checks: tuple[tuple[str, Callable[[Any], bool]], ...]
) -> tuple[_R, tuple[str, ...]]:
    # the common case, a record that needs nothing, is one cheap test per field
    if all(ok(getattr(record, name)) for name, ok in checks):
        return record, ()
    changes: dict[str, Any] = {}
    for name, kind in kinds.items():
        changed, value = _fix(kind, getattr(record, name), name)
        if changed:
            changes[name] = value
    if not changes:
        return record, ()
    fixed = tuple(sorted(changes))
    if "flags" in kinds:
        flags = dict(changes.get("flags", getattr(record, "flags")))  # noqa: B009
        flags[SANITIZED_FLAG] = list(fixed)
        changes["flags"] = flags
    return dataclasses.replace(record, **changes), fixed


def sanitize_call(record: CallRecord) -> tuple[CallRecord, tuple[str, ...]]:
    """A call record every backend accepts, and the names of the fields that had to change."""
    if _CALL_OK(record):
        return record, ()
    return _sanitize(record, _CALL_KINDS, _CALL_CHECKS)


def sanitize_entry(entry: LedgerEntry) -> tuple[LedgerEntry, tuple[str, ...]]:
    """A ledger entry every backend accepts, and the names of the fields that had to change."""
    if _LEDGER_OK(entry):
        return entry, ()
    return _sanitize(entry, _LEDGER_KINDS, _LEDGER_CHECKS)
