"""Building SAM2 inside our Hydra app, loading weights safely, and batched decoding."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from sam2.build_sam import build_sam2

from src.cli import CONFIG_DIR
from src.errors import CheckpointError, ConfigError
from src.models.sam2.build import build_sam2_model, load_sam2_weights
from src.models.sam2.model import Sam2Model
from src.tasks.segmentation.prompts import point_prompts
from src.utils.seeding import torch_generator

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMALL = "configs/sam2.1/sam2.1_hiera_s.yaml"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save({"model": build_sam2_model(TINY, 128).state_dict()}, path)
    return path


def test_building_works_while_our_hydra_app_owns_global_hydra(tiny_weights):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        compose(config_name="train")  # the state inside `python -m src.train`
        model = build_sam2_model(TINY, 128)
        load_sam2_weights(model, tiny_weights, "tiny")
        assert model.image_size == 128
    GlobalHydra.instance().clear()


def test_our_model_equals_stock_build_sam2(tiny_weights, sam2_hydra):
    ours = build_sam2_model(TINY, 128)
    load_sam2_weights(ours, tiny_weights, "tiny")
    stock = build_sam2(TINY, str(tiny_weights), device="cpu", hydra_overrides_extra=["++model.image_size=128"])
    assert ours.state_dict().keys() == stock.state_dict().keys()
    image = torch.rand(1, 3, 128, 128)
    ours.eval()
    with torch.no_grad():
        a, b = ours.forward_image(image), stock.forward_image(image)
    assert torch.allclose(a["vision_features"], b["vision_features"])
    assert (
        ours.sam_mask_decoder.dynamic_multimask_via_stability == stock.sam_mask_decoder.dynamic_multimask_via_stability
    )


def test_a_checkpoint_of_another_size_is_named(tiny_weights):
    small = build_sam2_model(SMALL, 128)
    with pytest.raises(CheckpointError, match=r"does not fit model=small.*SAM2\.1 tiny.*model=tiny"):
        load_sam2_weights(small, tiny_weights, "small")


class Payload:
    """Anything a pickle could construct, i.e. code a checkpoint must never run."""


def test_checkpoints_are_loaded_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_sam2_weights(build_sam2_model(TINY, 128), path, "tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_sam2_weights(build_sam2_model(TINY, 128), tmp_path / "junk.pt", "tiny")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="'model' state dict"):
        load_sam2_weights(build_sam2_model(TINY, 128), tmp_path / "other.pt", "tiny")


def test_each_prompt_is_decoded_against_its_own_image(tiny_weights):
    torch.manual_seed(0)
    sam = build_sam2_model(TINY, 128)
    load_sam2_weights(sam, tiny_weights, "tiny")
    model = Sam2Model(sam, ["sam_mask_decoder"]).eval()
    images = torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8)
    masks = torch.zeros(3, 128, 128, dtype=torch.bool)
    masks[0, 10:50, 10:50] = masks[1, 60:120, 30:90] = masks[2, 5:40, 70:120] = True
    image_index = torch.tensor([0, 1, 1])
    prompts = point_prompts(masks, 1, 0, torch_generator(0))
    with torch.no_grad():
        features = model.encode(images)
        batched = model.decode(features, image_index, prompts.points, prompts.labels, multimask=True)
        for obj, img in enumerate(image_index.tolist()):
            alone = model.decode(
                model.encode(images[img : img + 1]),
                torch.tensor([0]),
                prompts.points[obj : obj + 1],
                prompts.labels[obj : obj + 1],
                multimask=True,
            )
            assert torch.allclose(batched.low_res_logits[obj], alone.low_res_logits[0], atol=1e-4)
    assert batched.low_res_logits.shape == (3, 3, 32, 32) and batched.iou_pred.shape == (3, 3)
    # and the two objects of image 1 differ from what image 0 would give
    with torch.no_grad():
        wrong = model.decode(features, torch.tensor([0, 0, 0]), prompts.points, prompts.labels, multimask=True)
    assert not torch.allclose(wrong.low_res_logits[1], batched.low_res_logits[1], atol=1e-3)


def test_frozen_parts_stay_frozen_and_in_eval_mode():
    model = Sam2Model(build_sam2_model(TINY, 128), ["sam_mask_decoder", "sam_prompt_encoder"]).train()
    assert not model.sam.image_encoder.training and model.sam.sam_mask_decoder.training
    assert all(not p.requires_grad for p in model.sam.image_encoder.parameters())
    assert all(p.requires_grad for p in model.sam.sam_mask_decoder.parameters())
    images = torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8)
    assert not model.encode(images).image_embed.requires_grad
    full = Sam2Model(build_sam2_model(TINY, 128), ["image_encoder", "sam_mask_decoder"]).train()
    assert full.encode(images).image_embed.requires_grad
    with pytest.raises(ConfigError, match=r"model\.trainable"):
        Sam2Model(build_sam2_model(TINY, 128), ["decoder"])


def test_image_size_must_suit_sam2():
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_sam2_model(TINY, 100)
    with pytest.raises(ConfigError, match="sam2_config"):
        build_sam2_model("configs/sam2.1/nope.yaml", 128)
