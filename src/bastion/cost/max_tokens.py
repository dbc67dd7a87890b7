"""max_tokens on every call: injected when the client omits it, clamped (or refused) above the feature's limit."""

from __future__ import annotations

from collections.abc import Mapping

from ..call import Call
from ..config import FeatureConfig
from ..errors import InvalidRequest
from .tokens import LIMIT_FIELDS


class MaxTokensGuard:
    """No call leaves Bastion without a bound on its output (the default is a budget bomb)."""

    name = "max_tokens"

    def __init__(self, features: Mapping[str, FeatureConfig]) -> None:
        self._features = features
        self._default = features["default"]

    async def before(self, call: Call) -> None:
        f = self._features.get(call.feature or "default", self._default)
        body = call.body
        # every limit field present is bounded: a provider may honour any one of them
        present = [k for k in LIMIT_FIELDS if body.get(k) is not None]
        if not present:
            key = "max_tokens"
            body[key] = f.max_tokens_default
            call.flags["max_tokens_injected"] = f.max_tokens_default
            return
        for key in present:
            v = body[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidRequest(f"{key}: must be a positive integer", param=key)
            if v > f.max_tokens_limit:
                if f.max_tokens_mode == "refuse":
                    raise InvalidRequest(
                        f"{key}: {v} exceeds this feature's limit of {f.max_tokens_limit}",
                        param=key,
                    )
                body[key] = f.max_tokens_limit
                call.flags["max_tokens_clamped"] = v
