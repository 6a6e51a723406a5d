"""Batched microscopy augmentations for single-cell crops, on torch tensors (CPU or GPU).

All functions take a float batch ``(B, 3, H, W)`` in [0, 1] and a ``torch.Generator`` so that a run is
reproducible under its seed. Geometry: any rotation (cells have no orientation), flips, small scale and
shift jitter. Colour: brightness, contrast, saturation, hue, per-channel stain gain and gamma (stain and
scanner variation of May-Grünwald-Giemsa / Pappenheim smears). Optics: Gaussian blur (focus) and noise.

Domain randomisation for other labs (off by default, on in :func:`romanowsky_config`): a stain-space
jitter in an OD basis estimated for Romanowsky stains (:mod:`marrowscope.data.stain`), resolution loss
(down- and up-sampling, a low-NA or low-resolution camera), and JPEG compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from marrowscope.data.stain import StainJitter, stain_jitter


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
    stain_basis: tuple[tuple[float, float, float], ...] | None = None  # 3 x 3 OD basis (rows)
    stain_jitter: StainJitter | None = None  # needs stain_basis
    lowres_p: float = 0.0  # probability of resolution loss
    lowres_factor: tuple[float, float] = (1.5, 3.0)  # downsampling factor range
    jpeg_p: float = 0.0  # probability of JPEG re-compression
    jpeg_quality: tuple[int, int] = (30, 90)


def romanowsky_config(basis: np.ndarray | None, **overrides: object) -> AugmentConfig:
    """The domain-randomisation recipe: stronger scale jitter (+-25 %), stain-space jitter in
    ``basis`` (when given), hue/saturation/gamma, blur (p 0.4), resolution loss (p 0.3), JPEG (p 0.3),
    noise."""
    b = None if basis is None else tuple(tuple(float(v) for v in row) for row in np.asarray(basis))
    cfg = AugmentConfig(scale=0.25, hue=0.05, saturation=0.3, gamma=0.25, stain=0.08, blur_p=0.4,
                        blur_sigma=(0.3, 1.4), noise=0.02, stain_basis=b,  # type: ignore[arg-type]
                        stain_jitter=StainJitter() if b is not None else None, lowres_p=0.3, jpeg_p=0.3)
    return replace(cfg, **overrides)  # type: ignore[arg-type]


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
    if cfg.stain_jitter is not None and cfg.stain_basis is not None:
        x = stain_jitter(x, cfg.stain_basis, cfg.stain_jitter, g)
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
    if cfg.lowres_p > 0:
        x = _lowres(x, cfg, g)
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=g).to(dev) * cfg.noise
    x = x.clamp(0, 1)
    if cfg.jpeg_p > 0:
        x = _jpeg(x, cfg, g)
    return x


def _lowres(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Resolution loss on a random subset: area-downsample by a random factor, bilinear back up."""
    b, _, h, w = x.shape
    sel = torch.nonzero(torch.rand(b, generator=g) < cfg.lowres_p).flatten()
    if not len(sel):
        return x
    f = float(_u(g, 1, cfg.lowres_factor[0], cfg.lowres_factor[1], torch.device("cpu")).item())
    idx = sel.to(x.device)
    small = F.interpolate(x[idx], size=(max(4, round(h / f)), max(4, round(w / f))), mode="area")
    x = x.clone()
    x[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return x


def _jpeg(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """JPEG re-compression (Pillow's libjpeg) of a random subset at random qualities."""
    import io

    from PIL import Image

    b = x.shape[0]
    sel = torch.nonzero(torch.rand(b, generator=g) < cfg.jpeg_p).flatten().tolist()
    q = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (b,), generator=g).tolist()
    if not sel:
        return x
    x = x.clone()
    for i in sel:
        arr = (x[i].detach().cpu().permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(q[i]))
        buf.seek(0)
        with Image.open(buf) as im:
            dec = np.asarray(im.convert("RGB"))
        x[i] = torch.from_numpy(dec.copy()).permute(2, 0, 1).to(x.device).float() / 255.0
    return x


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
