"""The strong view's RandAugment + Cutout (dataset/randaugment.py) against PIL, which the official
MLKD code runs image by image: every op and Cutout must give the same pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from dataset.randaugment import OP_INDEX, OPS, apply_op, cutout, draw_strong_params, rand_augment


def pil_op(image: Image.Image, name: str, v: float) -> Image.Image:
    """The official op list (mdistiller/dataset/cifar100.py augment_list), written with PIL."""
    width, height = image.size
    table = {
        "auto_contrast": lambda: ImageOps.autocontrast(image),
        "brightness": lambda: ImageEnhance.Brightness(image).enhance(v),
        "color": lambda: ImageEnhance.Color(image).enhance(v),
        "contrast": lambda: ImageEnhance.Contrast(image).enhance(v),
        "equalize": lambda: ImageOps.equalize(image),
        "identity": lambda: image,
        "posterize": lambda: ImageOps.posterize(image, max(1, int(v))),
        "rotate": lambda: image.rotate(v),
        "sharpness": lambda: ImageEnhance.Sharpness(image).enhance(v),
        "shear_x": lambda: image.transform(image.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
        "shear_y": lambda: image.transform(image.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
        "solarize": lambda: ImageOps.solarize(image, v),
        "translate_x": lambda: image.transform(image.size, Image.AFFINE, (1, 0, v * width, 0, 1, 0)),
        "translate_y": lambda: image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, v * height)),
    }
    return table[name]()


def pil_cutout(image: Image.Image, side: float, left: float, top: float) -> Image.Image:
    """The official CutoutAbs with its draws given (side in pixels; left/top before centring)."""
    if side <= 0:
        return image
    width, height = image.size
    x0, y0 = int(max(0, left - side / 2.0)), int(max(0, top - side / 2.0))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, min(width, x0 + side), min(height, y0 + side)), (125, 123, 114))
    return image


def sample_images(count: int = 24, seed: int = 0) -> np.ndarray:
    """Noise, low-contrast images, a constant channel and a two-level image (edge cases of the LUT ops)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    low_contrast = rng.integers(40, 200, (count, 3, 1, 1)) + rng.integers(-30, 30, (count, 3, 32, 32))
    images[count // 2:] = np.clip(low_contrast, 0, 255).astype(np.uint8)[count // 2:]
    images[1, 1] = 77
    images[2] = np.where(rng.random((3, 32, 32)) < 0.5, 10, 200).astype(np.uint8)
    return images


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image.transpose(1, 2, 0))


@pytest.mark.parametrize("name,low,high", OPS, ids=[op[0] for op in OPS])
def test_each_op_matches_pil_exactly(name: str, low: float, high: float) -> None:
    images = sample_images()
    magnitudes = low + (high - low) * np.random.default_rng(1).random(len(images))
    op = torch.full((len(images),), OP_INDEX[name])
    ours = apply_op(torch.from_numpy(images), op, torch.from_numpy(magnitudes))
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    for image, magnitude, result in zip(images, magnitudes, ours.numpy()):
        expected = np.asarray(pil_op(to_pil(image), name, float(magnitude))).transpose(2, 0, 1)
        np.testing.assert_array_equal(result, expected)


def test_cutout_matches_pil_rectangle() -> None:
    images = sample_images()
    generator = torch.Generator().manual_seed(2)
    boxes = torch.cat([torch.rand(len(images), 1, generator=generator, dtype=torch.float64) * 16,
                       32 - 31 * torch.rand(len(images), 2, generator=generator, dtype=torch.float64)], dim=1)
    boxes[0, 0] = 0.0  # no cutout
    boxes[1] = torch.tensor([15.9, 32.0, 32.0], dtype=torch.float64)  # clipped at the corner
    ours = cutout(torch.from_numpy(images), boxes).numpy()
    for image, box, result in zip(images, boxes.tolist(), ours):
        np.testing.assert_array_equal(result, np.asarray(pil_cutout(to_pil(image), *box)).transpose(2, 0, 1))


def test_two_ops_in_sequence_and_batched_equals_one_by_one() -> None:
    images = torch.from_numpy(sample_images(8, seed=3))
    params = draw_strong_params(8, torch.Generator().manual_seed(4))
    batched = rand_augment(images, params.ops, params.magnitudes)
    for i in range(8):
        single = rand_augment(images[i:i + 1], params.ops[i:i + 1], params.magnitudes[i:i + 1])
        assert torch.equal(single[0], batched[i])
        expected = to_pil(images[i].numpy())
        for op, magnitude in zip(params.ops[i].tolist(), params.magnitudes[i].tolist()):
            expected = pil_op(expected, OPS[op][0], magnitude)
        np.testing.assert_array_equal(batched[i].numpy(), np.asarray(expected).transpose(2, 0, 1))


def test_draws_lie_in_the_official_ranges() -> None:
    params = draw_strong_params(4000, torch.Generator().manual_seed(5))
    assert params.ops.min() == 0 and params.ops.max() == len(OPS) - 1
    low = torch.tensor([op[1] for op in OPS], dtype=torch.float64)[params.ops]
    high = torch.tensor([op[2] for op in OPS], dtype=torch.float64)[params.ops]
    assert bool(((params.magnitudes >= low) & (params.magnitudes < high)).all())
    side, left, top = params.cutout.unbind(1)
    assert 0 <= float(side.min()) and float(side.max()) < 16
    assert 1 < float(torch.minimum(left, top).min()) and float(torch.maximum(left, top).max()) <= 32
    assert params.offsets.min() == 0 and params.offsets.max() == 8 and 0.4 < params.flips.float().mean() < 0.6
    again = draw_strong_params(4000, torch.Generator().manual_seed(5))
    assert torch.equal(again.magnitudes, params.magnitudes) and torch.equal(again.cutout, params.cutout)
