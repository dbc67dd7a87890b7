"""Why model-written SQL was refused: a stable code for machines beside a message for the model.

The message names what was found (``function 'pg_sleep' is not allowed``) so the model can fix
its query; the code (``function_denied``) never changes wording and carries no value from the
query, so a call record's finding can key on it and a false positive can be counted per rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Refusal", "SqlCode"]


class SqlCode(StrEnum):
    """Every reason the SQL validator refuses a query, one per rule."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    NUL_BYTE = "nul_byte"
    COMMENT = "comment"
    PARSE_ERROR = "parse_error"
    STATEMENTS = "multiple_statements"
    NOT_SELECT = "not_select"
    WRITE = "write"
    SELECT_INTO = "select_into"
    ROW_LOCK = "row_lock"
    FUNCTION_DENIED = "function_denied"
    FUNCTION_NOT_ALLOWED = "function_not_allowed"
    FUNCTION_QUALIFIED = "function_schema_qualified"
    TABLE_FUNCTION = "table_function"
    TYPE_DENIED = "type_denied"
    CUSTOM_OPERATOR = "custom_operator"
    UNCHECKABLE = "uncheckable"
    NO_GRANT = "no_grant"
    TABLE_DENIED = "table_denied"
    COLUMN_DENIED = "column_denied"
    STAR_RESTRICTED = "star_restricted"
    UNRESOLVED = "unresolved_reference"
    TAUTOLOGY = "tautology"
    CONSTANT_CONDITION = "constant_condition"
    ROW_RULE = "row_rule"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason to refuse: ``code`` for records and metrics, ``message`` for the model."""

    code: SqlCode
    message: str

    def __str__(self) -> str:
        return self.message
