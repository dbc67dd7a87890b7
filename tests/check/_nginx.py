"""A private nginx for tests: Debian's binary, a generated config, a free port on 127.0.0.1.

Never the system service: ``nginx -p <tmpdir>`` in the foreground (``daemon off``), with its
pid file, error log and temp paths inside the tmpdir, stopped by its PID at teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONF = REPO / "deploy" / "nginx.conf"
_DEPLOY_SERVER = re.compile(r"^([ \t]*)server[ \t]+gateway-\d+:8080\b[^;]*;[ \t]*\n", re.M)
_DEPLOY_LISTEN = re.compile(r"^([ \t]*)listen[ \t]+80;", re.M)

# what the issue saw: buffering on, Bastion's `X-Accel-Buffering: no` ignored, and gzip on for
# event streams; the compressor then holds every delta until the answer ends
BUFFERING = """
upstream bastion {{
{servers}
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://bastion;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering on;
        proxy_ignore_headers X-Accel-Buffering;
        proxy_max_temp_file_size 0;
        gzip on;
        gzip_types text/event-stream;
        gzip_min_length 0;
        gzip_proxied any;
    }}
}}
"""
# compression alone (X-Accel-Buffering honoured, so nginx flushes each event as it comes)
GZIP = """
upstream bastion {{
{servers}
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://bastion;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        gzip on;
        gzip_types text/event-stream;
        gzip_min_length 0;
        gzip_proxied any;
    }}
}}
"""

MAIN = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # which replica answered, for the tests (the site conf sets no add_header of its own)
    add_header X-Test-Upstream $upstream_addr always;
    include {tmp}/site.conf;
}}
"""


def nginx_binary() -> str:
    """Debian's nginx (.ci/run installs it); its absence is a failure, not a skip."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("nginx is not installed: `apt-get install -y nginx` (.ci/run does)")
    return found


def deploy_site(upstream_ports: list[int], port: int) -> str:
    """deploy/nginx.conf with its upstream servers and listen port pointed at the test's."""
    text = DEPLOY_CONF.read_text()
    servers = _DEPLOY_SERVER.findall(text)
    if len(servers) != 2 or len(_DEPLOY_LISTEN.findall(text)) != 1:
        raise AssertionError("deploy/nginx.conf: expected two gateway-N:8080 servers, listen 80")
    indent = servers[0]
    lines = "".join(f"{indent}server 127.0.0.1:{p} max_fails=0;\n" for p in upstream_ports)
    first = True

    def upstream(m: re.Match[str]) -> str:
        nonlocal first
        out, first = (lines if first else ""), False
        return out

    text = _DEPLOY_SERVER.sub(upstream, text)
    return _DEPLOY_LISTEN.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{port};", text)


def site_from(template: str, upstream_ports: list[int], port: int) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{p};" for p in upstream_ports)
    return template.format(servers=servers, port=port)


class Nginx:
    """One nginx master process in the foreground, serving ``site`` (an http-context config)."""

    def __init__(self, tmp: Path, site: str, port: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o755)  # workers run as an unprivileged user when started by root
        (tmp / "site.conf").write_text(site)
        conf = tmp / "nginx.conf"
        conf.write_text(MAIN.format(tmp=tmp))
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.tmp = tmp
        with (tmp / "stdout.log").open("wb") as out:  # nginx says little: a failure to start
            self.proc = subprocess.Popen(
                [nginx_binary(), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_port(port, self.proc, timeout=15)
        except Exception:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.log()}") from None

    @classmethod
    def start(cls, tmp: Path, template: str | None, upstream_ports: list[int]) -> Nginx:
        """``template`` None: deploy/nginx.conf itself; else one of this module's templates."""
        port = free_port()
        if template is None:
            site = deploy_site(upstream_ports, port)
        else:
            site = site_from(template, upstream_ports, port)
        return cls(tmp, site, port)

    def log(self) -> str:
        logs = (self.tmp / "stdout.log", self.tmp / "error.log")
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the master's fast shutdown, workers with it
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
