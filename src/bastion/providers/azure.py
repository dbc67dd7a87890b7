"""Azure OpenAI: where a chat request goes and how it is authenticated.

Azure speaks OpenAI's chat completions format, so bodies, streams, usage and finish reasons
(``content_filter`` included) go through the OpenAI code unchanged; what differs is the URL
and the credential:

- the deployment form ``{endpoint}/openai/deployments/{deployment}/chat/completions
  ?api-version=...`` (api-version required), or the newer ``{endpoint}/openai/v1/chat/completions``
  (``api_version: v1``), where the deployment is the body's ``model``;
- an ``api-key`` header, or ``Authorization: Bearer`` with a Microsoft Entra token.

The endpoint's ``base_url`` carries the resource root and its default query
(``https://r.openai.azure.com/openai?api-version=2024-10-21``), as the SDKs hold a base URL plus
default query, and an Entra credential is kept with its ``Bearer`` scheme, so that the generic
``Endpoint`` needs no Azure fields. The deployment name can come from the client (``{model}``
in a deployment's model), so it is one percent-encoded path segment, and the dot segments a URL
parser would resolve (``..`` climbs out of ``/deployments/``) are refused.
"""

from __future__ import annotations

from urllib.parse import quote

from ..errors import InvalidRequest

__all__ = [
    "BEARER",
    "DEFAULT_API_VERSION",
    "V1",
    "auth_headers",
    "chat_url",
    "resource_base",
]

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane inference version
V1 = "v1"  # the version-less /openai/v1/ surface
BEARER = "Bearer "


def resource_base(endpoint: str, api_version: str | None) -> str:
    """The resource root (with its api-version query) an ``Endpoint`` keeps as ``base_url``."""
    root = endpoint.rstrip("/")
    if not root.endswith("/openai"):
        root += "/openai"
    version = api_version or DEFAULT_API_VERSION
    if version == V1:
        return root + "/v1"
    return f"{root}?api-version={quote(version, safe='')}"


def chat_url(base_url: str, deployment: object) -> str:
    """The chat completions URL of ``deployment`` under ``base_url`` (from ``resource_base``)."""
    root, _, query = base_url.partition("?")
    if root.endswith("/v1"):
        return root + "/chat/completions" + ("?" + query if query else "")
    if not isinstance(deployment, str) or deployment in ("", ".", ".."):
        raise InvalidRequest(
            f"model: {deployment!r} cannot name an Azure OpenAI deployment", param="model"
        )
    path = f"{root}/deployments/{quote(deployment, safe='')}/chat/completions"
    return path + ("?" + query if query else "")


def auth_headers(credential: str | None) -> dict[str, str]:
    """``api-key`` for a resource key, ``authorization`` for an Entra token; never both."""
    if not credential:
        return {}
    if credential.startswith(BEARER):
        return {"authorization": credential}
    return {"api-key": credential}
