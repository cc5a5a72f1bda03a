"""Serving a Gradio page safely: on 127.0.0.1 unless asked otherwise, never through a public share link.

On a remote GPU box, forward the port (`ssh -L 7860:127.0.0.1:7860 gpu-box`) and open
http://127.0.0.1:7860 locally. Binding another address serves the page, unauthenticated, to
whoever can reach it, so it is allowed but said loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(page: Any, host: str, port: int, allowed_paths: Sequence[str] = (), block: bool = True) -> str:
    """Serve a `gr.Blocks` page; return its URL. With `block`, return only when the server stops."""
    if host not in LOCAL_HOSTS:
        log.warning(
            "ui.host=%s: the page is reachable from other machines, without authentication; "
            "ui.host=127.0.0.1 with an SSH port forward keeps it private",
            host,
        )
    page.launch(
        server_name=host,
        server_port=int(port),
        share=False,
        ssr_mode=False,
        show_error=True,
        footer_links=[],
        allowed_paths=list(allowed_paths),
        prevent_thread_lock=True,
    )
    url = page.local_url
    log.info("serving %s (Ctrl+C stops it)", url)
    if block:
        page.block_thread()
    return url
