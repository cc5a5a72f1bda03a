"""Bad input gives one clear line naming the file or key, exit status 1, and loses nothing."""

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from src.models.sam2.build import build_sam2_model
from tests.helpers import write_pair


def output(result) -> str:
    return result.stdout + result.stderr


def assert_clean_failure(result, *fragments: str) -> None:
    text = output(result)
    assert result.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    for fragment in fragments:
        assert fragment in text, text[-3000:]


def dataset_with(root, names: list[str], image, ids):
    for split in ("train", "val"):
        for name in names:
            write_pair(root, split, name, image, ids)
    return root


def train_on(train_run, root):
    return train_run(
        "model.checkpoint=null", "model.image_size=128", "dataset=kvasir", f"dataset.root={root}",
        "data.num_workers=0", fast=False,
    )  # fmt: skip


def test_a_missing_mask_is_named(train_run, tmp_path, shapes_image):
    root = dataset_with(tmp_path / "kv", ["a", "lonely"], *shapes_image)
    (root / "masks" / "train" / "lonely.png").unlink()
    assert_clean_failure(train_on(train_run, root), "DataError", "lonely", str(root / "images" / "train"))


def test_an_unknown_choice_lists_the_options(train_run):
    result = train_run("model=huge", fast=False)
    text = output(result)
    assert result.returncode != 0 and "model/huge" in text and "base_plus" in text and "tiny" in text


def test_a_checkpoint_for_another_model_size_is_explained(train_run, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"model": build_sam2_model("configs/sam2.1/sam2.1_hiera_t.yaml", 128).state_dict()}, path)
    result = train_run("model=small", f"model.checkpoint={path}")
    assert_clean_failure(result, "does not fit model=small", "looks like SAM2.1 tiny", "use model=tiny")


def test_a_missing_checkpoint_file_says_what_is_accepted(train_run, tmp_path):
    result = train_run(f"model.checkpoint={tmp_path / 'nope.pt'}")
    assert_clean_failure(result, "nope.pt: no such file", "pretrained", "null")


def test_schedulefree_with_the_cyclic_trainer_is_refused(train_run):
    result = train_run("optimizer=schedulefree", "trainer=cyclic")
    assert_clean_failure(result, "optimizer=schedulefree with trainer=cyclic", "trainer.init_from")


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(train_run, tmp_path):
    result = train_run(
        "optimizer.lr=1e30", "trainer.gradient_clip_norm=null", "trainer.eval_every_steps=1", "trainer.max_steps=20"
    )
    assert_clean_failure(result, "TrainingDiverged", "the loss became nan", "last good checkpoint")
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    diverged_at = int(output(result).split("at step ")[1].split(" ")[0])
    assert saved["meta"]["step"] == diverged_at - 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert run.info.status == "FAILED"


def test_pretrained_weights_that_cannot_be_fetched_suggest_offline_options(train_run, tmp_path):
    from tests.helpers import LocalFileServer

    with LocalFileServer({}) as server:
        result = train_run("model.checkpoint=pretrained", f"model.checkpoint_url={server.url('/sam2.1_hiera_tiny.pt')}")
    assert_clean_failure(result, "HTTP 404", "model.checkpoint=null", str(tmp_path / "cache" / "checkpoints"))


def test_unreadable_images_are_named(train_run, tmp_path, shapes_image):
    root = dataset_with(tmp_path / "kv", ["a"], *shapes_image)
    (root / "images" / "val" / "a.png").write_bytes(np.zeros(10, np.uint8).tobytes())
    assert_clean_failure(train_on(train_run, root), "cannot read", str(root / "images" / "val" / "a.png"))
