"""The shared inference component: original pixels in, original-size masks out; weights from anywhere."""

import inspect
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from src.cli import CONFIG_DIR
from src.data.user_input import parse_box
from src.errors import CheckpointError, PromptError
from src.tasks.segmentation.dataset import resize_image
from src.tasks.segmentation.interactive import ClickSession
from src.tasks.segmentation.losses import mask_iou
from src.tasks.segmentation.metrics import clicks_to_reach, mask_dice
from src.tasks.segmentation.predictor import Sam2Predictor, build_predictor, chosen_weights, load_predictor
from src.tasks.segmentation.prompts import Prompts
from src.tasks.segmentation.user_prompts import check_inside, format_prompt, parse_points, user_prompts
from src.tracking.checkpoints import Weights, read_trained_checkpoint
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def predictor() -> Sam2Predictor:
    torch.manual_seed(0)
    cfg = compose_config("predict", ["model.checkpoint=null"])
    return build_predictor(cfg.model, Weights(None, "random initialisation"), 128, torch.device("cpu"), None)


def test_masks_come_back_at_the_original_size_for_any_image(predictor, shapes_image):
    image, _ = shapes_image  # 96 x 128, not square
    encoded = predictor.encode(image)
    single = predictor.predict(encoded, user_prompts([(40, 25, 1)], None))
    assert single.masks().shape == (1, 3, 96, 128) and single.best_masks().shape == (1, 96, 128)
    assert single.best[0] == single.scores[0].argmax()
    boxed = predictor.predict(encoded, user_prompts([(40, 25, 1)], (15, 10, 59, 39)))
    assert boxed.masks().shape == (1, 1, 96, 128)  # a box is no ambiguous prompt: one mask


def test_original_pixels_map_to_the_model_input_it_was_trained_on(predictor, shapes_image):
    """On an image already at the model size, a prompt decodes exactly as the training code decodes it."""
    image = resize_image(shapes_image[0], 128)
    encoded = predictor.encode(image)
    prompts = user_prompts([(40, 25, 1), (100, 70, 0)], None)
    ours = predictor.predict(encoded, prompts)
    assert torch.allclose(predictor.to_model_space(prompts.points, encoded), prompts.points)
    with torch.no_grad():
        direct = predictor.model.decode(
            predictor.model.encode(torch.from_numpy(image).permute(2, 0, 1)[None]),
            torch.zeros(1, dtype=torch.long),
            prompts.points,
            prompts.labels,
        )
    assert torch.allclose(ours.low_res_logits, direct.low_res_logits, atol=1e-5)
    # on a twice as large image, pixel (x, y) is model pixel ((x + 0.5) / 2 - 0.5, ...)
    large = predictor.encode(np.zeros((256, 256, 3), np.uint8))
    assert predictor.to_model_space(torch.tensor([[[0.0, 255.0]]]), large).tolist() == [[[-0.25, 127.25]]]


def test_objects_decode_together_as_they_do_alone(predictor, shapes_image):
    encoded = predictor.encode(shapes_image[0])
    both = Prompts(torch.tensor([[[30.0, 25.0]], [[95.0, 70.0]]]), torch.ones(2, 1, dtype=torch.int32))
    together = predictor.predict(encoded, both).best_masks()
    for row in range(2):
        alone = predictor.predict(encoded, Prompts(both.points[row : row + 1], both.labels[row : row + 1]))
        assert torch.equal(alone.best_masks()[0], together[row])


def test_a_click_session_refines_and_undoes(predictor, shapes_image):
    session = ClickSession(predictor, shapes_image[0], "shapes.png")
    assert session.mask() is None
    first = session.add(30, 25, 1)
    first_mask = session.mask()
    session.add(90, 70, 0)
    assert session.points == [(30.0, 25.0, 1), (90.0, 70.0, 0)]
    # the second round is fed the first mask, so it differs from a fresh two-click prediction
    fresh = predictor.predict(session.encoded, user_prompts(session.points, None))
    assert not torch.allclose(fresh.low_res_logits, session.prediction.low_res_logits)
    session.undo()
    assert session.prediction is first and np.array_equal(session.mask(), first_mask)
    with pytest.raises(PromptError, match=r"\(128, 5\) is outside shapes.png \(128x96 pixels\)"):
        session.add(128, 5, 1)
    session.clear()
    assert session.mask() is None and session.points == []


def test_prompts_as_people_type_them():
    assert parse_points("320,200;100,50,0") == [(320, 200, 1), (100, 50, 0)]
    assert parse_points([[320, 200], [100, 50, 0]]) == [(320, 200, 1), (100, 50, 0)]
    assert parse_points(" 1.5,2 ; ") == [(1.5, 2, 1)] and parse_points(None) == []
    assert parse_box("10,20,200,240") == parse_box([10, 20, 200, 240]) == (10, 20, 200, 240)
    prompts = user_prompts(parse_points("30,40;5,6,0"), parse_box("1,2,50,60"))
    assert prompts.labels.tolist() == [[2, 3, 1, 0]]  # box corners first, as SAM2 combines them
    text = format_prompt(prompts.points[0], prompts.labels[0])
    assert text == "'box=[1,2,50,60]' 'points=[[30,40,1],[5,6,0]]'"  # Hydra lists, quoted for a shell
    cfg = compose_config("predict", shlex.split(text))
    assert parse_box(cfg.box) == (1, 2, 50, 60) and parse_points(cfg.points) == [(30, 40, 1), (5, 6, 0)]


@pytest.mark.parametrize(
    ("points", "fragment"),
    [
        ("320;200", "'320' has 1 numbers"),
        ("320,x", "'320,x' is not a list of numbers"),
        ("1,2,3,4", "has 4 numbers"),
        ("1,2,2", "label 2 in '1,2,2'"),
    ],
)
def test_malformed_points_say_what_is_expected(points, fragment):
    with pytest.raises(PromptError, match="x,y,label") as err:
        parse_points(points)
    assert fragment in str(err.value) and f"points={points}" in str(err.value)


def test_prompts_outside_the_image_are_named():
    with pytest.raises(PromptError, match=r"point \(700, 20\) is outside dog.jpg \(640x480 pixels\).*\[0, 639\]"):
        check_inside([(700, 20, 1)], None, 640, 480, "dog.jpg")
    with pytest.raises(PromptError, match=r"box corner \(650, 470\)"):
        check_inside([], (10, 10, 650, 470), 640, 480, "dog.jpg")
    with pytest.raises(PromptError, match="x0 <= x1"):
        parse_box("50,10,20,40")
    with pytest.raises(PromptError, match="no prompt"):
        user_prompts([], None)


def test_iou_dice_and_clicks_to_reach_on_hand_made_masks():
    gt = torch.zeros(1, 10, 10, dtype=torch.bool)
    gt[0, :, :4] = True  # 40 px
    pred = torch.zeros_like(gt)
    pred[0, :, 2:6] = True  # 40 px, 20 shared, 60 in the union
    assert mask_iou(pred, gt).item() == pytest.approx(1 / 3)
    assert mask_dice(pred, gt).item() == pytest.approx(0.5)
    ious = torch.tensor([[0.5, 0.86, 0.91, 0.95], [0.9, 0.8, 0.92, 0.93], [0.1, 0.2, 0.3, 0.4]])
    assert clicks_to_reach(ious, 0.85).tolist() == [2, 1, 4]  # never reached: all 4 clicks
    assert clicks_to_reach(ious, 0.90).tolist() == [3, 1, 4]


def test_checkpoint_accepts_a_file_a_run_folder_and_an_mlflow_run(fine_tuned_run):
    run, uri = fine_tuned_run, fine_tuned_run["tracking_uri"]
    reference = torch.load(run["best"], weights_only=True)["model"]
    specs = [
        str(run["best"]),
        str(run["run_dir"]),
        run["run_id"],
        f"runs:/{run['run_id']}/checkpoints/best.pt",
        f"runs:/{run['run_id']}/checkpoints",
    ]
    for spec in specs:
        found = read_trained_checkpoint(spec, uri)
        assert found.training_run_id == run["run_id"], spec
        assert found.meta["model"] == "tiny" and found.meta["image_size"] == 128
        assert all(torch.equal(found.checkpoint["model"][k], v) for k, v in reference.items()), spec


def test_checkpoints_that_cannot_be_used_are_explained(fine_tuned_run, tmp_path):
    uri = fine_tuned_run["tracking_uri"]
    client = MlflowClient(uri)
    empty = client.create_run(client.create_experiment("crashed runs"), run_name="crashed").info
    with pytest.raises(CheckpointError, match=rf"MLflow run {empty.run_id} \('crashed', RUNNING\) has no checkpoint"):
        read_trained_checkpoint(empty.run_id, uri)
    with pytest.raises(CheckpointError, match="no MLflow run 0123456789abcdef0123456789abcdef"):
        read_trained_checkpoint("0123456789abcdef0123456789abcdef", uri)
    with pytest.raises(CheckpointError, match="no MLflow store at"):
        read_trained_checkpoint(fine_tuned_run["run_id"], f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with pytest.raises(CheckpointError, match="not an MLflow run; expected a weights file"):
        read_trained_checkpoint(str(tmp_path / "missing.pt"), uri)
    cfg = compose_config(
        "predict",
        [
            "model=small",
            f"checkpoint={fine_tuned_run['run_dir']}",
            f"logger.tracking_uri={uri}",
            "device=cpu",
        ],
    )
    with pytest.raises(CheckpointError, match=r"does not fit model=small.*looks like SAM2\.1 tiny.*use model=tiny"):
        load_predictor(cfg)


def test_the_checkpoint_decides_the_image_size_and_original_ignores_it(fine_tuned_run):
    common = [f"checkpoint={fine_tuned_run['best']}", "model.checkpoint=null", "device=cpu"]
    predictor, weights = load_predictor(compose_config("predict", common))
    assert predictor.image_size == 128 and weights.training_run_id == fine_tuned_run["run_id"]
    original = chosen_weights(compose_config("predict", [*common, "original=true"]))
    assert original.checkpoint is None and original.source == "random initialisation"


def test_the_inference_entry_configs_compose_with_every_group_choice():
    def choices(group: str) -> list[str]:
        return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))

    generator_settings = set(inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters)
    for model in choices("model"):
        for dataset in choices("dataset"):
            cfg = compose_config("evaluate", [f"model={model}", f"dataset={dataset}", "paths.run_dir=/tmp/x"])
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            assert cfg.model.image_size is None and cfg.split == cfg.dataset.val_split  # "eval" for inpainting
        cfg = compose_config("predict", [f"model={model}", "paths.run_dir=/tmp/x"])
        assert OmegaConf.to_container(cfg, resolve=True)["ui"]["host"] == "127.0.0.1"
        for settings in choices("automask"):
            cfg = compose_config("automask", [f"model={model}", f"automask={settings}", "paths.run_dir=/tmp/x"])
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            keys = set(instantiate(cfg.automask).keywords)
            assert keys <= generator_settings, keys - generator_settings  # every setting reaches SAM2's generator
    assert choices("automask") == ["default", "dense"]
