"""Nothing raw is written: PII in prompts and answers never reaches a call record, the review
queue or a log line; per feature, answers are flagged or redacted (streams included)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.server.serve import install_log_scrubbing

RAW = ["jane.doe@example.com", "4111 1111 1111 1111", "078-05-1120", "+1 415-555-2671"]
PROMPT = (
    "Hi, I'm Jane (jane.doe@example.com). My card 4111 1111 1111 1111 was charged twice; "
    "SSN 078-05-1120, call me at +1 415-555-2671. Ticket TICKET-48213."
)
REPLY = "[[sim:reply=Noted: jane.doe@example.com, card 4111 1111 1111 1111, ticket TICKET-48213.]]"


def _cfg(tmp: Path, output: str = "flag", provider: bool = False) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'p.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl"), "review_rate": 1.0},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"default": {"pii_output": output, "pii_provider": provider}},
    }


def _clean(text: str | None) -> bool:
    return text is not None and not any(r in text for r in RAW)


async def test_records_and_review_queue_hold_no_raw_pii(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        msg = await gw.messages(
            {
                "model": "claude-sonnet-5",
                "messages": [{"role": "user", "content": PROMPT + " " + REPLY}],
            }
        )
        # flag mode: the client gets the answer as the model wrote it
        assert "jane.doe@example.com" in msg["content"][0]["text"]
        events = [
            e
            async for e in gw.stream_chat_completions(
                {
                    "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": PROMPT + " " + REPLY}],
                }
            )
        ]
        assert events
        await gw.recorder.flush()
        recs = await gw.store.recent_calls(10)
        assert len(recs) == 2
        for r in recs:
            assert _clean(r.input_text) and _clean(r.output_text), (r.input_text, r.output_text)
            assert "TICKET-48213" in (r.input_text or "")  # ticket numbers are not PII
            assert any(f.kind == "pii" for f in r.findings)
        items = await gw.review_queue.list()
        assert items and all(_clean(i.input_text) and _clean(i.output_text) for i in items)


async def test_redact_mode_scrubs_answers_streamed_across_chunk_boundaries(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, output="redact")) as gw:
        events = [
            e
            async for e in gw.stream_messages(
                {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": REPLY}]}
            )
        ]
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        assert (
            _clean(text) and "[EMAIL_1]" in text and "[CARD_1]" in text and "TICKET-48213" in text
        )
        chat = await gw.chat_completions(
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": REPLY}]}
        )
        assert _clean(chat["choices"][0]["message"]["content"])


async def test_provider_side_scrubbing_per_feature(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, provider=True)) as gw:
        await gw.messages(
            {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": PROMPT}]}
        )
        sent = gw.simulator.requests[-1].body["messages"][0]["content"]
        assert _clean(str(sent)) and "TICKET-48213" in str(sent)


def test_log_lines_are_scrubbed() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_scrubbing(Scrubber(ScrubberConfig()))
        logging.getLogger("bastion.test").warning("user said %s", PROMPT)
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert "user said" in out and _clean(out)
