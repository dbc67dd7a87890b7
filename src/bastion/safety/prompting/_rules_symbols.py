"""Whole-text rules: each starts with a newline or a rare symbol, so the regex engine jumps to candidates.

Fences, doc and system tags, chat-template tokens, role lines, forged transcripts and
tool-call JSON — the structural forgeries — plus the small shared patterns the scanner uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

# Whole-text rules on "\n" + lower-cased text + "\n": each starts with a newline or a rare symbol.
_LINE = re.compile(
    r"\n(?:(?P<role>[ \t>#*_\-=\[(]*(?:system|assistant|developer|admin|administrator|root|operator)"
    r"(?:[ \t]+(?:note|notice|message|update|override|alert|prompt|instructions?|directive)"
    r"(?:[ \t]+v?[\d.]+)?)?[ \t*_\])]*[:：꞉])"
    r"|(?P<fence>[ \t]*(?:<<<|>>>|‹‹‹|›››)[ \t]*(?=\n))"
    r"|(?P<alpaca>[ \t]*#{2,4}[ \t]*(?:instruction|response)[ \t]*:))"
)
_SYMBOL = re.compile(
    r"[<‹\[⟦\"](?:(?<=[<‹])(?P<doc_tag>\s*/?\s*doc\b)"
    r"|(?<=[<‹])(?P<chat_template>\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|"
    r"start_header_id|end_header_id|begin_of_text|start|end|message|channel)\|>|</?sys>>"
    r"|(?:start|end)_of_turn>)"
    r"|(?<=[\[⟦])(?P<inst>/?inst[\]⟧])"
    r"|(?<=[<‹])(?P<system_block>system>[^<‹\n]{3,300}[<‹]/system>)"
    r"|(?<=[<‹])(?P<system_tag>/?(?:system|system_prompt|instructions|admin|developer|assistant|user)>)"
    r"|(?<=\")(?P<forged_call>(?:tool_calls|function_call|tool_use)\"\s*:)"
    r"|(?<=[<‹])(?P<forged_tag>/?(?:tool_call|function_call|tool_use)>)"
    r"|(?<=<)(?P<html>!--[^>]{0,400}?\b(?:ai|assistant|llm|model|ignore|instructions?)\b)"
    r"|(?<=\[)(?P<md_comment>//\]:\s*#)"
    r"|(?<=[\[⟦])(?P<bracket_role>(?:admin|system|developer|root|sys)(?:\s+(?:override|mode|note|"
    r"message|command|instructions?))?[\]⟧]))"
)
# a forged Human/Assistant exchange; its own pass, so a role line on the same line still counts
TRANSCRIPT = re.compile(
    r"\n[ \t]*(?:human\s*:(?=[^\n]*\n(?:[^\n]*\n){0,6}?[ \t]*assistant\s*:)"
    r"|assistant\s*:(?=[^\n]*\n(?:[^\n]*\n){0,6}?[ \t]*human\s*:))"
)
SYMBOL_REASONS: Mapping[str, tuple[str, float]] = MappingProxyType(
    {
        "role": ("forgery:role", 0.35),
        "fence": ("forgery:fence", 0.3),
        "transcript": ("forgery:transcript", 0.45),
        "doc_tag": ("forgery:doc_tag", 0.5),
        "chat_template": ("forgery:chat_template", 0.55),
        "inst": ("forgery:chat_template", 0.55),
        "forged_tag": ("tool:forged_call", 0.55),
        "system_tag": ("forgery:system_tag", 0.35),
        "system_block": ("forgery:system_tag", 0.55),
        "md_comment": ("hidden:html", 0.3),
        "bracket_role": ("forgery:role", 0.35),
        "alpaca": ("forgery:chat_template", 0.55),
        "forged_call": ("tool:forged_call", 0.55),
        "html": ("hidden:html", 0.3),
    }
)
LINE_RULES = _LINE
SYMBOL_RULES = _SYMBOL

CJK_GATE = re.compile("[\u3040-\u30ff\u3400-\u9fff]")
LONG_RUN = re.compile(r"[a-z0-9+/_-]{20,}={0,2}")

NEGATION = re.compile(
    r"\b(?:never|not|cannot|can't|won't|don't\s+let|do\s+not\s+let|no\s+one|nobody)\b|n't\b"
)
