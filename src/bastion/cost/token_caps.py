"""Token caps: per call on input (refused before the call) and per conversation, cumulative.

The conversation cap holds under concurrency the way the spend cap does: before the
call, its worst case (an upper bound of input tokens plus every output token it may
ask for) is added to the conversation's counter only if the counter stays within the
cap (``incr_if_below``, atomic in every backend); after it, the unused part is given
back. Concurrent calls therefore cannot together pass the cap.

The counter belongs to the calling key: ``conv:{key_id}:{hash}``. A conversation id is
the client's, so another key reusing it must neither be blocked by nor see this key's
usage, and it is hashed so its bytes and length never shape a state key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import orjson

from ..call import Call
from ..config import FeatureConfig
from ..errors import InputTooLarge, StateUnavailable
from ..state import CounterStore
from .tokens import estimate_input, input_upper_bound, output_upper_bound

CONVERSATION_TTL = 30 * 86400.0
RESERVED_FLAG = "conversation_tokens_reserved"
SETTLED_FLAG = "conversation_tokens"


def conversation_key(key_id: str, conversation_id: str) -> str:
    """The counter of one key's conversation; the client's id only ever appears hashed."""
    digest = hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"conv:{key_id}:{digest}"


def worst_case_tokens(call: Call) -> int:
    """Input upper bound of the body as it will be sent, plus every output token it may ask for.

    A guard before this one (a server-side template, PII placeholders) may have rewritten
    the body, so the received size alone may understate it: the larger of the two is used.
    """
    size = max(call.body_bytes, len(orjson.dumps(call.body)))
    return input_upper_bound(call.body, size) + output_upper_bound(call.body)


class TokenCapGuard:
    """Long agent conversations balloon; this stops them at a configured size."""

    name = "token_caps"

    def __init__(self, features: Mapping[str, FeatureConfig], state: CounterStore) -> None:
        self._features = features
        self._default = features["default"]
        self._state = state
        self.active = any(
            f.max_input_tokens is not None or f.conversation_max_tokens is not None
            for f in features.values()
        )

    def _feature(self, call: Call) -> FeatureConfig:
        return self._features.get(call.feature or "default", self._default)

    async def before(self, call: Call) -> None:
        if not self.active:
            return
        f = self._feature(call)
        if f.max_input_tokens is not None:
            est = estimate_input(call.body, call.body_bytes)
            if est > f.max_input_tokens:
                raise InputTooLarge(
                    f"input is about {est} tokens, over this feature's per-call cap of {f.max_input_tokens}",
                    param="messages",
                )
        cap = f.conversation_max_tokens
        if cap is None or not call.conversation_id:
            return
        need = worst_case_tokens(call)
        key = conversation_key(call.principal.key_id, call.conversation_id)
        res = await self._state.incr_if_below(key, float(need), float(cap), CONVERSATION_TTL)
        if not res.ok:
            used = int(res.value)  # this key's own counter: nothing of another key's is shown
            if used >= cap:
                msg = (
                    f"this conversation has used its cap of {cap} tokens; start a new conversation"
                )
            else:
                msg = (
                    f"this conversation has used or reserved {used} of its {cap} tokens, and this "
                    f"call may need up to {need} (its input bound plus its output limit); lower "
                    "max_tokens, shorten the input, or start a new conversation"
                )
            raise InputTooLarge(msg, param="conversation")
        call.flags[RESERVED_FLAG] = need

    async def after(self, call: Call, error: BaseException | None) -> None:
        reserved = call.flags.get(RESERVED_FLAG)
        if not isinstance(reserved, int) or SETTLED_FLAG in call.flags or not call.conversation_id:
            return
        u = call.usage
        actual = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens
        call.flags[SETTLED_FLAG] = actual
        if actual == reserved:
            return
        # give back what the call did not use; a call that used more (a continuation or a
        # repair re-sends its input) is counted as it was, never under-counted
        try:
            await self._state.incr(
                conversation_key(call.principal.key_id, call.conversation_id),
                float(actual - reserved),
                CONVERSATION_TTL,
            )
        except StateUnavailable:
            call.flags["conversation_unsettled"] = True
