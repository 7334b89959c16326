"""Run the server with uvicorn: `charlstm serve MODEL_OR_RUN_DIR... [--host H] [--port P] [--token T]`.

Loopback by default. Any other address exposes the API to the network, so it needs a token (checked on every
API call) or an explicit `--no-auth`, and says which it is.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.server.limits import Limits


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth(host: str, token: str | None, no_auth: bool) -> None:
    """Refuse to expose the API off loopback without a decision about authentication."""
    if token is not None and not token.strip():
        raise CharlstmError("--token is empty; give a secret string (or set CHARLSTM_TOKEN)")
    if token is not None and no_auth:
        raise CharlstmError("give --token or --no-auth, not both")
    if not is_loopback(host) and token is None and not no_auth:
        raise CharlstmError(
            f"--host {host} makes the API reachable from the network: give --token SECRET (or set "
            "CHARLSTM_TOKEN) so that every API call needs it, or --no-auth to serve it to anyone who can connect"
        )


def serve(
    paths: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    no_auth: bool = False,
    limits: Limits | None = None,
    access_log: bool = False,
) -> None:
    """Load the models, then serve until interrupted."""
    check_auth(host, token, no_auth)
    import uvicorn

    from charlstm.server.app import create_app
    from charlstm.server.catalog import load_entries

    entries = load_entries(list(paths))
    app = create_app(entries, limits, token=token)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(f"charlstm: serving {', '.join(e.name for e in entries)} at {url}  (API docs: {url}docs)", flush=True)
    if token is not None:
        print(f"charlstm: every API call needs `Authorization: Bearer <token>`; the page: {url}#token=<token>",
              flush=True)
    elif not is_loopback(host):
        print(f"charlstm: warning: no authentication (--no-auth): anyone who can reach {host}:{port} can use it",
              file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


class BackgroundServer:
    """A playground server running in a background thread of this process (a notebook's kernel): `url`,
    and `stop()` (also on `with` exit). Loopback only: it has no token."""

    def __init__(self, server: Any, thread: threading.Thread, names: list[str]) -> None:
        self._server, self._thread, self.names = server, thread, names
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        self.port = int(port)
        self.url = f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"BackgroundServer({', '.join(self.names)} at {self.url})"


def serve_in_background(
    paths: Sequence[str | os.PathLike[str]], port: int = 0, limits: Limits | None = None, timeout: float = 30.0
) -> BackgroundServer:
    """Serve models or run directories on 127.0.0.1:`port` (0: any free port) from a background thread and
    return once it accepts connections; `.url` says where to open the page, `.stop()` ends it."""
    import uvicorn

    from charlstm.server.app import create_app
    from charlstm.server.catalog import load_entries

    entries = load_entries([str(p) for p in paths])
    config = uvicorn.Config(create_app(entries, limits), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="charlstm-playground", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise CharlstmError(f"the playground server did not start on 127.0.0.1:{port} (is the port in use?)")
        time.sleep(0.02)
    return BackgroundServer(server, thread, [e.name for e in entries])
