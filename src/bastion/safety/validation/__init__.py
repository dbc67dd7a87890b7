"""Output validation: model-written SQL and structured JSON are checked before anything uses them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .jsonout import (
    JsonSchemaValidator,
    JsonVerdict,
    Repair,
    extract_json,
    strict_loads,
    validate_json_output,
    validate_or_repair,
)

if TYPE_CHECKING:  # sqlglot costs ~0.05-0.1 s and ~8 MB: loaded when SQL is first validated
    from .sql import (
        DENIED_FUNCTION_PREFIXES,
        DENIED_FUNCTIONS,
        Refusal,
        SqlCode,
        SqlPolicy,
        SqlRejected,
        SqlVerdict,
        default_functions,
        validate_sql,
    )
    from .sql_exec import SqlResultTooLarge, SqlTimedOut, execute_validated

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_FUNCTION_PREFIXES",
    "JsonSchemaValidator",
    "JsonVerdict",
    "Refusal",
    "Repair",
    "SqlCode",
    "SqlPolicy",
    "SqlRejected",
    "SqlResultTooLarge",
    "SqlTimedOut",
    "SqlVerdict",
    "default_functions",
    "execute_validated",
    "extract_json",
    "strict_loads",
    "validate_json_output",
    "validate_or_repair",
    "validate_sql",
]

_SQL_NAMES = {
    **dict.fromkeys(
        (
            "DENIED_FUNCTION_PREFIXES",
            "DENIED_FUNCTIONS",
            "Refusal",
            "SqlCode",
            "SqlPolicy",
            "SqlRejected",
            "SqlVerdict",
            "default_functions",
            "validate_sql",
        ),
        "sql",
    ),
    **dict.fromkeys(("SqlResultTooLarge", "SqlTimedOut", "execute_validated"), "sql_exec"),
}


def __getattr__(name: str) -> object:
    """The SQL names load sqlglot on first use, so a gateway with no SQL tools never does."""
    module = _SQL_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
