"""Helpers for tests: isolated paths, running entry points as a user does, writing datasets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from src.config import PROJECT_ROOT

# A small, fast and deterministic training run: the settings every subprocess test starts from.
FAST_RUN = [
    "model.checkpoint=null",
    "model.image_size=128",
    "data.num_workers=0",
    "dataset.generate.num_train=8",
    "dataset.generate.num_val=4",
    "dataset.generate.image_size=128",
    "prompts.correction_clicks=1",
    "trainer.batch_size=2",
    "trainer.log_every_steps=1",
    "trainer.eval_every_steps=2",
    "task.validation.num_sample_images=2",
]

# FAST_RUN's equivalent for landmarks: HRNetV2-W18 on the embedded synthetic faces at 64 px.
LANDMARK_RUN = [
    "task=landmarks",
    "dataset=synthetic_faces",
    "model=hrnetv2_w18",
    "model.image_size=64",
    "data.num_workers=0",
    "dataset.generate.num_train=16",
    "dataset.generate.num_val=8",
    "dataset.generate.num_test=4",
    "trainer.batch_size=8",
    "trainer.log_every_steps=2",
    "task.validation.num_sample_images=2",
]

# FAST_RUN for a dataset that is not generated (kvasir, manga, animal): without the generator's keys.
FAST_TRAIN = [o for o in FAST_RUN if not o.startswith("dataset.generate.")]


def isolated_paths(tmp: Path) -> list[str]:
    """Overrides that keep a run's outputs, data and caches inside `tmp`."""
    return [
        f"paths.output_dir={tmp / 'outputs'}",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / 'run'}",
    ]


def run_module(module: str, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_pair(root: Path, split: str, name: str, image: np.ndarray, mask: np.ndarray, mask_ext: str = ".png") -> None:
    """Write an image/mask pair in the shared on-disk layout."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / split / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / split / f"{name}{mask_ext}", quality=75)


class LocalFileServer:
    """An HTTP server on 127.0.0.1 serving in-memory files, with Range support and fault injection.

    `truncate[path] = n` makes the next n requests for `path` stop halfway through the body while
    still announcing the full Content-Length, as a dropped connection does.
    """

    def __init__(self, files: dict[str, bytes]):
        import http.server
        import threading

        self.files = dict(files)
        self.truncate: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
                self.send_response(206 if range_header else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                payload = body[start:]
                if server.truncate.get(self.path, 0) > 0:
                    server.truncate[self.path] -= 1
                    payload = payload[: len(payload) // 2]
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> LocalFileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def compose_config(config_name: str, overrides: list[str]):
    """Compose conf/<config_name>.yaml in-process, as `python -m src.<entry>` would, without running it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def conf_values(name: str, key: str | None = None) -> dict:
    """The settings conf/<name>.yaml (or its `key` node) defines, the one place their defaults live."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(PROJECT_ROOT / "conf" / f"{name}.yaml")
    values = OmegaConf.to_container(OmegaConf.select(cfg, key) if key else cfg, resolve=True)
    return {k: v for k, v in values.items() if k not in ("_target_", "defaults")}


def from_conf(cls: type, name: str, key: str | None = None, **overrides):
    """`cls` built with the settings of conf/<name>.yaml, some of them overridden."""
    return cls(**{**conf_values(name, key), **overrides})


def mlflow_tracker(tracking_uri: str, experiment: str, **overrides):
    """An `MlflowTracker` with conf/logger/mlflow.yaml's settings; the store and experiment given here."""
    from omegaconf import OmegaConf

    from src.tracking.runs import MlflowTracker

    cfg = OmegaConf.load(PROJECT_ROOT / "conf" / "logger" / "mlflow.yaml")
    given = ("_target_", "tracking_uri", "experiment_name", "artifact_location")  # here, or none
    settings = {key: value for key, value in OmegaConf.to_container(cfg).items() if key not in given}
    settings["artifact_location"] = None
    return MlflowTracker(tracking_uri, experiment, **{**settings, **overrides})
