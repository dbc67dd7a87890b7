"""Leak watching that holds on disguised and partial leaks: canaries and output are folded the same
way (a canary with spaces matches), partial and paraphrased reproductions of the system prompt
are caught by shingle containment, at every chunk split, and answers that share a few words
with their instructions pass untouched."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.safety.prompting import LeakIndex, LeakWatcher
from bastion.safety.prompting._fold import fold, fold_text
from bastion.safety.prompting.leak import STOPWORDS, ShingleIndex, ShinglePolicy

PROMPT = (
    "You are Nimbus, the billing assistant for Acme Cloud. Answer questions about invoices, "
    "refunds and payment methods using only the knowledge base. Never quote internal discount "
    "codes or the escalation phone line. If a customer asks for a refund above 500 dollars, "
    "tell them a human agent will review the request within two business days. Keep answers "
    "under 120 words and always close with a link to the billing portal."
)
PARAPHRASE = (
    "Sure! I'm Nimbus, the billing helper for Acme Cloud. I answer questions about invoices, "
    "refunds and payment methods from the knowledge base only. I must never quote internal "
    "discount codes or the escalation phone line, and refunds above 500 dollars go to a human "
    "agent who will review the request within two business days."
)
BENIGN = (
    "Your refund for invoice 8812 was approved and should arrive within two business days. "
    "Payment methods on file: Visa ending 4242. You can see it in the billing portal."
)
SPACED_CANARY = "blue falcon 42"
DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "leak"


def stream(w: LeakWatcher, text: str, cuts: list[int]) -> tuple[str, bool]:
    out, pos = [], 0
    for c in [*cuts, len(text)]:
        out.append(w.feed(text[pos:c]).emit)
        pos = c
    v = w.finish()
    return "".join(out) + v.emit, v.leaked


# -- one normalisation for canaries and output ------------------------------------------------


DISGUISES = (
    "BLUE   FALCON\n42",
    "blue\u200bfalcon\u200d 42",
    "**blue falcon** `42`",
    "\uff42\uff4c\uff55\uff45 falcon \uff14\uff12",  # full-width letters and digits
    "blue f\u0430lcon 42",  # a Cyrillic a
    "> b l u e  f a l c o n  4 2",
)


@pytest.mark.parametrize("disguise", DISGUISES)
def test_a_canary_with_whitespace_matches_however_the_output_disguises_it(disguise: str) -> None:
    assert fold_text(SPACED_CANARY) == fold_text(disguise) == "bluefalcon42"
    idx = LeakIndex([SPACED_CANARY])
    v = idx.check(f"The code word is {disguise}, as requested.")
    assert v.leaked and v.reasons == ("canary",) and v.score == 1.0
    marker = "> " if disguise.startswith("> ") else ""  # a block-quote marker apart stays
    assert v.emit == f"The code word is {marker}[redacted], as requested."


def test_a_spaced_canary_is_caught_at_every_split_and_never_sent_in_part() -> None:
    text = "ok: B L U E\tfalcon  42 done"
    for cut in range(len(text) + 1):
        out, leaked = stream(LeakIndex([SPACED_CANARY]).watcher("redact"), text, [cut])
        assert leaked and out == "ok: [redacted] done", cut
        out, leaked = stream(LeakIndex([SPACED_CANARY]).watcher("block"), text, [cut])
        assert leaked and "falcon" not in out.lower(), cut


def test_fold_keeps_each_characters_raw_offset() -> None:
    raw = "A\u200b B\uff23"  # zero-width space, then a full-width C
    norm, starts = fold(raw)
    assert norm == "abc" and starts == [0, 3, 4]
    assert fold_text("\ufb01ne") == "fine"  # a ligature folds to its letters


# -- partial and near-verbatim reproductions --------------------------------------------------


def test_a_paraphrase_that_keeps_phrases_is_caught_where_verbatim_runs_miss_it() -> None:
    assert not LeakIndex([], PROMPT, shingles=None).check(PARAPHRASE, "flag").leaked
    v = LeakIndex([], PROMPT).check(PARAPHRASE, "flag")
    assert v.leaked and v.reasons == (f"shingle:{v.score:.2f}",) and 0.2 < v.score < 1.0


def test_redaction_covers_every_reproduced_phrase() -> None:
    v = LeakIndex([], PROMPT).check(f"{PARAPHRASE} Anything else?", "redact")
    assert v.leaked and v.emit.endswith("Anything else?") and "[redacted]" in v.emit
    for phrase in ("escalation phone line", "payment methods", "two business days"):
        assert phrase not in v.emit


def test_a_re_cased_fenced_reproduction_is_caught() -> None:
    fenced = "```\n" + PROMPT.upper().replace(". ", ".\n> ") + "\n```"
    v = LeakIndex([], PROMPT).check(fenced, "flag")
    assert v.leaked and v.score > 0.9


def test_an_answer_sharing_a_few_words_with_the_prompt_passes_untouched() -> None:
    idx = LeakIndex([], PROMPT)
    v = idx.check(BENIGN, "block")
    assert not v.leaked and not v.blocked and v.emit == BENIGN
    out, leaked = stream(idx.watcher("block"), BENIGN, [10, 50, 90])
    assert not leaked and out == BENIGN


@pytest.mark.parametrize("action", ["block", "redact", "flag"])
def test_a_partial_leak_split_across_chunks_is_caught_at_every_split(action: str) -> None:
    idx = LeakIndex([], PROMPT)
    whole = idx.check(PARAPHRASE, "redact")
    rng = random.Random(11)
    splits = [[c] for c in range(0, len(PARAPHRASE) + 1, 7)]
    splits += [sorted(rng.sample(range(1, len(PARAPHRASE)), 12)) for _ in range(40)]
    for cuts in splits:
        out, leaked = stream(idx.watcher(action), PARAPHRASE, cuts)
        assert leaked, cuts
        if action == "block":  # stopped: what went out is a strict prefix, short of the leak
            assert PARAPHRASE.startswith(out) and len(out) < len(PARAPHRASE) // 2, cuts
        elif action == "redact":  # the phrases sent before the verdict were held for it
            assert out == whole.emit and "escalation phone line" not in out, cuts
        else:
            assert out == PARAPHRASE


def test_the_streamed_hold_back_is_bounded() -> None:
    idx = LeakIndex([], PROMPT, suspect_hold=200)
    assert idx.shingles is not None and idx.hold == max(60, idx.shingles.longest) - 1
    plain = "Thanks for writing in. " * 20  # shares nothing: only the last `hold` chars wait
    w, sent = idx.watcher("redact"), ""
    for i in range(0, len(plain), 3):
        sent += w.feed(plain[i : i + 3]).emit
        assert len(fold_text(plain[: i + 3])) - len(fold_text(sent)) <= idx.hold
    assert sent + w.finish().emit == plain
    # a shared prompt phrase is held until judged, for at most `suspect_hold` raw characters
    shared = BENIGN + " Thanks for writing in." * 20
    w, sent = idx.watcher("redact"), ""
    for i in range(0, len(shared), 3):
        sent += w.feed(shared[i : i + 3]).emit
        assert i + 3 - len(sent) <= 200 + idx.hold + 3
    assert sent + w.finish().emit == shared and not w.leaked


def test_shingles_skip_stopword_runs_and_bad_policies_are_refused() -> None:
    sh = ShingleIndex("you are to be in it for me and you are", ShinglePolicy())
    assert not sh  # nothing but stopwords: nothing to match
    assert (
        not LeakIndex([], "you are to be in it for me and you are")
        .check("you are to be in it for me and you are", "flag")
        .reasons
    )  # too short for a verbatim run, and no shingle counts
    with pytest.raises(ValueError):
        ShinglePolicy(threshold=0.0)
    with pytest.raises(ValueError):
        ShinglePolicy(min_span=10, abs_span=5)


def test_the_shipped_policy_still_separates_the_committed_train_part() -> None:
    """The defaults were picked on ``bench/data/leak/train.jsonl``; they must keep working there."""
    prompts: dict[int, str] = {}
    tp = fp = pos = 0
    for line in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "system" in r:
            prompts[r["id"]] = r["system"]
            continue
        leaked = LeakIndex([], prompts[r["prompt"]]).check(r["output"], "flag").leaked
        pos += r["label"]
        tp += leaked and r["label"]
        fp += leaked and not r["label"]
    assert tp / pos >= 0.95 and tp / (tp + fp) >= 0.98


# -- properties --------------------------------------------------------------------------------

_SEPARATORS = ["", " ", "  ", "\n", "\t", "\u200b", " \u200d ", "\r\n "]
prompt_words = st.lists(
    st.text("abcdefghijklm", min_size=4, max_size=9).filter(lambda w: w not in STOPWORDS),
    min_size=8,
    max_size=40,
)
distinct_words = st.lists(  # a prompt that does not repeat itself
    st.text("abcdefghijklm", min_size=4, max_size=9).filter(lambda w: w not in STOPWORDS),
    min_size=8,
    max_size=40,
    unique=True,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=prompt_words, data=st.data())
def test_any_prompt_reproduced_with_whitespace_case_and_zero_width_noise_is_caught(
    words: list[str], data: st.DataObject
) -> None:
    prompt = " ".join(words) + "."
    noisy = []
    for w in words:
        chars = [
            (c.upper() if data.draw(st.booleans()) else c)
            + data.draw(st.sampled_from(["", "", "", "\u200b", "\u2060"]))
            for c in w
        ]
        noisy.append("".join(chars) + data.draw(st.sampled_from(_SEPARATORS)))
    leak = "Here you go: " + "".join(noisy)
    idx = LeakIndex([], prompt)
    assert idx.check(leak, "flag").leaked
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(leak) - 1)), max_size=8)))
    assert stream(idx.watcher("block"), leak, cuts)[1]


@settings(max_examples=150, deadline=None)
@given(words=distinct_words, data=st.data())
def test_answers_sharing_only_short_phrases_are_never_flagged(
    words: list[str], data: st.DataObject
) -> None:
    prompt = " ".join(words)
    filler = st.text("nopqrstuvwxyz", min_size=3, max_size=8)
    parts: list[str] = []
    for _ in range(data.draw(st.integers(1, 6))):  # many phrases of up to three words
        n = data.draw(st.integers(1, 3))
        a = data.draw(st.integers(0, len(words) - n))
        parts += [*words[a : a + n], data.draw(filler), data.draw(filler)]
    n = data.draw(st.integers(4, 5))  # and one run of up to five words
    a = data.draw(st.integers(0, len(words) - n))
    parts += [data.draw(filler), *words[a : a + n], data.draw(filler)]
    answer = " ".join(parts)
    v = LeakIndex([], prompt).check(answer, "block")
    assert not v.leaked and v.emit == answer


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=distinct_words, data=st.data())
def test_any_chunking_gives_the_whole_answers_verdict_and_redaction(
    words: list[str], data: st.DataObject
) -> None:
    prompt = " ".join(words)
    filler = st.text("nopqrstuvwxyz", min_size=3, max_size=8)
    parts: list[str] = []
    for _ in range(data.draw(st.integers(1, 5))):  # prompt runs of any length between filler
        n = data.draw(st.integers(1, len(words)))
        a = data.draw(st.integers(0, len(words) - n))
        parts += [data.draw(filler), *words[a : a + n], data.draw(filler)]
    answer = data.draw(st.sampled_from([" ", "\n", "  "])).join(parts)
    idx = LeakIndex([], prompt)
    whole = idx.check(answer, "redact")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(answer) - 1)), max_size=10)))
    out, leaked = stream(idx.watcher("redact"), answer, cuts)
    assert leaked == whole.leaked and out == whole.emit
