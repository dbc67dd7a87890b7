"""Untrusted text is never an instruction slot: prompt building, injection and leak detection, scope.

builder     PromptBuilder, Prompt, Document   fenced, neutralized, spotlighted prompts
templates   TemplateRegistry, Template        named versions with a canary each
injection   InjectionScanner, ScanResult      override / forgery / hidden / encoded / exfil
classifier  InjectionClassifier               the shipped model, scored window by window
canary      LeakWatcher, LeakIndex            canary, verbatim and partial system-prompt leaks in streams
leak        ShinglePolicy                     when a partial reproduction of the prompt is a leak
scope       ScopeGuard, Topic                 out-of-scope requests refused before the model
guards      InjectionGuard, ScopeRequestGuard, LeakGuard   the same, as gateway guards
"""

from __future__ import annotations

from ._escape import escape_attr, neutralize
from .builder import Document, Prompt, PromptBuilder
from .canary import (
    LeakIndex,
    LeakVerdict,
    LeakWatcher,
    canary_token,
    extract_canaries,
)
from .classifier import InjectionClassifier
from .guards import (
    Finding,
    InjectionGuard,
    LeakGuard,
    LeakPolicy,
    ScopeRequestGuard,
    delta_text,
    inspect_injection,
    with_delta_text,
)
from .injection import Classifier, InjectionPolicy, InjectionScanner, ScanResult
from .leak import ShinglePolicy
from .parse import ParsedDoc, ParsedTurn, parse_user_turn
from .scope import DEFAULT_DENIED, ScopeGuard, ScopeVerdict, Topic, denied_pack
from .spotlight import Spotlight, spotlight, unspotlight
from .templates import Template, TemplateRegistry

__all__ = [
    "DEFAULT_DENIED",
    "Classifier",
    "Document",
    "Finding",
    "InjectionClassifier",
    "InjectionGuard",
    "InjectionPolicy",
    "InjectionScanner",
    "LeakGuard",
    "LeakIndex",
    "LeakPolicy",
    "LeakVerdict",
    "LeakWatcher",
    "ParsedDoc",
    "ParsedTurn",
    "Prompt",
    "PromptBuilder",
    "ScanResult",
    "ScopeGuard",
    "ScopeRequestGuard",
    "ScopeVerdict",
    "ShinglePolicy",
    "Spotlight",
    "Template",
    "TemplateRegistry",
    "Topic",
    "canary_token",
    "delta_text",
    "denied_pack",
    "escape_attr",
    "extract_canaries",
    "inspect_injection",
    "neutralize",
    "parse_user_turn",
    "spotlight",
    "unspotlight",
    "with_delta_text",
]
