"""Attack (issue #14): tool call ids Converse does not accept were cut to its characters and
64-character limit, so two different calls (``call/1`` and ``call?1``, or two long ids alike in
their first 64 characters) went to Bedrock under one ``toolUseId`` and their results could
answer the wrong call. Now an id Converse accepts goes as is and any other becomes a digest of
it: distinct ids stay distinct, and each result still names its own call.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bastion.providers.bedrock import build_request

VALID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")


def _converse(ids: list[str]) -> dict[str, Any]:
    body = {
        "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": i, "name": "f", "input": {"n": n}}
                    for n, i in enumerate(ids)
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": i, "content": f"result {n}"}
                    for n, i in enumerate(ids)
                ],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    out: dict[str, Any] = orjson.loads(build_request("http://b", body, {}, stream=False).body)
    return out


def test_ids_alike_once_cleaned_stay_distinct() -> None:
    long = "call_" + "x" * 70
    sent = _converse(["call/1", "call?1", long + "a", long + "b", "toolu_01ok"])
    uses = [b["toolUse"] for b in sent["messages"][1]["content"]]
    results = [b["toolResult"] for b in sent["messages"][2]["content"]]
    assert len({u["toolUseId"] for u in uses}) == 5
    assert uses[-1]["toolUseId"] == "toolu_01ok"  # an id Converse accepts is kept
    assert [r["toolUseId"] for r in results] == [u["toolUseId"] for u in uses]


@given(st.lists(st.text(min_size=1, max_size=90), min_size=1, max_size=4, unique=True))
def test_any_distinct_ids_reach_converse_distinct_and_paired(ids: list[str]) -> None:
    sent = _converse(ids)
    uses = [b["toolUse"] for b in sent["messages"][1]["content"]]
    results = [b["toolResult"] for b in sent["messages"][2]["content"]]
    got = [u["toolUseId"] for u in uses]
    assert len(set(got)) == len(ids) and all(VALID.fullmatch(g) for g in got)
    # each result is paired with its own call: call n's input is {"n": n}, result n says "n"
    by_id = {u["toolUseId"]: u["input"]["n"] for u in uses}
    assert [by_id[r["toolUseId"]] for r in results] == list(range(len(ids)))
    assert [r["content"] for r in results] == [[{"text": f"result {n}"}] for n in range(len(ids))]
