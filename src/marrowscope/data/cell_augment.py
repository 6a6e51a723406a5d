"""Batched microscopy augmentations for single-cell crops, on torch tensors (CPU or GPU).

All functions take a float batch ``(B, 3, H, W)`` in [0, 1] and a ``torch.Generator`` so that a run is
reproducible under its seed. Geometry: any rotation (cells have no orientation), flips, small scale and
shift jitter. Colour: brightness, contrast, saturation, hue, per-channel stain gain and gamma (stain and
scanner variation of May-Grünwald-Giemsa / Pappenheim smears). Optics: Gaussian blur (focus) and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class AugmentConfig:
    rotate: bool = True
    flip: bool = True
    scale: float = 0.1  # relative zoom jitter (+-)
    shift: float = 0.06  # translation as a fraction of the output side (+-)
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.2
    hue: float = 0.03  # fraction of a full turn
    stain: float = 0.06  # per-channel multiplicative gain jitter
    gamma: float = 0.15
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.1)
    noise: float = 0.015


def _u(g: torch.Generator, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)


def geometric(x: torch.Tensor, out_size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Random rotation/flip/scale/shift about the centre, resampled to ``out_size`` (same mpp)."""
    b, _, h, w = x.shape
    dev = x.device
    ang = _u(g, b, 0.0, 2 * math.pi, dev) if cfg.rotate else torch.zeros(b, device=dev)
    sc = _u(g, b, 1 - cfg.scale, 1 + cfg.scale, dev)
    flip = (torch.rand(b, generator=g) < 0.5).to(dev)
    if not cfg.flip:
        flip = torch.zeros(b, dtype=torch.bool, device=dev)
    tx = _u(g, b, -cfg.shift, cfg.shift, dev) * 2 * out_size / w
    ty = _u(g, b, -cfg.shift, cfg.shift, dev) * 2 * out_size / h
    # output normalised coords span out_size/in_size of the input at scale 1
    fx, fy = out_size / w / sc, out_size / h / sc
    cos, sin = torch.cos(ang), torch.sin(ang)
    sx = torch.where(flip, -1.0, 1.0)
    theta = torch.stack([
        torch.stack([cos * fx * sx, -sin * fy, tx], dim=1),
        torch.stack([sin * fx * sx, cos * fy, ty], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def center_crop(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """The centred ``out_size`` square (the evaluation view of a training-size crop)."""
    h, w = x.shape[-2:]
    if (h, w) == (out_size, out_size):
        return x
    top, left = (h - out_size) // 2, (w - out_size) // 2
    return x[..., top : top + out_size, left : left + out_size]


def photometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Colour, stain, blur and noise jitter; output clamped to [0, 1]."""
    b = x.shape[0]
    dev = x.device
    v = lambda t: t.view(b, 1, 1, 1)  # noqa: E731
    # stain: per-channel gain
    gain = (torch.rand(b, 3, generator=g) * 2 - 1).to(dev) * cfg.stain + 1
    x = x * gain.view(b, 3, 1, 1)
    # brightness, contrast
    x = x * v(_u(g, b, 1 - cfg.brightness, 1 + cfg.brightness, dev))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * v(_u(g, b, 1 - cfg.contrast, 1 + cfg.contrast, dev)) + mean
    # saturation
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - grey) * v(_u(g, b, 1 - cfg.saturation, 1 + cfg.saturation, dev)) + grey
    # hue: rotate chroma in YIQ space
    if cfg.hue > 0:
        a = _u(g, b, -cfg.hue, cfg.hue, dev) * 2 * math.pi
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              device=dev)
        from_yiq = torch.linalg.inv(to_yiq)
        c, s = torch.cos(a), torch.sin(a)
        rot = torch.zeros(b, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
        m = from_yiq @ rot @ to_yiq  # (b, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", m, x)
    x = x.clamp(0, 1)
    if cfg.gamma > 0:
        x = x.clamp_min(1e-4) ** v(torch.exp(_u(g, b, -cfg.gamma, cfg.gamma, dev)))
    if cfg.blur_p > 0:
        sel = torch.rand(b, generator=g) < cfg.blur_p
        if bool(sel.any()):
            idx = torch.nonzero(sel).flatten().to(dev)
            sig = float(_u(g, 1, cfg.blur_sigma[0], cfg.blur_sigma[1], dev).item())
            x = x.clone()
            x[idx] = gaussian_blur(x[idx], sig)
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=g).to(dev) * cfg.noise
    return x.clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment_batch(x: torch.Tensor, out_size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Geometric then photometric augmentation of a [0, 1] batch."""
    return photometric(geometric(x, out_size, cfg, g), cfg, g)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) of the 8 rotations/flips of a square batch (test-time augmentation)."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y
