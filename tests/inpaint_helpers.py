"""Helpers for the inpainting tests: small source images, a prepared sample folder, a short run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import torch

from tests.prepare_helpers import output, run_prepare

# A small generator and few steps on 64 px tiles: what every inpainting training test starts from
INPAINT_RUN = [
    "experiment=inpaint",
    "model.channels=[16,32]",
    "model.depths=[1,1,1]",
    "model.window=4",
    "task.tile=64",
    "task.validation.num_sample_images=2",
    "data.num_workers=0",
    "trainer.cpu_threads=1",
    "trainer.batch_size=4",
    "trainer.log_every_steps=1",
    "optimizer.lr=3e-3",
]


def smooth_images(folder: Path, counts: dict[str, int], size: tuple[int, int] = (96, 96), seed: int = 0) -> Path:
    """Blurred colour fields: a hole in them is predictable from its surroundings."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            noise = (rng.random((*size, 3)) * 255).astype(np.float32)
            image = cv2.GaussianBlur(noise, (0, 0), 12)
            image = (image - image.min()) / max(float(np.ptp(image)), 1e-6) * 255
            cv2.imwrite(str(folder / split / f"img{index}.png"), image.astype(np.uint8))
    return folder


def prepared_samples(tmp: Path, train: int = 6, val: int = 2) -> Path:
    """`python -m src.prepare dataset=inpaint` with free-form holes on small images; the dataset root."""
    images = smooth_images(tmp / "sources", {"train": train, "eval": val})
    result = run_prepare(
        tmp, "dataset=inpaint", f"prepare.input_dir={images}", "prepare.prefix=t", "prepare.min_side=96",
        "prepare.size=80",
    )  # fmt: skip
    assert result.returncode == 0, output(result)[-3000:]
    return tmp / "data" / "inpaint"


def logged_metric(result: subprocess.CompletedProcess, name: str) -> list[float]:
    """The values of `val/NAME` in a training run's log, in order."""
    return [float(v) for v in re.findall(rf"val/{re.escape(name)}=([0-9.]+)", output(result))]


def alexnet_weights(path: Path) -> Path:
    """A torchvision AlexNet state dict of random weights: LPIPS runs on it without a download."""
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def tiny_segmenter(path: Path, image_size: int = 64, seed: int = 2) -> Path:
    """A segmentation checkpoint of random SAM2.1-tiny weights at `image_size`, as src.train writes one."""
    from src.models.registry import SAM2_CONFIGS
    from src.models.sam2.build import build_sam2_model

    torch.manual_seed(seed)
    state = build_sam2_model(SAM2_CONFIGS["tiny"], image_size).state_dict()
    torch.save({"model": state, "meta": {"task": "segmentation", "model": "tiny", "image_size": image_size}}, path)
    return path
