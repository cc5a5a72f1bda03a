"""The embedding cache: same features as a fresh encode, misses on any change, safe concurrent writers,
and the same training run with and without it."""

from __future__ import annotations

import multiprocessing
import re

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from src.errors import ConfigError, DataError
from src.models.sam2.build import build_sam2_model
from src.models.sam2.embedding_cache import EmbeddingCache, as_image_features, cache_enabled
from src.models.sam2.model import Sam2Model

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
FROZEN = ["sam_mask_decoder", "sam_prompt_encoder"]


def tiny_model(size: int = 128) -> Sam2Model:
    torch.manual_seed(0)
    return Sam2Model(build_sam2_model(TINY, size), FROZEN).eval()


def images(count: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (count, 3, size, size), dtype=np.uint8))


def encoder(model: Sam2Model):
    def encode(batch: torch.Tensor):
        with torch.no_grad():
            return model.encode(batch)

    return encode


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    return tiny_model()


def test_cached_features_equal_a_fresh_encode(model, tmp_path):
    views = images(3)
    cache = EmbeddingCache.for_model(tmp_path, model, TINY)
    assert cache.fill(list(views), 3, encoder(model), batch_size=2) == 3
    assert cache.fill(list(views), 3, encoder(model), batch_size=2) == 0  # the second pass encodes nothing
    cached = as_image_features([torch.stack(level) for level in zip(*(cache.read(v) for v in views), strict=True)])
    fresh = encoder(model)(views)
    pairs = [(cached.image_embed, fresh.image_embed), *zip(cached.high_res_feats, fresh.high_res_feats, strict=True)]
    for got, want in pairs:
        assert got.shape == want.shape and got.dtype == torch.float32
        # float16 storage: about 3 significant digits
        assert torch.allclose(got, want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))


def test_a_corrupt_cache_file_is_named_and_encoded_again(model, tmp_path, caplog):
    views = images(2)
    cache = EmbeddingCache.for_model(tmp_path, model, TINY)
    cache.fill(list(views), 2, encoder(model), batch_size=2)
    broken, whole = cache.path(views[0]), cache.read(views[0])
    broken.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=rf"{broken.name}: corrupt cached features"):
        cache.read(views[0])
    assert cache.lookup(views[0]) is None and cache.lookup(views[1]) is not None  # a loader: encoded on use
    assert cache.fill(list(views), 2, encoder(model), batch_size=2) == 1  # the corrupt one alone
    assert str(broken) in caplog.text and "encoding that view again" in caplog.text
    for again, before in zip(cache.read(views[0]), whole, strict=True):  # encoded alone: fp16 rounding apart
        assert torch.allclose(again.float(), before.float(), rtol=2e-3, atol=2e-3 * float(before.abs().max()))


def test_a_changed_checkpoint_image_or_size_misses(model, tmp_path):
    view = images(1)[0]
    cache = EmbeddingCache.for_model(tmp_path, model, TINY)
    cache.fill([view], 1, encoder(model), batch_size=1)
    assert cache.contains(view)
    assert EmbeddingCache.for_model(tmp_path, model, TINY).directory == cache.directory

    changed = view.clone()
    changed[0, 5, 7] ^= 1  # one pixel, one bit
    assert not cache.contains(changed)

    for name in ("image_encoder.trunk.patch_embed.proj.bias", "sam_mask_decoder.conv_s0.bias"):
        other = tiny_model()
        with torch.no_grad():
            other.sam.get_parameter(name).add_(1e-3)
        assert EmbeddingCache.for_model(tmp_path, other, TINY).directory != cache.directory, name

    # a decoder weight that encoding does not use keeps the cache (it changes every training step)
    trained = tiny_model()
    with torch.no_grad():
        trained.sam.sam_mask_decoder.iou_prediction_head.layers[0].bias.add_(1.0)
    assert EmbeddingCache.for_model(tmp_path, trained, TINY).directory == cache.directory

    bigger = tiny_model(160)
    assert EmbeddingCache.for_model(tmp_path, bigger, TINY).directory != cache.directory
    assert EmbeddingCache.for_model(tmp_path, model, TINY, dtype="float32").directory != cache.directory


def test_cache_mode_follows_the_encoder():
    assert cache_enabled("auto", encoder_trainable=False) and not cache_enabled("auto", encoder_trainable=True)
    assert not cache_enabled(False, encoder_trainable=False)
    with pytest.raises(ConfigError, match=r"data\.cache_embeddings=true"):
        cache_enabled(True, encoder_trainable=True)


SHAPES = [(8, 4, 4), (4, 16, 16), (6, 8, 8)]


def features_of(key: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(key)
    return [torch.randn(shape, generator=generator) for shape in SHAPES]


def pixels_of(key: int) -> np.ndarray:
    return np.full((3, 4, 4), key, dtype=np.uint8)


def write_many(directory: str, keys: list[int], rounds: int) -> None:
    cache = EmbeddingCache(directory, SHAPES)
    for _ in range(rounds):
        for key in keys:
            cache.write(pixels_of(key), features_of(key))


def read_while_written(directory: str, keys: list[int], seconds: float, errors) -> None:
    import time

    cache = EmbeddingCache(directory, SHAPES)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key in keys:
            if cache.contains(pixels_of(key)):
                got = cache.read(pixels_of(key))
                want = [f.half() for f in features_of(key)]
                if not all(torch.equal(g, w) for g, w in zip(got, want, strict=True)):
                    errors.put(key)


def test_concurrent_writers_never_corrupt_it(tmp_path):
    """Two writers on the same and on different keys, and a reader meanwhile: every read is whole."""
    shared, own_a, own_b = list(range(20)), list(range(100, 110)), list(range(200, 210))
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    processes = [
        context.Process(target=write_many, args=(str(tmp_path), shared + own_a, 15)),
        context.Process(target=write_many, args=(str(tmp_path), own_b + shared[::-1], 15)),
        context.Process(target=read_while_written, args=(str(tmp_path), shared, 4.0, errors)),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert errors.empty()
    cache = EmbeddingCache(tmp_path, SHAPES)
    for key in shared + own_a + own_b:
        want = [f.half() for f in features_of(key)]
        assert all(torch.equal(g, w) for g, w in zip(cache.read(pixels_of(key)), want, strict=True))
    assert not list(tmp_path.glob(".*.tmp")) and len(list(tmp_path.glob("*.npy"))) == 40


def loss_curve(tmp) -> list[float]:
    client = MlflowClient(f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]


def test_training_with_and_without_the_cache_follows_the_same_loss_curve(tmp_path):
    from tests.helpers import FAST_RUN, isolated_paths, run_module

    curves, cached = {}, {}
    for mode in ("true", "false"):
        tmp = tmp_path / mode
        common = ["augmentation=none", "data.cache_views=1", "trainer.max_steps=4", "trainer.eval_every_steps=4"]
        result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), *common, f"data.cache_embeddings={mode}"])
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        curves[mode] = loss_curve(tmp)
        cached[mode] = list((tmp / "cache" / "embeddings").glob("*/*.npy"))
    assert len(curves["true"]) == 4 and len(cached["true"]) == 8 + 4 and not cached["false"]
    np.testing.assert_allclose(curves["true"], curves["false"], rtol=2e-3)


def test_a_cold_cache_trains_as_a_warm_one_encoding_only_the_views_drawn(tmp_path):
    """Training views are encoded on first use: a cold run encodes what it draws (not every view), and a warm
    run on the cache it left encodes nothing and follows the same loss curve, augmentation on."""
    from tests.helpers import FAST_RUN, isolated_paths, run_module

    common = ["data.cache_embeddings=true", "data.cache_views=2", "trainer.max_steps=3", "trainer.eval_at_start=false"]
    cache = tmp_path / "shared_cache"
    curves, logs = {}, {}
    for name in ("cold", "warm"):
        tmp = tmp_path / name
        result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), *common, f"data.cache_dir={cache}"])
        logs[name] = result.stdout + result.stderr
        assert result.returncode == 0, logs[name][-3000:]
        curves[name] = loss_curve(tmp)
        if name == "cold":
            cached = len(list(cache.glob("*/*.npy")))
    assert "4 of 4 val views encoded now" in logs["cold"] and "0 of 4 val views encoded now" in logs["warm"]
    drawn = int(re.findall(r"(\d+) of 16 training views encoded on first use", logs["cold"])[-1])
    assert 0 < drawn <= 6 and cached == 4 + drawn  # 3 steps of 2 images: at most 6 of the 8 x 2 views
    assert re.findall(r"(\d+) of 16 training views encoded on first use", logs["warm"])[-1] == "0"
    assert len(curves["cold"]) == 3
    np.testing.assert_allclose(curves["warm"], curves["cold"], rtol=1e-6)


def test_a_batched_fill_writes_the_features_of_a_one_by_one_fill(model, tmp_path):
    """Several views per encoder call store what one view per call stores, in fp32 and in bf16 autocast."""
    views = images(5, seed=1)
    for precision, tolerance in (("float32", 1e-3), ("bfloat16", 2e-2)):

        def encode(batch: torch.Tensor, precision=precision):
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
                return model.encode(batch)

        one, batched = (
            EmbeddingCache.for_model(tmp_path / name, model, TINY, precision=precision) for name in ("one", "batched")
        )
        assert one.fill(list(views), 5, encode, batch_size=1) == 5
        assert batched.fill(list(views), 5, encode, batch_size=4) == 5  # a batch of 4, then one of 1
        for view in views:
            for got, want in zip(batched.read(view), one.read(view), strict=True):
                scale = float(want.float().abs().max())
                assert torch.allclose(got.float(), want.float(), rtol=tolerance, atol=tolerance * scale), precision
    fp32 = EmbeddingCache.for_model(tmp_path, model, TINY)
    assert EmbeddingCache.for_model(tmp_path, model, TINY, precision="bfloat16").directory != fp32.directory
