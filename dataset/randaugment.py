"""The "strong" augmentation of FixMatch (Sohn et al., NeurIPS 2020) as MLKD's official code applies
it (Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/dataset/cifar100.py): after RandomCrop(32,
padding 4) and a horizontal flip, two operations drawn with replacement from ``OPS``, each at a
magnitude drawn uniformly from its range, then Cutout of a square of up to half the image width
filled with (125, 123, 114).

Batched on uint8 (B, C, H, W) tensors on any device, every random number drawn beforehand
(``draw_strong_params``), so the fast loader runs it on the device without host syncs and a resumed
run sees the same strong views. Each op reproduces PIL's integer arithmetic, which the official code
runs per image: look-up tables for the point ops, float32 blends truncated to uint8 for the
enhancements, nearest-neighbour affine maps in PIL's 16.16 fixed point (its scale path for the
translations).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

# (operation, lowest magnitude, highest magnitude) in the official order
OPS: tuple[tuple[str, float, float], ...] = (
    ("auto_contrast", 0, 1), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0, 1), ("identity", 0, 1), ("posterize", 4, 8), ("rotate", -30, 30), ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0, 256), ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3))
OP_INDEX = {name: index for index, (name, _, _) in enumerate(OPS)}
CUTOUT_FILL = (125, 123, 114)
CUTOUT_MAX_FRACTION = 0.5
LUT_OPS = ("auto_contrast", "equalize", "identity", "posterize", "solarize")
ENHANCE_OPS = ("brightness", "color", "contrast", "sharpness")
AFFINE_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
FIXED_ONE = 65536  # PIL's 16.16 fixed point


@dataclass
class StrongParams:
    """The random draws of N strong views (index it with positions; move it with ``to``)."""

    offsets: Tensor     # (N, 2) int64: crop corner (row, col) in the zero-padded image
    flips: Tensor       # (N,) bool
    ops: Tensor         # (N, 2) int64: indices into OPS, applied in order
    magnitudes: Tensor  # (N, 2) float64: each op's magnitude, in its range
    cutout: Tensor      # (N, 3) float64: side in pixels (0: none), left and top before centring

    def __getitem__(self, positions: Tensor | slice) -> "StrongParams":
        return StrongParams(*(getattr(self, field.name)[positions] for field in fields(self)))

    def to(self, device: torch.device | str) -> "StrongParams":
        return StrongParams(*(getattr(self, field.name).to(device) for field in fields(self)))


def draw_strong_params(count: int, generator: torch.Generator | None, size: int = 32, padding: int = 4,
                       num_ops: int = 2) -> StrongParams:
    """Draw ``count`` strong views' parameters from ``generator`` (None: torch's default generator).

    As the official code draws them: ops uniformly with replacement, magnitude low + (high - low) * U,
    Cutout side U * 0.5 * size and corners from ``np.random.uniform(size)``, i.e. between 1 and size.
    """
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    ops = torch.randint(0, len(OPS), (count, num_ops), generator=generator)
    unit = torch.rand(count, num_ops, generator=generator, dtype=torch.float64)
    low = torch.tensor([op[1] for op in OPS], dtype=torch.float64)
    high = torch.tensor([op[2] for op in OPS], dtype=torch.float64)
    magnitudes = low[ops] + (high - low)[ops] * unit
    side = torch.rand(count, 1, generator=generator, dtype=torch.float64) * CUTOUT_MAX_FRACTION * size
    corner = size + (1 - size) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    return StrongParams(offsets, flips, ops, magnitudes, torch.cat([side, corner], dim=1))


def rand_augment(images: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """Apply op ``ops[:, k]`` at ``magnitudes[:, k]`` for k = 0, 1, ... to each image.

    Shapes: images uint8 (B, C, H, W); ops int64 (B, K); magnitudes float64 (B, K) -> uint8 (B, C, H, W).
    Every op family is computed for the whole batch and selected per image (no data-dependent shapes).
    """
    for k in range(ops.shape[1]):
        images = apply_op(images, ops[:, k], magnitudes[:, k])
    return images


def is_one_of(op: Tensor, names: tuple[str, ...]) -> Tensor:
    """(B,) bool: the op index is one of ``names`` (no host-to-device copy)."""
    found = torch.zeros_like(op, dtype=torch.bool)
    for name in names:
        found |= op == OP_INDEX[name]
    return found


def apply_op(images: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """One op per image: (B, C, H, W) uint8, (B,) int64, (B,) float64 -> (B, C, H, W) uint8."""
    by_lut = apply_lut(images, point_luts(images, op, magnitude))
    enhanced = enhance(images, op, magnitude)
    moved = affine_nearest(images, op, magnitude)
    selected = torch.where(is_one_of(op, ENHANCE_OPS)[:, None, None, None], enhanced, by_lut)
    return torch.where(is_one_of(op, AFFINE_OPS)[:, None, None, None], moved, selected)


# ---------------------------------------------------------------- point ops (look-up tables)
def point_luts(images: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """Per image and channel look-up table of the point ops (identity for the others): (B, C, 256) int64.

    PIL ImageOps: autocontrast (cutoff 0), equalize, posterize(int(v) bits), solarize(v)."""
    batch, channels = images.shape[:2]
    levels = torch.arange(256, device=images.device)
    identity = levels.expand(batch, channels, 256)
    selections = {"auto_contrast": auto_contrast_lut(images), "equalize": equalize_lut(images)}
    bits = magnitude.trunc().clamp(min=1).long()  # int(v), max(1, v)
    shift = 8 - bits
    keep = (torch.full_like(bits, 255) >> shift) << shift
    selections["posterize"] = (levels[None, :] & keep[:, None])[:, None, :].expand(batch, channels, 256)
    solarized = torch.where(levels[None, :] < magnitude[:, None], levels[None, :], 255 - levels[None, :])
    selections["solarize"] = solarized[:, None, :].expand(batch, channels, 256)
    lut = identity
    for name, table in selections.items():
        lut = torch.where((op == OP_INDEX[name])[:, None, None], table, lut)
    return lut


def apply_lut(images: Tensor, lut: Tensor) -> Tensor:
    """out[b, c, y, x] = lut[b, c, images[b, c, y, x]]."""
    flat = images.flatten(2).long()
    return lut.gather(2, flat).view_as(images).to(torch.uint8)


def auto_contrast_lut(images: Tensor) -> Tensor:
    """PIL ImageOps.autocontrast per channel: lut[i] = clip(int(i * 255 / (hi - lo) - lo * 255 / (hi - lo)))."""
    low = images.amin(dim=(2, 3)).double()
    high = images.amax(dim=(2, 3)).double()
    spread = (high - low).clamp(min=1)
    scale = torch.full_like(spread, 255.0) / spread  # not 255.0 / spread: that multiplies by a reciprocal
    offset = -low * scale
    levels = torch.arange(256, device=images.device, dtype=torch.float64)
    stretched = (levels * scale[..., None] + offset[..., None]).trunc().clamp(0, 255).long()
    return torch.where((high > low)[..., None], stretched, levels.long())


def channel_histograms(images: Tensor) -> Tensor:
    """(B, C, H, W) uint8 -> (B, C, 256) int64 counts (bincount on the CPU; scatter_add elsewhere,
    where bincount would wait for the device to size its output)."""
    batch, channels = images.shape[:2]
    flat = images.flatten(2).long()
    if images.device.type == "cpu":
        bins = (flat + 256 * torch.arange(batch * channels).view(batch, channels, 1)).flatten()
        return torch.bincount(bins, minlength=batch * channels * 256).view(batch, channels, 256)
    counts = torch.zeros(batch, channels, 256, dtype=torch.long, device=images.device)
    return counts.scatter_add_(2, flat, torch.ones_like(flat))


def equalize_lut(images: Tensor) -> Tensor:
    """PIL ImageOps.equalize per channel: step = (pixels - count of the last used level) // 255,
    lut[i] = (step // 2 + pixels below level i) // step; identity when step is 0 or one level is used."""
    histogram = channel_histograms(images)
    used = histogram > 0
    last_level = 255 - used.flip(-1).long().argmax(dim=-1, keepdim=True)
    last_count = histogram.gather(-1, last_level).squeeze(-1)
    step = (histogram.sum(-1) - last_count) // 255
    below = histogram.cumsum(-1) - histogram
    equalized = ((step // 2)[..., None] + below) // step.clamp(min=1)[..., None]
    levels = torch.arange(256, device=images.device).expand_as(histogram)
    flat = (used.sum(-1) <= 1) | (step == 0)
    return torch.where(flat[..., None], levels, equalized.clamp(max=255))


# ---------------------------------------------------------------- enhancements (blends)
def grayscale(images: Tensor) -> Tensor:
    """PIL convert('L'): (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16; (B, 1, H, W) float32."""
    pixels = images.int()
    gray = (pixels[:, 0:1] * 19595 + pixels[:, 1:2] * 38470 + pixels[:, 2:3] * 7471 + 0x8000) >> 16
    return gray.float()


def smoothed(images: Tensor) -> Tensor:
    """PIL ImageFilter.SMOOTH: 3x3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13, rounded half up, border pixels
    kept. (B, C, H, W) uint8 -> float32 holding integers (sums of at most 13 * 255 are exact, and
    S / 13 + 0.5 never lies on an integer, so floor() rounds as PIL does)."""
    pixels = images.float()
    height, width = images.shape[-2:]
    total = 4 * pixels[..., 1:-1, 1:-1]
    for row in range(3):
        for col in range(3):
            total = total + pixels[..., row:row + height - 2, col:col + width - 2]
    out = pixels.clone()
    out[..., 1:-1, 1:-1] = torch.floor(total / 13 + 0.5)
    return out


def enhance(images: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """PIL ImageEnhance Brightness / Color / Contrast / Sharpness: blend(degenerate, image, factor) =
    uint8(degenerate + factor * (image - degenerate)) in float32, the degenerate image being black, the
    grayscale image, its rounded mean level, or the smoothed image. Other ops pass through."""
    pixels = images.float()
    gray = grayscale(images)
    mean_level = torch.floor(gray.sum(dim=(1, 2, 3), dtype=torch.float64) / gray[0].numel() + 0.5).float()
    degenerates = {"brightness": torch.zeros_like(pixels), "color": gray.expand_as(pixels),
                   "contrast": mean_level[:, None, None, None].expand_as(pixels), "sharpness": smoothed(images)}
    degenerate = pixels
    for name, candidate in degenerates.items():
        degenerate = torch.where((op == OP_INDEX[name])[:, None, None, None], candidate, degenerate)
    factor = torch.where(is_one_of(op, ENHANCE_OPS), magnitude, 1.0).float()[:, None, None, None]
    blended = degenerate + factor * (pixels - degenerate)
    return blended.clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- geometry (nearest neighbour)
def affine_coefficients(op: Tensor, magnitude: Tensor, height: int, width: int) -> Tensor:
    """PIL's (a, b, c, d, e, f) output-to-input map of each image's op: (B, 6) float64.

    rotate(v): Image.rotate about the centre; shear_x/y(v): (1, v, 0, 0, 1, 0) / (1, 0, 0, v, 1, 0);
    translate_x/y(v): shift by v * width / v * height."""
    value = magnitude.double()
    ones, zeros = torch.ones_like(value), torch.zeros_like(value)
    angle = -torch.deg2rad(torch.remainder(value, 360.0))
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    centre_x, centre_y = width / 2, height / 2
    rotate = torch.stack([cos, sin, cos * -centre_x + sin * -centre_y + centre_x,
                          -sin, cos, -sin * -centre_x + cos * -centre_y + centre_y], dim=1)
    table = {"rotate": rotate,
             "shear_x": torch.stack([ones, value, zeros, zeros, ones, zeros], dim=1),
             "shear_y": torch.stack([ones, zeros, zeros, value, ones, zeros], dim=1),
             "translate_x": torch.stack([ones, zeros, value * width, zeros, ones, zeros], dim=1),
             "translate_y": torch.stack([ones, zeros, zeros, zeros, ones, value * height], dim=1)}
    coefficients = torch.stack([ones, zeros, zeros, zeros, ones, zeros], dim=1)
    for name, candidate in table.items():
        coefficients = torch.where((op == OP_INDEX[name])[:, None], candidate, coefficients)
    return coefficients


def source_pixels(coefficients: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Input (row, col) each output pixel reads, as PIL's nearest affine transform computes it:
    16.16 fixed point when b or d is non-zero, else its floating-point scale path. (B, H, W) int64."""
    a, b, c, d, e, f = coefficients.unbind(1)
    rows = torch.arange(height, device=coefficients.device)[None, :, None]
    cols = torch.arange(width, device=coefficients.device)[None, None, :]

    def fix(value: Tensor) -> Tensor:
        return torch.floor(value * FIXED_ONE + 0.5).long()[:, None, None]

    fixed_col = torch.div(fix(c + a * 0.5 + b * 0.5) + rows * fix(b) + cols * fix(a), FIXED_ONE, rounding_mode="floor")
    fixed_row = torch.div(fix(f + d * 0.5 + e * 0.5) + rows * fix(e) + cols * fix(d), FIXED_ONE, rounding_mode="floor")
    scale_col = (c + a * 0.5)[:, None, None] + a[:, None, None] * cols
    scale_row = (f + e * 0.5)[:, None, None] + e[:, None, None] * rows
    scale_col = torch.where(scale_col < 0, -1, scale_col.floor().long())  # PIL's COORD()
    scale_row = torch.where(scale_row < 0, -1, scale_row.floor().long())
    scaling = ((b == 0) & (d == 0))[:, None, None]
    return (torch.where(scaling, scale_row, fixed_row).expand(-1, height, width),
            torch.where(scaling, scale_col, fixed_col).expand(-1, height, width))


def affine_nearest(images: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """Rotate / shear / translate each image with nearest-neighbour sampling, black outside."""
    batch, channels, height, width = images.shape
    row, col = source_pixels(affine_coefficients(op, magnitude, height, width), height, width)
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).view(batch, 1, height * width)
    moved = images.flatten(2).gather(2, flat.expand(batch, channels, height * width)).view_as(images)
    return moved * inside[:, None].to(images.dtype)


# ---------------------------------------------------------------- cutout
def cutout(images: Tensor, boxes: Tensor, fill: tuple[int, ...] = CUTOUT_FILL) -> Tensor:
    """Official CutoutAbs: a square of side v at (int(max(0, x - v/2)), int(max(0, y - v/2))) drawn
    with PIL's ImageDraw.rectangle (inclusive corners, truncated to int), nothing when v <= 0.

    Shapes: images uint8 (B, C, H, W); boxes float64 (B, 3) = (v, x, y) -> uint8 (B, C, H, W)."""
    _, _, height, width = images.shape
    side, left_raw, top_raw = boxes.double().unbind(1)
    left = (left_raw - side / 2).clamp(min=0).floor()
    top = (top_raw - side / 2).clamp(min=0).floor()
    right = torch.minimum(left + side, torch.full_like(side, float(width))).floor()
    bottom = torch.minimum(top + side, torch.full_like(side, float(height))).floor()
    rows = torch.arange(height, device=images.device, dtype=torch.float64)[None, :, None]
    cols = torch.arange(width, device=images.device, dtype=torch.float64)[None, None, :]
    box = ((rows >= top[:, None, None]) & (rows <= bottom[:, None, None])
           & (cols >= left[:, None, None]) & (cols <= right[:, None, None]) & (side > 0)[:, None, None])
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    colour = torch.zeros_like(channel, dtype=images.dtype)
    for index, level in enumerate(fill):
        colour = torch.where(channel == index, level, colour)
    return torch.where(box[:, None], colour, images)


def strong_augment(images: Tensor, params: StrongParams) -> Tensor:
    """RandAugment (``params.ops`` at ``params.magnitudes``) then Cutout, on cropped and flipped
    uint8 images (B, C, H, W) -> uint8 (B, C, H, W)."""
    return cutout(rand_augment(images, params.ops, params.magnitudes), params.cutout)

