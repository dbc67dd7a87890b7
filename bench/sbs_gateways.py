"""The other gateways ``sidebyside.py`` runs beside Bastion: nginx and LiteLLM's proxy.

nginx: Debian's binary as our own foreground process (a generated config in a temp dir,
never the system service), a plain pass-through to the simulator. LiteLLM: its proxy from
a venv of its own (``bench/.venv-litellm``, pinned ``LITELLM_PIN``), with a ``model_list``
at the simulator's OpenAI-compatible endpoint, local only. Both started on a free port and
stopped by their PID (``procs.start_process``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from overhead import SIM_MODEL, Server, Target, alias, pacing_headers, request_body
from procs import VenvTool, start_process

API = "openai"
LITELLM_PIN = "1.108.7"
VENV = Path(__file__).resolve().parent / ".venv-litellm"
LITELLM_KEY = "sk-bench-master-key"
INSTALL_TIMEOUT_S = 1200.0
LITELLM = VenvTool(
    "litellm",
    VENV,
    "litellm[proxy]",
    "import importlib.metadata as m; print(m.version('litellm'))",
    INSTALL_TIMEOUT_S,
    title="LiteLLM",
    install_note=" (a few minutes the first time)",
    latest_if_missing=True,
)
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream sim {{
        server 127.0.0.1:{sim_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


# -- LiteLLM in its own venv ----------------------------------------------------------------


def ensure_litellm(pin: str, log: Callable[[str], None]) -> str:
    """The LiteLLM version in ``bench/.venv-litellm``, installing it first if need be (the
    latest release if ``pin`` is not on the index, or the one installed if there is one)."""
    return LITELLM.ensure(pin, log)


def litellm_config(sim_port: int, models: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """LiteLLM's proxy config: one model per (mode, upstream ms), at the simulator."""
    return {
        "model_list": [
            {
                "model_name": alias(API, mode, ms),
                "litellm_params": {
                    "model": f"openai/{SIM_MODEL[API]}",
                    "api_base": f"http://127.0.0.1:{sim_port}/v1",
                    "api_key": "sk-sim",
                    "extra_headers": pacing_headers(mode, ms),
                    "timeout": 30,
                },
            }
            for mode, ms in models
        ],
        "litellm_settings": {
            "telemetry": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "set_verbose": False,
            "request_timeout": 30,
            "num_retries": 0,
        },
        "general_settings": {
            "master_key": LITELLM_KEY,
            "disable_spend_logs": True,
            "disable_reset_budget": True,
            "disable_prisma_schema_update": True,
        },
    }


def litellm_env(home: Path) -> dict[str, str]:
    """Local only: no database, the bundled cost map, no telemetry, no provider keys."""
    drop = ("DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "REDIS_URL", "REDIS_HOST")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LITELLM_")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        HOME=str(home),  # anything it caches goes to the temp dir
        PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}",
    )
    return env


# -- processes -------------------------------------------------------------------------------


def nginx_binary() -> str:
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.access(p, os.X_OK):
            return p
    raise RuntimeError("nginx is not installed: `apt-get install -y nginx` (.ci/run does)")


def start_nginx(tmp: Path, sim_port: int, i: int, started: list[Server]) -> Server:
    d = tmp / f"nginx-{i}"
    d.mkdir(parents=True)
    d.chmod(0o755)  # workers run as an unprivileged user when started by root
    conf = d / "nginx.conf"

    def argv(port: int) -> list[str]:
        conf.write_text(NGINX_CONF.format(tmp=d, sim_port=sim_port, port=port))
        return [nginx_binary(), "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")]

    return start_process("nginx", argv, d / "stdout.log", started)  # SIGTERM: fast shutdown


def start_litellm(
    tmp: Path, sim_port: int, i: int, started: list[Server], models: Sequence[tuple[str, int]]
) -> Server:
    d = tmp / f"litellm-{i}"
    d.mkdir(parents=True)
    conf = d / "litellm.yaml"
    conf.write_text(yaml.safe_dump(litellm_config(sim_port, models), sort_keys=False))

    def argv(port: int) -> list[str]:
        return [
            str(VENV / "bin" / "litellm"),
            "--config",
            str(conf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]

    return start_process("litellm", argv, d / "litellm.log", started, env=litellm_env(d))


def litellm_target(base: str, mode: str, ms: int) -> Target:
    stream = mode == "stream"
    headers = {"content-type": "application/json", "authorization": f"Bearer {LITELLM_KEY}"}
    if stream:
        headers["accept"] = "text/event-stream"
    body = request_body(API, alias(API, mode, ms), stream)
    return Target(base + "/v1/chat/completions", headers, body, stream, b"data: [DONE]")
