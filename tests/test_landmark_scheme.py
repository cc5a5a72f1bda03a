"""The landmark scheme YAML: the seed's groups and colors, flip pairs, and errors that name the key."""

import pytest

from src.tasks.landmarks.scheme import LandmarkScheme, load_scheme


def test_anime_face_28_matches_the_seed_groups_and_colors():
    scheme = load_scheme("anime_face_28")
    assert scheme.num_points == 28
    colors = scheme.colors()
    assert colors[0] == colors[4] == (0, 0, 255)  # contour blue
    assert colors[5] == colors[10] == (0, 200, 0)  # eyebrows green
    assert colors[11] == colors[17] == colors[19] == (255, 215, 0)  # eyes yellow
    assert colors[14] == colors[16] == (255, 0, 255)  # nose magenta
    assert colors[20] == colors[27] == (255, 0, 0)  # mouth red


def test_flip_permutation_swaps_pairs_and_is_its_own_inverse():
    scheme = load_scheme("anime_face_28")
    perm = scheme.flip_permutation()
    assert perm[0] == 4 and perm[11] == 19 and perm[15] == 15
    assert [perm[p] for p in perm] == list(range(28))
    assert scheme.group_of(perm[12]).name == "eyes"


def test_round_trip_through_dict():
    scheme = load_scheme("anime_face_28")
    assert LandmarkScheme.from_config(scheme.to_dict()) == scheme


def test_bad_schemes_name_the_key():
    good = load_scheme("anime_face_28").to_dict()
    with pytest.raises(ValueError, match=r"groups: every index 0\.\.28"):
        LandmarkScheme.from_config({**good, "num_points": 29})
    with pytest.raises(ValueError, match="flip_pairs"):
        LandmarkScheme.from_config({**good, "flip_pairs": [[0, 4], [4, 1]]})
    with pytest.raises(ValueError, match="missing key"):
        LandmarkScheme.from_config({k: v for k, v in good.items() if k != "left_eye"})
    with pytest.raises(FileNotFoundError, match="known: \\['anime_face_28'\\]"):
        load_scheme("no_such_scheme")


def test_annotation_round_trip_and_errors(tmp_path):
    from src.errors import DataError
    from src.tasks.landmarks.annotations import LandmarkAnnotation, annotation_path, load_annotation, save_annotation

    scheme = load_scheme("anime_face_28")
    points = [(i + 0.25, 2.0 * i) for i in range(28)]
    ann = LandmarkAnnotation("raw/site/cat.jpg", 640, 480, scheme.name, points, True, "alice")
    path = save_annotation(ann, tmp_path)
    assert path == annotation_path(tmp_path, "raw/site/cat.jpg") == tmp_path / "cat.json"
    loaded = load_annotation(path, scheme)
    assert loaded.points == points and loaded.width == 640 and loaded.updated_at
    ann.points = points[:5]
    save_annotation(ann, tmp_path)
    with pytest.raises(DataError, match=r"cat\.json: 5 points"):
        load_annotation(path, scheme)
    ann.complete = False
    save_annotation(ann, tmp_path)
    assert len(load_annotation(path, scheme).points) == 5
    path.write_text("{")
    with pytest.raises(DataError, match="not a readable annotation"):
        load_annotation(path)
