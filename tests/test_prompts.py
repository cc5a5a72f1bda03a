"""Prompt sampler properties: where points land, what boxes cover, where correction clicks go."""

import torch

from src.tasks.segmentation.prompts import (
    BOX,
    LABEL_BOX_BOTTOM_RIGHT,
    LABEL_BOX_TOP_LEFT,
    LABEL_NEGATIVE,
    LABEL_PADDING,
    LABEL_POSITIVE,
    POINT,
    PromptSampler,
    jitter_boxes,
    mask_to_box,
    point_prompts,
    sample_correction_clicks,
)
from src.utils.seeding import torch_generator
from tests.helpers import from_conf


def blobs() -> torch.Tensor:
    masks = torch.zeros(3, 64, 80, dtype=torch.bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 30:60, 40:79] = True
    masks[2, 10:12, 70:72] = True  # a tiny object
    return masks


def lookup(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """mask value under each point: (N, P)."""
    x, y = points[..., 0].long(), points[..., 1].long()
    rows = torch.arange(masks.shape[0])[:, None].expand_as(x)
    return masks[rows, y, x]


def test_positive_points_inside_and_negative_points_outside():
    masks = blobs()
    prompts = point_prompts(masks, positive=5, negative=4, generator=torch_generator(0))
    assert prompts.points.shape == (3, 9, 2) and prompts.labels.shape == (3, 9)
    assert (prompts.labels[:, :5] == LABEL_POSITIVE).all() and (prompts.labels[:, 5:] == LABEL_NEGATIVE).all()
    inside = lookup(masks, prompts.points)
    assert inside[:, :5].all()
    assert not inside[:, 5:].any()


def test_an_object_covering_the_image_gets_padding_instead_of_negative_clicks():
    masks = torch.ones(1, 16, 16, dtype=torch.bool)
    prompts = point_prompts(masks, positive=1, negative=2, generator=torch_generator(0))
    assert prompts.labels.tolist() == [[LABEL_POSITIVE, LABEL_PADDING, LABEL_PADDING]]


def test_tight_boxes_contain_every_object_pixel():
    masks = blobs()
    boxes = mask_to_box(masks)
    assert boxes.tolist()[0] == [10, 5, 29, 19]
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(80), indexing="ij")
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        assert (xs[mask] >= x0).all() and (xs[mask] <= x1).all()
        assert (ys[mask] >= y0).all() and (ys[mask] <= y1).all()


def test_box_jitter_is_bounded_by_noise_fraction_and_pixel_cap():
    masks = blobs()
    boxes = mask_to_box(masks)
    for seed in range(20):
        jittered = jitter_boxes(boxes, 0.1, 2.0, (64, 80), torch_generator(seed))
        sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1).repeat(1, 2)
        assert ((jittered - boxes).abs() <= torch.clamp(sides * 0.1, max=2.0) + 1e-5).all()
        assert (jittered >= 0).all() and (jittered[:, [0, 2]] <= 79).all() and (jittered[:, [1, 3]] <= 63).all()


def test_box_prompts_are_corner_points_with_box_labels():
    sampler = from_conf(PromptSampler, "prompts/default", box_noise=0.0)
    prompts = sampler.initial(blobs(), BOX, torch_generator(0))
    assert prompts.points.shape == (3, 2, 2)
    assert (prompts.labels == torch.tensor([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT])).all()
    assert prompts.points[0].tolist() == [[10, 5], [29, 19]]
    assert not sampler.multimask(prompts)


def test_correction_clicks_land_in_the_error_region_with_the_right_label():
    gt = blobs()
    pred = torch.zeros_like(gt)
    pred[0] = gt[0]
    pred[0, 5:20, 10:15] = False  # object 0: a missed strip -> positive click there
    pred[1, 0:10, 0:10] = True  # object 1: a false detection and a miss
    pred[2] = gt[2]  # object 2: perfect -> negative click on the background
    for seed in range(25):
        points, labels = sample_correction_clicks(gt, pred, torch_generator(seed))
        x, y = points[:, 0, 0].long(), points[:, 0, 1].long()
        assert labels[0, 0] == LABEL_POSITIVE and 10 <= x[0] < 15 and 5 <= y[0] < 20
        error = gt[1, y[1], x[1]] != pred[1, y[1], x[1]]
        assert error and labels[1, 0] == int(gt[1, y[1], x[1]])
        assert labels[2, 0] == LABEL_NEGATIVE and not gt[2, y[2], x[2]]


def test_correction_adds_one_click_per_object_each_round():
    sampler = from_conf(PromptSampler, "prompts/default", correction_clicks=3)
    gt = blobs()
    prompts = sampler.initial(gt, POINT, torch_generator(0))
    assert sampler.multimask(prompts)
    for expected in (2, 3, 4):
        prompts = sampler.correct(gt, torch.zeros_like(gt), prompts, torch_generator(expected))
        assert prompts.num_points == expected
    assert not sampler.multimask(prompts)
    centre = from_conf(PromptSampler, "prompts/default", correction_method="center").correct(
        gt, torch.zeros_like(gt), prompts, torch_generator(0)
    )
    assert lookup(gt, centre.points[:, -1:]).all()  # the centre of a miss lies inside the object


def test_sampling_is_fixed_by_the_seed():
    masks = blobs()
    a = point_prompts(masks, 1, 0, torch_generator(7))
    b = point_prompts(masks, 1, 0, torch_generator(7))
    c = point_prompts(masks, 1, 0, torch_generator(8))
    assert torch.equal(a.points, b.points) and not torch.equal(a.points, c.points)


def test_mode_choice_follows_point_prob():
    always_points = from_conf(PromptSampler, "prompts/default", point_prob=1.0)
    always_boxes = from_conf(PromptSampler, "prompts/default", point_prob=0.0)
    gen = torch_generator(0)
    assert {always_points.choose_mode(gen) for _ in range(10)} == {POINT}
    assert {always_boxes.choose_mode(gen) for _ in range(10)} == {BOX}
    mixed = from_conf(PromptSampler, "prompts/default", point_prob=0.5)
    assert {mixed.choose_mode(gen) for _ in range(50)} == {POINT, BOX}
