"""Browser apps (Gradio pages: landmark annotation, click-to-segment), served on 127.0.0.1 by default."""

import os

# before any module of this package imports gradio: no telemetry, no update check
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
