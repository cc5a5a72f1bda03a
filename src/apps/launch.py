"""Serving a Gradio page safely: on 127.0.0.1 unless asked otherwise, never through a public share link.

On a remote GPU box, forward the port (`ssh -L 7860:127.0.0.1:7860 gpu-box`) and open
http://127.0.0.1:7860 locally. Binding another address serves the page, unauthenticated, to
whoever can reach it, so it is allowed but said loudly.
"""

from __future__ import annotations

import logging
from typing import Any

from src.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(page: Any, host: str, port: int, css: str | None = None) -> None:
    """Serve a `gr.Blocks` page (with extra `css`) until the process is stopped."""
    if host not in LOCAL_HOSTS:
        log.warning(
            "ui.host=%s: the page is reachable from other machines, without authentication; "
            "ui.host=127.0.0.1 with an SSH port forward keeps it private",
            host,
        )
    try:
        page.launch(
            server_name=host,
            server_port=int(port),
            share=False,
            ssr_mode=False,
            show_error=True,
            footer_links=[],
            prevent_thread_lock=True,
            css=css,
        )
    except OSError as err:
        reason = str(err).split(". ")[0]  # the rest names gradio parameters, not ours
        raise ConfigError(f"cannot serve on {host}:{port} ({reason}); choose a free port with ui.port=...") from err
    log.info("serving %s (Ctrl+C stops it)", page.local_url)
    page.block_thread()
