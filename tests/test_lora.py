"""adapter=lora: peft's LoRA on the Hiera trunk trains only its own tensors, merges into stock SAM2 weights,
saves a folder that `checkpoint=` applies to its base, refuses another base size and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from src.errors import CheckpointError, ConfigError
from src.evaluate import evaluate
from src.models.registry import SAM2_CONFIGS
from src.models.sam2.adapters import check_targets, lora_config
from src.models.sam2.build import build_sam2_model
from src.models.sam2.model import Sam2Model
from src.tasks.segmentation.predictor import merged_adapter_weights
from src.tracking.checkpoints import read_trained_checkpoint
from src.utils.checkpoint_io import read_checkpoint
from tests.helpers import FAST_RUN, compose_config, isolated_paths, run_module

TINY = SAM2_CONFIGS["tiny"]
DEFAULT_TARGETS = OmegaConf.load(Path(__file__).parents[1] / "conf" / "adapter" / "lora.yaml").target_modules
MLP_TARGETS = r"image_encoder\.trunk\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.layers\.\d+)"
DECODER = ["sam_mask_decoder"]


def adapter_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.load(Path(__file__).parents[1] / "conf" / "adapter" / "lora.yaml"), overrides)


def adapted(trainable=DECODER, checkpointing=False, seed=0, **overrides) -> Sam2Model:
    torch.manual_seed(seed)
    sam = build_sam2_model(TINY, 128)
    adapter = lora_config(adapter_cfg(**overrides), "tiny")
    return Sam2Model(sam, trainable, checkpointing, adapter=adapter, model_name="tiny")


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=generator)
    points = torch.tensor([[[40.0, 50.0]], [[90.0, 20.0]]])
    target = torch.zeros(2, 1, 32, 32)
    target[0, :, 5:20, 5:25], target[1, :, 2:12, 15:30] = 1, 1
    return images, points, torch.ones(2, 1, dtype=torch.int32), target


def predict(model: Sam2Model, images, points, labels) -> torch.Tensor:
    out = model.decode(model.encode(images), torch.arange(2), points, labels, multimask=True)
    return out.low_res_logits


def mask_loss(model: Sam2Model) -> torch.Tensor:
    images, points, labels, target = batch()
    logits = predict(model, images, points, labels)[:, :1]
    return F.binary_cross_entropy_with_logits(logits, target)


@pytest.mark.parametrize("size", list(SAM2_CONFIGS))
def test_the_default_targets_are_the_trunk_attention_linears_of_every_size(size):
    sam = build_sam2_model(SAM2_CONFIGS[size], 128)
    blocks = len(sam.image_encoder.trunk.blocks)
    chosen = check_targets(sam, DEFAULT_TARGETS, "adapter.target_modules")
    assert len(chosen) == 2 * blocks and all(n.endswith((".attn.qkv", ".attn.proj")) for n in chosen)
    assert "image_encoder.trunk.patch_embed.proj" not in chosen and not any(".blocks.1.proj" in n for n in chosen)
    with_mlp = check_targets(sam, MLP_TARGETS, "adapter.target_modules")
    assert len(with_mlp) == 4 * blocks
    model = Sam2Model(sam, DECODER, adapter=lora_config(adapter_cfg(), size), model_name=size)
    assert len(model.adapter.layers()) == 2 * blocks


@pytest.mark.parametrize("pattern", [r".*proj", r".*\.qkv|.*conv_s0", "nothing"])
def test_a_pattern_beyond_the_trunks_linears_is_refused(pattern):
    with pytest.raises(ConfigError, match=r"target_modules=.*expected nn\.Linear layers of image_encoder\.trunk"):
        adapted(target_modules=pattern)
    with pytest.raises(ConfigError, match=r"patch_embed\.proj \(Conv2d\)"):
        adapted(target_modules=r".*proj")


def test_an_adapter_with_a_trainable_encoder_is_refused():
    with pytest.raises(ConfigError, match=r"drop image_encoder from model\.trainable"):
        adapted(trainable=["image_encoder", "sam_mask_decoder"])


@pytest.mark.parametrize(("checkpointing", "bf16"), [(False, False), (True, True)])
def test_a_step_changes_only_the_adapter_and_the_trainable_parts(checkpointing, bf16):
    model = adapted(checkpointing=checkpointing).train()
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = mask_loss(model)
    loss.backward()
    optimizer.step()
    after = model.sam.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".lora_B." in k for k in changed) and any(k.startswith("sam_mask_decoder.") for k in changed)
    assert all(".lora_" in k or k.startswith("sam_mask_decoder.") for k in changed), sorted(changed)[:5]
    base = [k for k in before if k.startswith("image_encoder.") and ".lora_" not in k]
    assert len(base) > 100 and not changed & set(base)  # the encoder's own weights are bit-identical


@pytest.mark.parametrize("use_dora", [False, True])
def test_merged_weights_predict_as_the_adapted_model(use_dora):
    model = adapted(use_dora=use_dora)
    with torch.no_grad():
        for name, param in model.sam.named_parameters():
            if ".lora_B." in name or "lora_magnitude" in name:
                param.add_(torch.randn_like(param) * 0.05)  # a trained-looking adapter (lora_B starts at zero)
    model.eval()
    stock = build_sam2_model(TINY, 128)
    stock.load_state_dict(model.state_for_checkpoint()["model"])  # strict: stock SAM2's keys exactly
    merged = Sam2Model(stock, DECODER).eval()
    images, points, labels, _ = batch()
    with torch.no_grad():
        ours, theirs = predict(model, images, points, labels), predict(merged, images, points, labels)
        plain = predict(Sam2Model(build_sam2_model(TINY, 128), DECODER).eval(), images, points, labels)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    assert not torch.allclose(ours, plain, atol=1e-2)  # the adapter does change the predictions


def test_the_adapter_alone_lowers_the_loss():
    model = adapted().train()
    adapter_params = [p for n, p in model.sam.named_parameters() if ".lora_" in n]
    optimizer = torch.optim.AdamW(adapter_params, lr=3e-3)
    losses = []
    for _ in range(8):
        loss = mask_loss(model)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.9 * losses[0], losses


# ----------------------------------------------------------------- a training run with adapter=lora


def lora_run_args(tmp: Path, base: Path, *extra: str) -> list[str]:
    return [
        *FAST_RUN,
        *isolated_paths(tmp),
        "adapter=lora",
        f"model.checkpoint={base}",
        "optimizer.lr=1e-3",
        "trainer.cpu_threads=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """Four steps of adapter=lora from a base weights file (random, as nothing downloads here)."""
    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    base = tmp / "base.pt"
    torch.save({"model": build_sam2_model(TINY, 128).state_dict()}, base)
    result = run_module("src.train", lora_run_args(tmp, base, "trainer.max_steps=4"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return {"tmp": tmp, "base": base, "run": tmp / "run", "output": result.stdout + result.stderr}


def evaluate_args(run: dict, *extra: str) -> list[str]:
    tmp = run["tmp"]
    return [
        f"paths.output_dir={tmp / 'outputs'}",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.run_dir={tmp / 'evaluate'}",
        f"model.checkpoint={run['base']}",
        "dataset.generate.num_train=8",
        "dataset.generate.num_val=4",
        "dataset.generate.image_size=128",
        "evaluation.prompts.modes=[point]",
        "evaluation.num_pictures=1",
        *extra,
    ]


def test_the_run_logs_the_cache_off_parameter_counts_and_adapter_size(lora_run):
    assert lora_run["output"].count("embedding cache off") == 1
    client = MlflowClient(f"sqlite:///{lora_run['tmp'] / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    metrics = run.data.metrics
    trainable, total = metrics["model/trainable_params"], metrics["model/total_params"]
    assert 0 < trainable < total and metrics["model/trainable_fraction"] == pytest.approx(trainable / total)
    folder = lora_run["run"] / "adapter"
    on_disk = sum(f.stat().st_size for f in folder.iterdir())
    assert metrics["adapter/size_mib"] == pytest.approx(on_disk / 2**20)
    assert metrics["adapter/adapter_size_mib"] < 2  # rank-8 LoRA on tiny's attention: well under 1 MiB
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "facebook/sam2.1-hiera-tiny"
    assert json.loads((folder / "samtune.json").read_text())["image_size"] == 128
    loss = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(loss) == 4 and loss[-1] < loss[0]


def test_the_merged_checkpoint_loads_in_stock_sam2(lora_run, sam2_hydra):
    # after 4 steps (best.pt may be step 0's untrained model); last.pt may hold only what changed since best.pt
    last = read_checkpoint(lora_run["run"] / "checkpoints" / "last.pt")
    base = torch.load(lora_run["base"], weights_only=True)["model"]
    qkv = "image_encoder.trunk.blocks.3.attn.qkv.weight"
    assert not torch.equal(last["model"][qkv], base[qkv])  # the adapter is merged in
    best = lora_run["run"] / "checkpoints" / "best.pt"
    stock = build_sam2(TINY, str(best), device="cpu", hydra_overrides_extra=["++model.image_size=128"])
    ours = torch.load(best, weights_only=True)
    for key, value in stock.state_dict().items():
        assert torch.equal(value, ours["model"][key]), key
    assert ours["model"].keys() == last["model"].keys()
    predictor = SAM2ImagePredictor(stock)
    predictor._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    masks, scores, _ = predictor.predict(point_coords=np.array([[60, 45]]), point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120) and scores.shape == (3,)


def test_checkpoint_takes_the_adapter_folder_and_applies_it_to_its_base(lora_run):
    folder = lora_run["run"] / "adapter"
    cfg = compose_config("evaluate", evaluate_args(lora_run, f"checkpoint={folder}", "compare=true"))
    weights = merged_adapter_weights(cfg, read_trained_checkpoint(str(folder), cfg.logger.tracking_uri))
    best = torch.load(lora_run["run"] / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert weights.checkpoint["model"].keys() == best.keys()
    for key, value in best.items():
        assert torch.allclose(weights.checkpoint["model"][key], value, atol=1e-6), key
    summary = evaluate(cfg)  # compare=true: the original base beside base + adapter
    assert {("original", "point"), ("fine-tuned", "point")} <= set(summary)


def test_an_adapter_is_refused_on_another_base_size(lora_run):
    folder = lora_run["run"] / "adapter"
    cfg = compose_config("evaluate", evaluate_args(lora_run, f"checkpoint={folder}", "model=small"))
    with pytest.raises(CheckpointError, match=r"trained on SAM2\.1 tiny, but model=small.*use model=tiny"):
        merged_adapter_weights(cfg, read_trained_checkpoint(str(folder), cfg.logger.tracking_uri))


def test_resume_restores_the_adapter_exactly(lora_run, tmp_path):
    first = run_module("src.train", lora_run_args(tmp_path, lora_run["base"], "trainer.max_steps=2"))
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    second = run_module("src.train", lora_run_args(tmp_path, lora_run["base"], "trainer.max_steps=4"))
    assert second.returncode == 0 and "resuming from" in second.stdout + second.stderr
    resumed = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    straight = read_checkpoint(lora_run["run"] / "checkpoints" / "last.pt")
    for part in ("base", "tensors"):
        assert resumed["adapter"][part].keys() == straight["adapter"][part].keys()
        for key, value in straight["adapter"][part].items():
            assert torch.equal(resumed["adapter"][part][key], value), key
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
