"""Animal characters: real gallery-dl against a fake booru on 127.0.0.1 (Gelbooru 0.2 XML API and
Danbooru JSON API), the rating filter, the archive, seeded stable split lists, masks, training."""

import hashlib
import http.server
import json
import threading
import urllib.parse

import cv2
import numpy as np
import pytest

from src.errors import ConfigError, DownloadError
from src.prepare import prepare
from tests.prepare_helpers import output, run_prepare, train_briefly

QUIET = ["prepare.gallery_dl.sleep=0", "prepare.gallery_dl.retries=0"]


def post_image(post_id: int) -> bytes:
    """A small drawing: a coloured head with two ears on white."""
    rng = np.random.default_rng(post_id)
    image = np.full((72, 64, 3), 255, np.uint8)
    colour = tuple(int(c) for c in rng.integers(0, 200, 3))
    cv2.circle(image, (32, 44), 20, colour, -1)
    cv2.fillPoly(image, [np.array([(14, 34), (20, 6), (30, 28)]), np.array([(50, 34), (44, 6), (34, 28)])], colour)
    return cv2.imencode(".png", image)[1].tobytes()


class FakeBooru:
    """Answers as Gelbooru 0.2 (`/index.php?page=dapi&s=post&q=index`, XML) and Danbooru (`/posts.json`)
    do, serves the files, and records every request with its User-Agent."""

    def __init__(self, posts: list[dict]):
        self.posts, self.requests = posts, []
        booru = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                booru.requests.append((url.path, query, self.headers.get("User-Agent")))
                wanted = set(query.get("tags", "").split())
                found = [p for p in booru.posts if wanted <= set(p["tags"].split())][: int(query.get("limit", 100))]
                if url.path == "/index.php" and query.get("page") == "dapi":
                    self.reply(booru.xml(found), "text/xml")
                elif url.path == "/posts.json":
                    self.reply(json.dumps([booru.danbooru(p) for p in found]).encode(), "application/json")
                elif url.path.startswith("/images/"):
                    post = next(p for p in booru.posts if url.path == f"/images/{p['md5']}.png")
                    self.reply(post_image(post["id"]), "image/png")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def file_url(self, post: dict) -> str:
        return self.url(f"/images/{post['md5']}.png")

    def xml(self, posts: list[dict]) -> bytes:
        items = "".join(
            f'<post id="{p["id"]}" file_url="{self.file_url(p)}" md5="{p["md5"]}" tags=" {p["tags"]} " '
            f'rating="{p["rating"]}" created_at="Sat Jan 04 12:00:00 +0000 2025"/>'
            for p in posts
        )
        return f'<?xml version="1.0" encoding="UTF-8"?><posts count="{len(posts)}" offset="0">{items}</posts>'.encode()

    def danbooru(self, post: dict) -> dict:
        tags = {f"tag_string_{kind}": "" for kind in ("general", "character", "copyright", "artist", "meta")}
        return {
            "id": post["id"], "md5": post["md5"], "file_url": self.file_url(post), "file_ext": "png",
            "rating": post["rating"], "created_at": "2025-01-04T12:00:00.000+00:00", "source": "https://example.org",
            "tag_string": post["tags"], **tags, "tag_string_general": post["tags"],
        }  # fmt: skip

    def files_fetched(self) -> int:
        return sum(path.startswith("/images/") for path, _, _ in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def posts(first: int, count: int, rating: str, tags: str = "animal_ears solo") -> list[dict]:
    return [
        {"id": i, "md5": hashlib.md5(str(i).encode()).hexdigest(), "tags": tags, "rating": rating}
        for i in range(first, first + count)
    ]


@pytest.fixture
def booru():
    server = FakeBooru([*posts(1, 9, "s"), *posts(20, 2, "e"), *posts(30, 4, "g", "animal_ears cat")])
    yield server
    server.close()  # closing twice is fine


def crawl_args(booru, source: str, *extra: str) -> list[str]:
    return ["dataset=animal", f"prepare.source={source}", f"prepare.sources.{source}.root={booru.url()}",
            f"prepare.sources.{source}.sleep_request=0", *QUIET, *extra]  # fmt: skip


def test_crawl_keeps_safe_posts_with_metadata_splits_them_and_never_downloads_twice(tmp_path, booru):
    result = run_prepare(tmp_path, *crawl_args(booru, "safebooru", "prepare.limit=8"))
    assert result.returncode == 0, output(result)[-3000:]
    root = tmp_path / "data" / "animal"
    images = sorted((root / "raw" / "safebooru").glob("*.png"))
    assert len(images) == 8 and booru.files_fetched() == 8  # limit 8 of 9 safe posts; explicit ones filtered
    for image in images:
        meta = json.loads(image.with_name(image.name + ".json").read_text())
        assert meta["rating"] == "s" and meta["tags"] == "animal_ears solo" and meta["category"] == "safebooru"
    assert all(agent.startswith("samtune") for _, _, agent in booru.requests)
    api = [query for path, query, _ in booru.requests if path == "/index.php"]
    assert api and api[0]["tags"] == "animal_ears solo"
    lists = {s: (root / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in lists.items()} == {"train": 6, "val": 1, "test": 1}  # 0.7/0.2/0.1 of 8
    assert sorted(line for lines in lists.values() for line in lines) == [
        p.relative_to(root).as_posix() for p in images
    ]

    again = run_prepare(tmp_path, *crawl_args(booru, "safebooru", "prepare.limit=8"))
    assert again.returncode == 0 and "0 new images" in again.stdout
    assert booru.files_fetched() == 8  # the archive remembers every post
    assert {s: (root / f"{s}.txt").read_text().splitlines() for s in lists} == lists


def test_a_danbooru_instance_adds_images_and_earlier_ones_keep_their_split(compose_prepare, tmp_path, booru):
    first = prepare(compose_prepare(*crawl_args(booru, "safebooru", "prepare.limit=5")))
    root = first.root
    before = {line: s for s in ("train", "val", "test") for line in (root / f"{s}.txt").read_text().splitlines()}
    report = prepare(compose_prepare(*crawl_args(booru, "danbooru", "prepare.tags=cat", "prepare.ratings=[general]")))
    added = sorted((root / "raw" / "danbooru").glob("*.png"))
    assert len(added) == 4 and all(p.name.startswith("danbooru_3") for p in added)
    meta = json.loads(added[0].with_name(added[0].name + ".json").read_text())
    assert meta["tags_general"] == ["animal_ears", "cat"] and meta["rating"] == "g"
    after = {line: s for s in ("train", "val", "test") for line in (root / f"{s}.txt").read_text().splitlines()}
    assert all(after[line] == split for line, split in before.items()) and len(after) == 9
    assert sum(report.images.values()) == 9
    with pytest.raises(ConfigError, match=r"prepare\.source=nowhere: expected one of safebooru, danbooru"):
        prepare(compose_prepare("dataset=animal", "prepare.source=nowhere"))


def test_character_masks_make_the_listed_images_trainable(compose_prepare, tmp_path, booru, train_run):
    report = prepare(compose_prepare(*crawl_args(booru, "safebooru", "prepare.limit=9")))
    root = report.root
    masks = tmp_path / "masks"
    masks.mkdir()
    listed = [line for s in ("train", "val", "test") for line in (root / f"{s}.txt").read_text().splitlines()]
    for entry in listed[1:]:  # the first listed image has no mask yet
        image = cv2.imread(str(root / entry))
        mask = ((image < 250).any(axis=2) * 255).astype(np.uint8)
        cv2.imwrite(str(masks / (entry.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".png")), mask)
    cfg = compose_prepare("dataset=animal", "prepare.mode=character", f"prepare.mask_dir={masks}")
    made = prepare(cfg)
    assert sum(made.images.values()) == 8 and [s.reason for s in made.skipped] == [
        f"no mask named {listed[0].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png (or .jpg, ...) in {masks}"
    ]
    for split in made.images:
        names = {p.stem for p in (root / "images" / split).iterdir()}
        assert {p.stem for p in (root / "masks" / split).iterdir()} == names
        assert names <= {e.rsplit("/", 1)[-1].rsplit(".", 1)[0] for e in (root / f"{split}.txt").read_text().split()}
    first = next((root / "images").rglob("*.png"))
    assert first.samefile(root / "raw" / "safebooru" / first.name)  # a hard link to the crawl, not a second copy
    assert prepare(cfg).up_to_date
    train_briefly(train_run, tmp_path, "animal", root)


def test_split_mode_follows_the_crawl_folder_and_a_failed_crawl_says_why(compose_prepare, tmp_path, booru):
    report = prepare(compose_prepare(*crawl_args(booru, "safebooru", "prepare.limit=9")))
    lists = {s: (report.root / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    gone = lists["train"][0]
    (report.root / gone).unlink()
    prepare(compose_prepare("dataset=animal", "prepare.mode=split"))
    after = {s: (report.root / f"{s}.txt").read_text().splitlines() for s in lists}
    assert after == {s: [line for line in lines if line != gone] for s, lines in lists.items()}
    booru.close()  # the site goes away
    with pytest.raises(DownloadError, match=r"gallery-dl stopped with status \d+ .*will not be fetched again"):
        prepare(compose_prepare(*crawl_args(booru, "safebooru", "prepare.limit=9")))
    assert {s: (report.root / f"{s}.txt").read_text().splitlines() for s in lists} == after
