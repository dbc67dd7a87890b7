"""Output validation: model-written SQL and structured JSON are checked before anything uses them."""

from __future__ import annotations

from .jsonout import (
    JsonSchemaValidator,
    JsonVerdict,
    Repair,
    extract_json,
    strict_loads,
    validate_json_output,
    validate_or_repair,
)
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
