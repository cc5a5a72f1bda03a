"""Kvasir-SEG: the real download code against a local server with an archive laid out like the
official one (JPEG masks with compression noise); truncated and corrupt archives; local copies."""

import hashlib
import io
import json
import zipfile

import cv2
import numpy as np
import pytest

from src.errors import DataError
from src.prepare import prepare
from tests.helpers import LocalFileServer
from tests.prepare_helpers import output, run_prepare, train_briefly

ARCHIVE = "/downloads/kvasir-seg.zip"


def kvasir_zip(count: int = 10) -> tuple[bytes, dict[str, tuple[bytes, np.ndarray]]]:
    """A zip like the official one: Kvasir-SEG/images/*.jpg, Kvasir-SEG/masks/*.jpg (noisy JPEG), a JSON."""
    rng = np.random.default_rng(0)
    members = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            h, w = (72, 96) if i % 2 else (80, 64)  # sizes vary, as in the real set
            image = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 2)
            mask = np.zeros((h, w), np.uint8)
            cv2.ellipse(mask, (w // 2, h // 2), (w // 4 + i % 3, h // 5), 0, 0, 360, 255, -1)
            image[mask > 0] = (200, 60, 60)
            name = f"cju{i:04d}"
            image_jpg = cv2.imencode(".jpg", image)[1].tobytes()
            mask_jpg = cv2.imencode(".jpg", cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])[1]
            archive.writestr(f"Kvasir-SEG/images/{name}.jpg", image_jpg)
            archive.writestr(f"Kvasir-SEG/masks/{name}.jpg", mask_jpg.tobytes())
            members[name] = (image_jpg, mask_jpg.tobytes())
        archive.writestr("Kvasir-SEG/kavsir_bboxes.json", json.dumps({}))
    return buffer.getvalue(), members


def kvasir_args(server, data: bytes, count: int = 10) -> list[str]:
    return [
        "dataset=kvasir", f"prepare.url={server.url(ARCHIVE)}", f"prepare.size={len(data)}",
        f"prepare.sha256={hashlib.sha256(data).hexdigest()}", f"prepare.expected_pairs={count}", "prepare.visualize=2",
    ]  # fmt: skip


def test_download_pair_binarise_split_rerun_and_train(tmp_path, train_run):
    data, members = kvasir_zip(10)
    root = tmp_path / "data" / "kvasir"
    with LocalFileServer({ARCHIVE: data}) as server:
        result = run_prepare(tmp_path, *kvasir_args(server, data))
        assert result.returncode == 0, output(result)[-3000:]
        assert "train" in result.stdout and " 8 " in result.stdout and " 2 " in result.stdout
        splits = {s: sorted(p.stem for p in (root / "images" / s).iterdir()) for s in ("train", "val")}
        assert len(splits["train"]) == 8 and len(splits["val"]) == 2
        assert sorted(splits["train"] + splits["val"]) == sorted(members)
        for split, names in splits.items():
            for name in names:
                image_jpg, mask_jpg = members[name]
                assert (root / "images" / split / f"{name}.jpg").read_bytes() == image_jpg  # copied, not re-encoded
                mask = cv2.imread(str(root / "masks" / split / f"{name}.png"), cv2.IMREAD_UNCHANGED)
                noisy = cv2.imdecode(np.frombuffer(mask_jpg, np.uint8), cv2.IMREAD_GRAYSCALE)
                assert len(np.unique(noisy)) > 2 and set(np.unique(mask)) == {0, 255}
                assert np.array_equal(mask > 0, noisy > 127)
        assert len(list((root / "overlays").rglob("*.png"))) == 4  # prepare.visualize=2 per split
        requests, written = len(server.requests), (root / "prepare.json").stat().st_mtime_ns

        again = run_prepare(tmp_path, *kvasir_args(server, data))
        assert again.returncode == 0 and "up to date" in again.stdout
        assert len(server.requests) == requests  # the verified archive is not fetched again
        assert (root / "prepare.json").stat().st_mtime_ns == written
    train_briefly(train_run, tmp_path, "kvasir", root)


def test_a_truncated_download_is_a_clear_error_and_leaves_no_dataset(tmp_path):
    data, _ = kvasir_zip(4)
    with LocalFileServer({ARCHIVE: data}) as server:
        server.truncate[ARCHIVE] = 5
        result = run_prepare(tmp_path, *kvasir_args(server, data, 4), "prepare.retries=1")
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert "DownloadError" in text and "prepare.source=" in text
    assert not (tmp_path / "data" / "kvasir" / "images").exists()
    assert not (tmp_path / "cache" / "datasets" / "kvasir-seg.zip").exists()  # only the resumable .part


def test_a_corrupt_archive_is_refused_and_the_previous_dataset_kept(compose_prepare, tmp_path):
    data, _ = kvasir_zip(4)
    good = tmp_path / "good.zip"
    good.write_bytes(data)
    report = prepare(compose_prepare("dataset=kvasir", f"prepare.source={good}", "prepare.expected_pairs=4"))
    root = report.root
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    broken = bytearray(data)
    broken[len(broken) // 3 : len(broken) // 3 + 64] = b"\0" * 64  # inside a member: a CRC error
    for corrupt in (bytes(broken), data[: len(data) // 2], b"not a zip at all"):
        (tmp_path / "bad.zip").write_bytes(corrupt)
        cfg = compose_prepare("dataset=kvasir", f"prepare.source={tmp_path / 'bad.zip'}", "prepare.expected_pairs=4")
        with pytest.raises(DataError, match=r"bad\.zip (is corrupt|is not a readable zip)"):
            prepare(cfg)
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_local_folder_with_unpaired_files_and_a_count_check(compose_prepare, tmp_path):
    data, _ = kvasir_zip(6)
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "copy")
    (tmp_path / "copy" / "Kvasir-SEG" / "masks" / "cju0003.jpg").unlink()
    folder = tmp_path / "copy"
    with pytest.raises(DataError, match="holds 5 image/mask pairs, Kvasir-SEG has 1000"):
        prepare(compose_prepare("dataset=kvasir", f"prepare.source={folder}"))
    cfg = compose_prepare("dataset=kvasir", f"prepare.source={folder}", "prepare.expected_pairs=null")
    report = prepare(cfg)
    assert report.images == {"train": 4, "val": 1} and report.objects == {"train": 4, "val": 1}
    assert [s.path for s in report.skipped] == ["Kvasir-SEG/images/cju0003.jpg"]
    assert "no image/mask partner" in report.render()
