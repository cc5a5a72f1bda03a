"""Precision choice from what the hardware reports (`auto`: bf16 on GPUs that support it, fp32 on
CPUs), and bf16 autocast gives the validation mIoU of fp32 on a fixed small model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from src.errors import ConfigError
from src.utils.device import Capabilities, autocast, choose_precision, cpu_flags

AVX512 = frozenset({"sse4_2", "avx2", "avx512f", "avx512bw"})  # AVX-512 without its bf16 extension


def cpu(flags: frozenset[str], torch_bf16: bool = True) -> Capabilities:
    return Capabilities("cpu", cpu_flags=flags, torch_cpu_bf16=torch_bf16)


def test_auto_is_bf16_only_on_gpus_that_report_it_and_fp32_on_every_cpu():
    for flag in ("avx512_bf16", "amx_bf16"):  # native bf16: measured slower for training, so not the default
        chosen, why = choose_precision("auto", cpu(AVX512 | {flag}))
        assert chosen == "fp32" and flag in why and "trainer.precision=bf16" in why
        assert choose_precision("bf16", cpu(AVX512 | {flag})) == ("bf16", "trainer.precision=bf16 on the CPU (native)")
    chosen, why = choose_precision("auto", cpu(AVX512))  # bf16 would be emulated: slower than fp32
    assert chosen == "fp32" and "no native bf16" in why
    assert choose_precision("auto", cpu(frozenset()))[0] == "fp32"  # nothing reported (not Linux)
    assert choose_precision("auto", cpu(AVX512 | {"avx512_bf16"}, torch_bf16=False))[0] == "fp32"
    assert choose_precision("auto", Capabilities("cuda", cuda_bf16=True))[0] == "bf16"
    assert choose_precision("auto", Capabilities("cuda", cuda_bf16=False))[0] == "fp32"
    assert choose_precision("auto", Capabilities("mps"))[0] == "fp32"
    assert choose_precision("fp32", cpu(AVX512 | {"amx_bf16"})) == ("fp32", "trainer.precision=fp32")


def test_explicit_precisions_are_checked_against_the_hardware():
    chosen, why = choose_precision("bf16", cpu(AVX512))
    assert chosen == "bf16" and "emulated" in why  # allowed, with the reason it may be slow
    with pytest.raises(ConfigError, match="no bf16 kernels"):
        choose_precision("bf16", cpu(AVX512, torch_bf16=False))
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        choose_precision("fp16", cpu(AVX512 | {"amx_bf16"}))
    with pytest.raises(ConfigError, match="no bf16 support"):
        choose_precision("bf16", Capabilities("cuda", cuda_bf16=False))
    with pytest.raises(ConfigError, match="expected one of"):
        choose_precision("half", cpu(AVX512))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse avx512_bf16 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(x86) == {"fpu", "sse", "avx512_bf16", "amx_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_bf16_and_fp32_validate_to_the_same_miou(tmp_path):
    """The trainer's validation (src.evaluate's protocol) of one fixed model, in both precisions."""
    from src.tasks.segmentation.task import SegmentationTask
    from tests.helpers import FAST_RUN, compose_config, isolated_paths

    overrides = [*FAST_RUN, *isolated_paths(tmp_path), "dataset.generate.num_val=6", "data.cache_embeddings=false"]
    cfg = compose_config("train", [o for o in overrides if not o.startswith("hydra.")])
    device = torch.device("cpu")
    torch.manual_seed(0)
    task = SegmentationTask(cfg, device)
    task.load_initial_weights()
    _, val = task.datasets()
    loader = DataLoader(val, batch_size=2, collate_fn=task.collate)
    task.module.eval()
    metrics = {}
    for dtype in (None, torch.bfloat16):
        with torch.no_grad():
            metrics[dtype] = task.evaluate(task.module, loader, device, lambda d=dtype: autocast(device, d)).metrics
    fp32, bf16 = metrics[None], metrics[torch.bfloat16]
    assert 0 < fp32["miou"] < 1
    assert bf16["miou"] == pytest.approx(fp32["miou"], abs=0.02)
    assert bf16["dice"] == pytest.approx(fp32["dice"], abs=0.02)
