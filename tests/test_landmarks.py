"""Landmark building blocks: heatmap coding, NME, flip augmentation, dataset errors, mmpose keys."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.errors import CheckpointError, DataError
from src.tasks.landmarks.dataset import LandmarkAugment, LandmarkDataset
from src.tasks.landmarks.heatmaps import HeatmapCodec
from src.tasks.landmarks.losses import AdaptiveWing, HeatmapMSE
from src.tasks.landmarks.nme import NmeMeter
from src.tasks.landmarks.scheme import load_scheme
from src.tasks.landmarks.synthetic_faces import ensure_synthetic_faces
from tests.helpers import from_conf

SCHEME = load_scheme("anime_face_28")


def test_heatmaps_decode_to_the_encoded_sub_pixel_points():
    size = 128
    points = (0.15 + 0.7 * torch.rand(1, 200, 2, generator=torch.Generator().manual_seed(0))) * size
    refined = from_conf(HeatmapCodec, "task/landmarks", "heatmap", sigma=2.0, blur_kernel=11, stride=4)
    heatmaps, weights = refined.encode(points[0], size)
    assert heatmaps.shape == (200, 32, 32) and bool(weights.all())
    decoded, scores = refined.decode(heatmaps[None])
    error = (decoded - points).abs()
    assert error.max() < 0.25  # well within a pixel of the input, from 4x coarser heatmaps
    assert scores.min() > 0.8
    plain, _ = from_conf(HeatmapCodec, "task/landmarks", "heatmap", sigma=2.0, stride=4, refine=False).decode(
        heatmaps[None]
    )
    assert (plain - points).abs().mean() > 5 * error.mean()  # arg-max alone is off by up to half a cell


def test_points_outside_the_crop_get_no_target_and_no_weight():
    codec = from_conf(HeatmapCodec, "task/landmarks", "heatmap", sigma=2.0, stride=4)
    heatmaps, weights = codec.encode(torch.tensor([[30.0, 30.0], [-5.0, 10.0], [10.0, 64.0]]), 64)
    assert weights.tolist() == [1.0, 0.0, 0.0]
    assert heatmaps[0].max() > 0.9 and heatmaps[1:].abs().sum() == 0
    target = heatmaps[None]
    for loss in (from_conf(HeatmapMSE, "landmark_loss/mse"), from_conf(AdaptiveWing, "landmark_loss/adaptive_wing")):
        wrong_outside = target.clone()
        wrong_outside[0, 1:] = 1.0  # errors on weight-0 points do not count
        assert float(loss(wrong_outside, target, weights[None])["loss"]) == pytest.approx(0.0, abs=1e-6)
        assert float(loss(torch.zeros_like(target), target, weights[None])["loss"]) > 1e-4


def _eyes_points() -> np.ndarray:
    """28 points with box 40 x 10 (sqrt = 20) and eye centres 20 apart."""
    points = np.zeros((28, 2))
    points[:, 0] = np.linspace(0, 40, 28)
    points[:, 1] = 5.0
    points[0, 1], points[1, 1] = 0.0, 10.0
    points[[11, 12, 13]] = [[10, 4], [12, 2], [14, 4]]  # left eye centre (12, 3.33)
    points[[17, 18, 19]] = [[30, 4], [32, 2], [34, 4]]  # right eye centre (32, 3.33)
    return points


def test_nme_against_hand_computed_values():
    true = _eyes_points()
    eyes = list(SCHEME.left_eye + SCHEME.right_eye)
    off_eyes = true.copy()
    off_eyes[eyes] += [3.0, 4.0]  # 6 points 5 px off
    everywhere = true + np.array([3.0, 4.0])  # every point 5 px off
    meter = NmeMeter(SCHEME, "bbox", failure_threshold=0.1)
    per_image = meter.update(np.stack([off_eyes, everywhere, true]), np.stack([true, true, true]))
    assert per_image == pytest.approx([6 * 5 / 28 / 20, 5 / 20, 0.0])
    metrics = meter.compute()
    assert metrics["nme"] == pytest.approx((6 * 5 / 28 / 20 + 0.25) / 3)
    assert metrics["nme_eyes"] == pytest.approx((0.25 + 0.25 + 0) / 3)
    assert metrics["nme_mouth"] == pytest.approx((0 + 0.25 + 0) / 3)
    assert metrics["failure_rate"] == pytest.approx(1 / 3)  # only the image 25% off fails
    assert metrics["images"] == 3
    inter_ocular = NmeMeter(SCHEME, "inter_ocular", failure_threshold=0.2).update(everywhere[None], true[None])
    assert inter_ocular == pytest.approx([5 / 20])


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return ensure_synthetic_faces(tmp_path_factory.mktemp("faces") / "faces", num_train=3, num_val=1, num_test=1)


def test_flip_mirrors_the_crop_and_swaps_left_and_right_points(faces):
    codec = from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4)
    common = {"root": faces, "split": "train", "scheme": SCHEME, "image_size": 64, "codec": codec}
    flip_only = from_conf(
        LandmarkAugment,
        "task/landmarks",
        "augmentation",
        hflip=1.0,
        rotation=0,
        scale=(1, 1),
        shift=0,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
    )
    plain, flipped = LandmarkDataset(**common)[0], LandmarkDataset(augment=flip_only, **common)[(0, 7)]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    mirrored = plain["points"].clone()
    mirrored[:, 0] = 63 - mirrored[:, 0]
    for a, b in SCHEME.flip_pairs:  # the mirrored left eye corner is now the right one
        assert torch.allclose(flipped["points"][a], mirrored[b], atol=1e-4)
        assert torch.allclose(flipped["points"][b], mirrored[a], atol=1e-4)
    assert torch.allclose(flipped["points"][15], mirrored[15], atol=1e-4)  # the nose tip stays itself
    assert flipped["points"][0, 0] < flipped["points"][4, 0]  # point 0 is still the viewer's left
    assert torch.equal(flipped["true_points"], plain["true_points"])


def test_rotation_and_scale_move_points_with_the_pixels(faces):
    codec = from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4)
    augment = from_conf(
        LandmarkAugment,
        "task/landmarks",
        "augmentation",
        hflip=0,
        rotation=40,
        scale=(0.6, 1.4),
        shift=0.1,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
    )
    dataset = LandmarkDataset(faces, "train", SCHEME, 64, codec, augment=augment)
    plain = LandmarkDataset(faces, "train", SCHEME, 64, codec)[1]
    item = dataset[(1, 3)]
    assert not torch.allclose(item["points"], plain["points"], atol=1.0)
    # the inverse matrix takes the augmented crop's points back onto the annotation
    inverse = item["inverse"].double()
    back = item["points"].double() @ inverse[:, :2].T + inverse[:, 2]
    assert torch.allclose(back, item["true_points"].double(), atol=1e-3)


def test_dataset_skips_unfinished_annotations_and_names_broken_files(faces, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(faces, root)
    first, second, third = (root / "train.txt").read_text().split()
    record = json.loads((root / "annotated" / f"{Path(second).stem}.json").read_text())
    record["complete"], record["points"] = False, record["points"][:5]
    (root / "annotated" / f"{Path(second).stem}.json").write_text(json.dumps(record))
    (root / "annotated" / f"{Path(third).stem}.json").unlink()
    dataset = LandmarkDataset(root, "train", SCHEME, 64, from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4))
    assert len(dataset) == 1 and dataset.skipped == {"not annotated": 1, "incomplete": 1}

    broken = root / "annotated" / f"{Path(first).stem}.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=str(broken)):
        LandmarkDataset(root, "train", SCHEME, 64, from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4))
    with pytest.raises(DataError, match=r"val\.txt|missing.txt"):
        LandmarkDataset(root, "missing", SCHEME, 64, from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4))

    good = json.loads((faces / "annotated" / f"{Path(first).stem}.json").read_text())
    good["width"] += 10
    broken.write_text(json.dumps(good))
    dataset = LandmarkDataset(root, "train", SCHEME, 64, from_conf(HeatmapCodec, "task/landmarks", "heatmap", stride=4))
    with pytest.raises(DataError, match=f"{broken}.*{Path(first).name}"):
        dataset[0]


def test_mmpose_checkpoint_keys_land_in_the_timm_hrnet_and_head(tmp_path):
    from src.tasks.landmarks.model import build_landmark_model
    from src.tasks.landmarks.weights import load_backbone_checkpoint, mmpose_to_ours, ours_to_mmpose

    cfg = {
        "name": "hrnetv2_w18",
        "image_size": 64,
        "trainable": ["backbone"],
        "backbone": {
            "_target_": "src.tasks.landmarks.model.TimmBackbone",
            "name": "hrnet_w18",
            "feature_location": "",
            "out_indices": [1, 2, 3, 4],
        },
    }
    torch.manual_seed(0)
    source = build_landmark_model(cfg, 28)
    torch.manual_seed(1)
    target = build_landmark_model(cfg, 28)
    own = target.state_dict()
    # key names as mmpose's HRNet and TopdownHeatmapSimpleHead write them
    for key in (
        "backbone.conv1.weight",
        "backbone.layer1.0.downsample.0.weight",
        "backbone.transition1.1.0.0.weight",
        "backbone.stage2.0.branches.1.3.bn2.running_var",
        "backbone.stage4.2.fuse_layers.3.0.0.0.weight",
        "backbone.stage4.2.fuse_layers.0.3.1.bias",
        "keypoint_head.final_layer.0.weight",
        "keypoint_head.final_layer.1.running_mean",
        "keypoint_head.final_layer.3.bias",
    ):
        assert mmpose_to_ours(key) in own, key

    mmpose = {ours_to_mmpose(k): v.clone() for k, v in source.state_dict().items()}
    assert all(k.startswith(("backbone.", "keypoint_head.")) for k in mmpose)
    dropped = "backbone.stage3.0.branches.2.0.conv1.weight"
    del mmpose[dropped]
    mmpose["keypoint_head.extra_layer.weight"] = torch.zeros(3)
    path = tmp_path / "hrnetv2_w18_anime_face.pth"
    torch.save({"state_dict": mmpose, "meta": {"mmpose_version": "0.x"}}, path)

    report = load_backbone_checkpoint(target, path)
    assert report.unmapped == ["keypoint_head.extra_layer.weight"]
    assert report.missing == [mmpose_to_ours(dropped)]
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        if key == mmpose_to_ours(dropped):
            assert not torch.equal(loaded[key], value)  # kept its own initialisation
        else:
            assert torch.equal(loaded[key], value), key
    target.eval(), source.eval()
    images = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        state = source.state_dict()
        state[mmpose_to_ours(dropped)] = loaded[mmpose_to_ours(dropped)]
        source.load_state_dict(state)
        assert torch.allclose(source(images), target(images))

    torch.save({"state_dict": {"unrelated.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="none of its 1 tensors fit"):
        load_backbone_checkpoint(target, tmp_path / "other.pth")


def test_sam2_weights_feed_the_landmark_models_image_encoder(tmp_path):
    from src.models.sam2.build import build_sam2_model
    from src.tasks.landmarks.model import build_landmark_model
    from src.tasks.landmarks.weights import load_backbone_checkpoint

    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    torch.manual_seed(0)
    sam = build_sam2_model(config, 64)
    torch.save({"model": sam.state_dict()}, tmp_path / "sam2.1_hiera_tiny.pt")
    torch.manual_seed(1)
    model = build_landmark_model({"name": "tiny", "sam2_config": config, "image_size": 64, "trainable": []}, 28)
    assert not model.train_backbone and all(not p.requires_grad for p in model.backbone.parameters())
    report = load_backbone_checkpoint(model, tmp_path / "sam2.1_hiera_tiny.pt")
    encoder = {k: v for k, v in sam.state_dict().items() if k.startswith("image_encoder.")}
    assert len(report.loaded) == len(encoder) and not report.unmapped
    assert all(k.startswith("head.") for k in report.missing)  # the head is new
    loaded = model.state_dict()
    assert all(torch.equal(loaded[f"backbone.{k}"], v) for k, v in encoder.items())
    heatmaps = model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert heatmaps.shape == (2, 28, 16, 16) and model.heatmap_stride == 4


def test_a_segmentation_checkpoint_is_refused_by_the_landmark_predictor(tmp_path):
    from src.tasks.landmarks.export import load_exported
    from src.tasks.landmarks.predictor import LandmarkPredictor

    segmentation = {"model": {}, "meta": {"model": "tiny", "sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml"}}
    with pytest.raises(CheckpointError, match=r"best\.pt: not a landmark checkpoint"):
        LandmarkPredictor.from_checkpoint(segmentation, "run/checkpoints/best.pt")
    torch.save({}, tmp_path / "lonely.pth")
    with pytest.raises(CheckpointError, match=r"lonely\.yaml"):
        load_exported(tmp_path / "lonely.pth")


def test_task_weights_round_trip_and_refuse_another_models_checkpoint(compose_cfg):
    from src.tasks.landmarks.task import LandmarkTask

    common = ["task=landmarks", "dataset=synthetic_faces", "model.image_size=64", "model.checkpoint=null"]
    torch.manual_seed(0)
    hrnet = LandmarkTask(compose_cfg([*common, "model=hrnetv2_w18"]), torch.device("cpu"))
    saved = hrnet.export_weights()
    assert saved["meta"]["task"] == "landmarks" and saved["meta"]["heatmap"]["stride"] == 4
    assert saved["meta"]["scheme"]["num_points"] == 28 and saved["meta"]["image_size"] == 64
    torch.manual_seed(1)
    again = LandmarkTask(compose_cfg([*common, "model=hrnetv2_w18"]), torch.device("cpu"))
    again.load_weights(saved, "best.pt")
    assert all(torch.equal(v, saved["model"][k]) for k, v in again.model.state_dict().items())
    tiny = LandmarkTask(compose_cfg([*common, "model=tiny"]), torch.device("cpu"))
    with pytest.raises(CheckpointError, match=r"does not fit the landmark model model=tiny.*trained as hrnetv2_w18"):
        tiny.load_weights(saved, "best.pt")
