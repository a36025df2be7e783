"""``vinolm ui``: ``vinolm serve`` with the web UI, opened in a browser once the server answers.

It takes exactly ``serve``'s options (its parser is the parent of this one) and runs
``serve``'s handler, so the two never drift apart. Only argparse and the standard library
are imported here.
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.error
import urllib.request
import webbrowser

from vinolm.cliutil import status
from vinolm.errors import InvalidRequest
from vinolm.server import cli as serve_cli
from vinolm.ui import PATH

READY_TIMEOUT = 900  # a first start may export and compile the model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="serve a model with the web UI and open it in the browser",
                       description="Like 'vinolm serve', then open the instruction and chat pages "
                                   f"({PATH} and {PATH}/chat) in the default browser.")
    serve_cli.add_serve_args(p)
    p.add_argument("--no-browser", action="store_true", help="print the UI's address instead of opening it")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    if args.no_ui:
        raise InvalidRequest("'vinolm ui' serves the web UI; use 'vinolm serve --no-ui' for the APIs alone")
    if args.port == 0:
        raise InvalidRequest("'vinolm ui' needs a known --port to open the browser on")
    url = ui_url(args.host, args.port)
    opener = threading.Thread(target=open_when_ready, args=(url, args.no_browser), name="vinolm-ui-open",
                              daemon=True)
    opener.start()
    return serve_cli.cmd_serve(args)


def ui_url(host: str, port: int) -> str:
    """The address a browser on this machine reaches the pages at (a wildcard host means loopback)."""
    local = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{local}]" if ":" in local else local
    return f"http://{shown}:{port}{PATH}/"


def open_when_ready(url: str, print_only: bool = False) -> None:
    """Wait until the UI answers, then open it (or print where it is)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    else:
        return
    if print_only or not webbrowser.open(url):
        status(f"web UI: {url}")
