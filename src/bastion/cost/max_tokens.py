"""max_tokens on every call: injected when the client omits it, clamped (or refused) above the feature's limit."""

from __future__ import annotations

from collections.abc import Mapping

from ..call import Call
from ..config import FeatureConfig
from ..errors import InvalidRequest
from ..providers.base import Format


class MaxTokensGuard:
    """No call leaves Bastion without a bound on its output (the default is a budget bomb)."""

    name = "max_tokens"

    def __init__(self, features: Mapping[str, FeatureConfig]) -> None:
        self._features = features
        self._default = features["default"]

    async def before(self, call: Call) -> None:
        f = self._features.get(call.feature or "default", self._default)
        body = call.body
        key = "max_tokens"
        if call.client_format is Format.OPENAI and "max_completion_tokens" in body:
            key = "max_completion_tokens"
        v = body.get(key)
        if v is None:
            body[key] = f.max_tokens_default
            call.flags["max_tokens_injected"] = f.max_tokens_default
        elif v > f.max_tokens_limit:
            if f.max_tokens_mode == "refuse":
                raise InvalidRequest(
                    f"{key}: {v} exceeds this feature's limit of {f.max_tokens_limit}", param=key
                )
            body[key] = f.max_tokens_limit
            call.flags["max_tokens_clamped"] = v
