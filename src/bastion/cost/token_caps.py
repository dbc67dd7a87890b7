"""Token caps: per call on input (refused before the call) and per conversation, cumulative.

The conversation cap holds under concurrency the way the spend cap does: before each
upstream attempt (first try, retry, failover, hedge, continuation, repair), the worst case
of the body that attempt sends (an upper bound of its input tokens plus every output token
it may ask for) is added to the conversation's counter only if the counter stays within the
cap (``incr_if_below``, atomic in every backend); after the call, the unused part is given
back, attempt by attempt (an attempt whose outcome is unknown keeps its whole hold).
Concurrent calls, and the several attempts of one call, therefore cannot together pass it.

The counter belongs to the calling key: ``conv:{key_id}:{hash}``. A conversation id is
the client's, so another key reusing it must neither be blocked by nor see this key's
usage, and it is hashed so its bytes and length never shape a state key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from ..call import Attempt, Call
from ..config import FeatureConfig
from ..errors import InputTooLarge, StateUnavailable
from ..state import CounterStore, IncrResult
from ..state.plan import Incr
from .state_batch import Planned, plan_of
from .tokens import estimate_input, input_upper_bound, output_upper_bound

CONVERSATION_TTL = 30 * 86400.0
SETTLED_FLAG = "conversation_tokens"


def conversation_key(key_id: str, conversation_id: str) -> str:
    """The counter of one key's conversation; the client's id only ever appears hashed."""
    digest = hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"conv:{key_id}:{digest}"


class TokenCapGuard:
    """Long agent conversations balloon; this stops them at a configured size."""

    name = "token_caps"
    plans_state = True  # its store operations go in the call's batches (state_batch.py)

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

    async def reserve_attempt(
        self, call: Call, attempt: Attempt, body: dict[str, Any], body_bytes: int
    ) -> None:
        """Hold this attempt's worst case on the conversation's cap, or refuse it."""
        if not self.active or not call.conversation_id:
            return
        cap = self._feature(call).conversation_max_tokens
        if cap is None:
            return
        need = input_upper_bound(body, body_bytes) + output_upper_bound(body)
        key = conversation_key(call.principal.key_id, call.conversation_id)
        op = Incr(key, float(need), CONVERSATION_TTL, float(cap))
        # sent by the pipeline with the attempt's spend reservation, in one atomic batch
        plan_of(call, self._state).admit.append(Planned(op, self._held(attempt, cap, need), _raise))

    def _held(self, attempt: Attempt, cap: int, need: int) -> Callable[[IncrResult], None]:
        def answer(res: IncrResult) -> None:
            if res.ok:
                attempt.conversation_tokens = need
                return
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

        return answer

    async def release_attempt(self, call: Call, attempt: Attempt) -> None:
        """An attempt that cost nothing gives its tokens back now."""
        held = attempt.conversation_tokens
        if not held or not call.conversation_id:
            return
        attempt.conversation_tokens = 0
        try:
            await self._state.incr(
                conversation_key(call.principal.key_id, call.conversation_id),
                -float(held),
                CONVERSATION_TTL,
            )
        except StateUnavailable:
            call.flags["conversation_unsettled"] = True

    async def after(self, call: Call, error: BaseException | None) -> None:
        held = [a for a in call.attempts if a.conversation_tokens]
        if not held or not call.conversation_id:
            return
        reserved = actual = 0
        for a in held:
            reserved += a.conversation_tokens
            if a.usage is None:  # sent, outcome unknown: it may have used all of it
                actual += a.conversation_tokens if a.sent else 0
            else:
                u = a.usage
                actual += (
                    u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens
                )
            a.conversation_tokens = 0
        call.flags[SETTLED_FLAG] = actual
        if actual == reserved:
            return
        # give back what the attempts did not use (never more than they held), in the call's
        # settle batch
        key = conversation_key(call.principal.key_id, call.conversation_id)
        op = Incr(key, float(actual - reserved), CONVERSATION_TTL)
        plan_of(call, self._state).finish.append(Planned(op, _given_back, _unsettled(call)))


def _raise(exc: StateUnavailable) -> None:
    raise exc  # no conversation cap without the store: fail closed


def _given_back(answer: object) -> None:
    """The counter's value after the give-back needs nothing more."""


def _unsettled(call: Call) -> Callable[[StateUnavailable], None]:
    def down(exc: StateUnavailable) -> None:
        call.flags["conversation_unsettled"] = True

    return down
