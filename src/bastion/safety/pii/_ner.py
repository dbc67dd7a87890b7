"""The NER step (person names, locations): a protocol, the built-in tagger and lazy backends.

Names have no checksum, so regexes cannot find them; a statistical model can. The
default is the small built-in tagger (``_names``, pure Python, shipped weights); spaCy
and Presidio are heavy, optional extras that the backends import only when asked for,
at start-up. ``"auto"`` prefers them and falls back to the built-in tagger.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from ._types import NerChoice, PiiType

log = logging.getLogger("bastion.safety.pii")


@dataclass(frozen=True, slots=True)
class NerSpan:
    type: PiiType
    start: int
    end: int


@runtime_checkable
class NerDetector(Protocol):
    """Finds PERSON / ADDRESS spans in a text; must be thread-safe and never log the text."""

    name: str

    def detect(self, text: str) -> Iterable[NerSpan]: ...


class SpacyNer:
    """spaCy's PERSON entities, and FAC (buildings, streets) as addresses."""

    name = "spacy"
    _LABELS = {"PERSON": PiiType.PERSON, "FAC": PiiType.ADDRESS}

    def __init__(self, model: str = "en_core_web_sm") -> None:
        spacy = importlib.import_module("spacy")
        self._nlp: Any = spacy.load(model, disable=["parser", "lemmatizer", "tagger"])

    def detect(self, text: str) -> Iterable[NerSpan]:
        for ent in self._nlp(text).ents:
            t = self._LABELS.get(ent.label_)
            if t is not None:
                yield NerSpan(t, ent.start_char, ent.end_char)


class PresidioNer:
    """Presidio's analyzer restricted to PERSON and LOCATION (reported as ADDRESS)."""

    name = "presidio"
    _LABELS = {"PERSON": PiiType.PERSON, "LOCATION": PiiType.ADDRESS}

    def __init__(self, language: str = "en", min_score: float = 0.6) -> None:
        analyzer = importlib.import_module("presidio_analyzer")
        self._engine: Any = analyzer.AnalyzerEngine()
        self._language = language
        self._min = min_score

    def detect(self, text: str) -> Iterable[NerSpan]:
        results = self._engine.analyze(
            text=text, entities=list(self._LABELS), language=self._language
        )
        for r in results:
            t = self._LABELS.get(r.entity_type)
            if t is not None and r.score >= self._min:
                yield NerSpan(t, r.start, r.end)


_BACKENDS: MappingProxyType[str, type[SpacyNer] | type[PresidioNer]] = MappingProxyType(
    {"presidio": PresidioNer, "spacy": SpacyNer}
)


def load_ner(choice: NerChoice) -> NerDetector | None:
    """The requested backend, or None when it (or its model) is not installed."""
    if choice == "off":
        return None
    if choice == "builtin":
        return _builtin()
    names = ("presidio", "spacy") if choice == "auto" else (choice,)
    for name in names:
        try:
            return _BACKENDS[name]()
        except (ImportError, OSError) as exc:  # package missing, or its model not downloaded
            level = logging.DEBUG if choice == "auto" else logging.WARNING
            log.log(level, "PII NER backend %s unavailable (%s)", name, type(exc).__name__)
    if choice == "auto":
        return _builtin()
    log.warning("PII NER step disabled: %s is not installed", choice)
    return None


def _builtin() -> NerDetector:
    from ._names import BuiltinNer, load_model  # imports this module for NerSpan

    return BuiltinNer(load_model())
