"""The reference app exits on the first Ctrl-C, even with a browser connection held open."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.examples.test_support_drafter_browser import launch_app, ready


def test_one_ctrl_c_stops_the_app_while_a_connection_is_open(tmp_path: Path) -> None:
    app, port = launch_app(tmp_path)
    ready(app, port)
    held = socket.create_connection(("127.0.0.1", port))
    try:
        # a browser's keep-alive: one request answered, the connection left open
        held.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        held.settimeout(10)
        assert held.recv(64).startswith(b"HTTP/1.1 ")
        app.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = app.proc.wait(timeout=20)
        waited = time.monotonic() - started
    finally:
        held.close()
        if app.proc.poll() is None:
            app.proc.kill()
    out = app.log.read_text(errors="replace")
    assert code == 0, out
    assert waited < 15, waited  # bounded by the app's grace, not by the open connection
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "Support drafter stopped." in out
