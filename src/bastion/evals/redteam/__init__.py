"""The red-team pack: attacks generated from a feature's purpose, run through the configured gateway.

templates   the attack wording, one pool per category
cases       RedTeamCase, generate()     seeded cases across every category
attack      Target, open_sandbox, run_pack   the app's part, played with Bastion's own parts
verdict     judge()                      defended / undefended / error from what the app saw
wire        Wire                         the app's side of Anthropic Messages / OpenAI Chat
cli         ``bastion eval redteam``
"""

from __future__ import annotations

from .attack import CaseResult, PackResult, Target, open_sandbox, run_pack
from .cases import CATEGORIES, DEFAULT_PURPOSE, RedTeamCase, generate
from .verdict import Evidence, Refusal, ToolRun, Verdict, judge

__all__ = [
    "CATEGORIES",
    "DEFAULT_PURPOSE",
    "CaseResult",
    "Evidence",
    "PackResult",
    "RedTeamCase",
    "Refusal",
    "Target",
    "ToolRun",
    "Verdict",
    "generate",
    "judge",
    "open_sandbox",
    "run_pack",
]
