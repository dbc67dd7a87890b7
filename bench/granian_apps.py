"""ASGI app factories for granian (``bench/servers.py`` runs them from ``bench/.venv-granian``).

granian imports its target by name in its own worker process, so the arguments an app needs
come from the environment:

- ``proxy_app``: the minimal pass-through proxy of ``bare_proxy.py`` (the same ASGI code
  ``bench/servers.py`` runs under uvicorn), forwarding to ``$BENCH_UPSTREAM``;
- ``bastion_app``: Bastion's own ASGI app (``bastion.server.app.create_app``) with the
  config file ``$BENCH_BASTION_CONFIG``, logging and log scrubbing set up as ``bastion
  serve`` sets them; the lifespan starts and closes the gateway, as under uvicorn. What
  ``bastion serve`` adds around uvicorn (its header limits in ``server/protocol.py``, the
  bounded drain in ``server/serve.py``) has no equivalent here.

    granian --interface asgi --factory --working-dir bench granian_apps:proxy_app
"""

from __future__ import annotations

import gc
import os
from typing import Any

__all__ = ["bastion_app", "proxy_app"]


def proxy_app() -> Any:
    from bare_proxy import create_app

    return create_app(os.environ["BENCH_UPSTREAM"])


def bastion_app() -> Any:
    from bastion.config import load_config
    from bastion.gateway import Gateway
    from bastion.observability.access import configure_logging
    from bastion.server.app import create_app
    from bastion.server.serve import install_log_scrubbing

    cfg = load_config(os.environ["BENCH_BASTION_CONFIG"])
    configure_logging(cfg.server.log_level, cfg.server.log_format)
    gateway = Gateway(cfg)
    app = create_app(gateway)
    install_log_scrubbing(gateway.scrubber)
    gc.freeze()  # as `bastion serve`: start-up objects stay out of every collection
    return app
