"""Microscopy augmentations on RGB uint8 arrays, with or without boxes.

Geometry (flips, 90° rotations, scale) moves boxes with the image; photometry (stain jitter in HED
space, brightness/contrast/saturation/hue jitter, Gaussian blur) changes pixels only. Every function takes
a ``numpy.random.Generator``: the same seed gives the same result.

``AugmentConfig(romanowsky=True)`` replaces that photometry with the classifier's domain randomisation for
other labs (:func:`marrowscope.data.cell_augment.romanowsky_config`: stain-space jitter in an OD basis
estimated for Romanowsky stains, hue/saturation/gamma, blur, resolution loss, noise, JPEG), one image at a
time; the basis comes from the training images (:func:`stain_basis_of`) and is given to the
:class:`Augmenter`.

    aug = Augmenter(AugmentConfig())
    image, boxes = aug.image_boxes(image, boxes, rng)   # boxes (N, 4) x1,y1,x2,y2 in pixels
    image = aug.image(image, rng)                        # crops for a classifier
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths; set a probability to 0 to switch a step off."""

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    scale_range: tuple[float, float] = (0.85, 1.2)  # scale jitter (1.0, 1.0 = off)
    stain: float = 0.8  # probability of HED stain jitter
    stain_sigma: float = 0.05  # multiplicative per-channel jitter of the H, E, D concentrations
    stain_bias: float = 0.01
    color: float = 0.8  # probability of brightness/contrast/saturation/hue jitter
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.2
    hue: float = 0.03  # fraction of the hue circle
    blur: float = 0.2  # probability of Gaussian blur
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    romanowsky: bool = False  # the photometry of cell_augment.romanowsky_config instead of the steps above


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = image.shape[1]
    b = boxes.copy()
    b[:, [0, 2]] = w - boxes[:, [2, 0]]
    return image[:, ::-1], b


def vflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = image.shape[0]
    b = boxes.copy()
    b[:, [1, 3]] = h - boxes[:, [3, 1]]
    return image[::-1], b


def rot90(image: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k`` × 90° counter-clockwise (as ``np.rot90``), boxes with it."""
    b = boxes.copy()
    for _ in range(k % 4):
        w = image.shape[1]
        image = np.rot90(image)
        # (x, y) -> (y, w - x)
        b = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], axis=1)
    return image, b


def rescale(image: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    if abs(factor - 1.0) < 1e-6:
        return image, boxes
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    out = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.Resampling.BILINEAR))
    b = boxes * np.array([nw / w, nh / h, nw / w, nh / h])
    return out, b


_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float, bias: float) -> np.ndarray:
    """Perturb stain concentrations by colour deconvolution (Tellez et al. 2018 style)."""
    rgb = np.maximum(image.astype(np.float32) / 255.0, 1e-6)
    od = -np.log(rgb) @ _HED_FROM_RGB.astype(np.float32)
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    beta = rng.uniform(-bias, bias, 3).astype(np.float32)
    od = od * alpha + beta
    out = np.exp(-(od @ _RGB_FROM_HED.astype(np.float32)))
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - brightness, 1 + brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + gray[..., None]
    if hue > 0:
        # rotate chroma around the grey axis (a cheap hue shift)
        theta = rng.uniform(-hue, hue) * 2 * np.pi
        c, s = np.cos(theta), np.sin(theta)
        k = np.ones(3, dtype=np.float32) / np.sqrt(3.0)
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=np.float32)
        rot = np.eye(3, dtype=np.float32) * c + s * kx + (1 - c) * np.outer(k, k)
        x = x @ rot.T.astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.asarray(gaussian_filter(image, sigma=(sigma, sigma, 0)), dtype=np.uint8)


def stain_basis_of(images: Sequence[np.ndarray], *, seed: int = 0, pixels_per_image: int = 4000
                   ) -> np.ndarray:
    """The Romanowsky OD basis (:func:`marrowscope.data.stain.estimate_stain_basis`) of RGB images of any
    sizes: ``pixels_per_image`` random pixels of each, drawn under ``seed``."""
    from marrowscope.data.stain import estimate_stain_basis

    rng = np.random.default_rng(seed)
    picks = []
    for im in images:
        px = np.asarray(im).reshape(-1, 3)
        picks.append(px[rng.choice(len(px), min(len(px), pixels_per_image), replace=False)])
    if not picks:
        raise ValueError("no images to estimate a stain basis from")
    return estimate_stain_basis(np.concatenate(picks)[None, :, None, :], seed=seed)


def romanowsky_photometric(image: np.ndarray, rng: np.random.Generator, basis: np.ndarray | None
                           ) -> np.ndarray:
    """:func:`marrowscope.data.cell_augment.photometric` under ``romanowsky_config(basis)`` on one uint8 RGB
    image, its torch generator seeded from ``rng``."""
    import torch

    from marrowscope.data.cell_augment import photometric, romanowsky_config

    g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    y = photometric(x, romanowsky_config(basis), g)[0]
    return (y.permute(1, 2, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


class Augmenter:
    """Applies an :class:`AugmentConfig`; stateless apart from the config and, for ``romanowsky``, the stain
    basis (3 x 3 OD rows; ``None``: the domain randomisation without the stain-space step)."""

    def __init__(self, config: AugmentConfig | None = None, stain_basis: np.ndarray | None = None) -> None:
        self.config = config or AugmentConfig()
        self.stain_basis = None if stain_basis is None else np.asarray(stain_basis, dtype=np.float64)

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if c.romanowsky:
            return romanowsky_photometric(image, rng, self.stain_basis)
        if c.stain > 0 and rng.random() < c.stain:
            image = stain_jitter(image, rng, c.stain_sigma, c.stain_bias)
        if c.color > 0 and rng.random() < c.color:
            image = color_jitter(image, rng, c.brightness, c.contrast, c.saturation, c.hue)
        if c.blur > 0 and rng.random() < c.blur:
            image = gaussian_blur(image, float(rng.uniform(*c.blur_sigma)))
        return image

    def image_boxes(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment an image and its (N, 4) boxes; returns a contiguous uint8 image and float boxes."""
        c = self.config
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lo, hi = c.scale_range
        if hi > lo:
            image, b = rescale(image, b, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        if rng.random() < c.hflip:
            image, b = hflip(image, b)
        if rng.random() < c.vflip:
            image, b = vflip(image, b)
        if c.rot90:
            image, b = rot90(image, b, int(rng.integers(0, 4)))
        image = self.photometric(np.ascontiguousarray(image), rng)
        return np.ascontiguousarray(image), b

    def image(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment an image without boxes (e.g. a classifier crop; scale jitter left out)."""
        c = self.config
        if rng.random() < c.hflip:
            image = image[:, ::-1]
        if rng.random() < c.vflip:
            image = image[::-1]
        if c.rot90:
            image = np.rot90(image, int(rng.integers(0, 4)))
        return np.ascontiguousarray(self.photometric(np.ascontiguousarray(image), rng))
