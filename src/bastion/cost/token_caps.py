"""Token caps: per call on input (refused before the call) and per conversation, cumulative."""

from __future__ import annotations

from collections.abc import Mapping

from ..call import Call
from ..config import FeatureConfig
from ..errors import InputTooLarge, StateUnavailable
from ..state import CounterStore
from .tokens import estimate_input

CONVERSATION_TTL = 30 * 86400.0


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
        if f.conversation_max_tokens is not None and call.conversation_id:
            used = await self._state.get(f"conv:{call.conversation_id}")
            if used >= f.conversation_max_tokens:
                raise InputTooLarge(
                    f"conversation {call.conversation_id} has used {int(used)} tokens, its cap is "
                    f"{f.conversation_max_tokens}; start a new conversation",
                    param="conversation",
                )

    async def after(self, call: Call, error: BaseException | None) -> None:
        if not self.active or not call.conversation_id:
            return
        if self._feature(call).conversation_max_tokens is None:
            return
        u = call.usage
        total = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens
        if total:
            try:
                await self._state.incr(
                    f"conv:{call.conversation_id}", float(total), CONVERSATION_TTL
                )
            except StateUnavailable:
                call.flags["conversation_uncounted"] = True
