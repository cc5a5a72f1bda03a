"""Browser pages (Gradio), served on 127.0.0.1 by default so that they work through an SSH port forward."""

import os

# before any module of this package imports gradio: no telemetry, no update check
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
