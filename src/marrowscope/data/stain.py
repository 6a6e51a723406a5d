"""Romanowsky stain model: an optical-density (OD) stain basis estimated from data, stain augmentation
in that basis, and colour standardisation with reference statistics that travel with the weights.

May-Grünwald-Giemsa and Wright stains are mixtures of an acidic dye (eosin Y: pink-orange) and basic
thiazine dyes (methylene blue and its oxidation product azure B: blue-purple). In Beer-Lambert optical
density ``OD = -ln(I / I0)`` a pixel is (close to) a non-negative combination of the dyes' OD vectors.
H&E stain vectors (haematoxylin/eosin) do not describe these stains, so the basis is **estimated** from
stained pixels of the training crops: non-negative matrix factorisation (scikit-learn ``NMF``) of the
OD of foreground pixels into two stain vectors, plus a third unit vector orthogonal to both (the
residual axis), giving an invertible 3 x 3 basis ``B`` (rows are unit OD vectors).

- :func:`stain_jitter`: per image, concentrations ``c = OD B^-1`` are scaled and shifted per stain
  (``c' = a c + b``), and the stain vectors themselves are tilted a little (another lab's dye batch
  and pH shift the hues), then mapped back to RGB (Tellez et al. 2018's HED jitter, in a Romanowsky
  basis instead of H&E's).
- :func:`colour_stats` / :func:`standardise`: per-set (per-slide) mean and standard deviation of the
  stain concentrations over foreground pixels; standardisation maps a set's statistics onto reference
  statistics (Reinhard-style, in stain space). The reference statistics are stored in the classifier's
  ``params['colour_reference']`` so inference can standardise a slide the way training data looked.

All torch functions take float batches ``(B, 3, H, W)`` in [0, 1]; random draws come from a
``torch.Generator`` so a run is reproducible under its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: OD of one 8-bit level below white: pixels darker than this in total OD count as stained foreground
OD_EPS = 1.0 / 255.0
FOREGROUND_OD = 0.3  # summed OD over RGB; a white background has ~0, a pale red cell ~0.4


def rgb_to_od(x: torch.Tensor) -> torch.Tensor:
    """Optical density of [0, 1] RGB (white = 0)."""
    return -torch.log(x.clamp(OD_EPS, 1.0))


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    return torch.exp(-od).clamp(0.0, 1.0)


def _complete_basis(v: np.ndarray) -> np.ndarray:
    """Unit rows; a third row orthogonal to the first two (the residual axis), oriented positive."""
    v = np.asarray(v, dtype=np.float64)[:2]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    r = np.cross(v[0], v[1])
    r = r / max(float(np.linalg.norm(r)), 1e-8)
    if r.sum() < 0:
        r = -r
    return np.vstack([v, r])


def estimate_stain_basis(images: np.ndarray, *, max_pixels: int = 200_000, seed: int = 0) -> np.ndarray:
    """3 x 3 OD basis (rows: two stain vectors sorted by hue, then the residual axis) of uint8 RGB
    images ``(N, H, W, 3)``, from NMF of the OD of their stained (foreground) pixels."""
    from sklearn.decomposition import NMF

    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {arr.shape}")
    od = -np.log(np.clip(arr.reshape(-1, 3).astype(np.float64) / 255.0, OD_EPS, 1.0))
    od = od[od.sum(axis=1) > FOREGROUND_OD]
    if len(od) < 100:
        raise ValueError("too few stained pixels to estimate a stain basis (images blank?)")
    rng = np.random.default_rng(seed)
    if len(od) > max_pixels:
        od = od[rng.choice(len(od), max_pixels, replace=False)]
    nmf = NMF(n_components=2, init="nndsvda", max_iter=400, random_state=seed)
    nmf.fit(od)
    v = nmf.components_
    # sort: the more red-absorbing (blue/purple thiazine) vector first, eosin second
    v = v[np.argsort(-(v[:, 0] / np.linalg.norm(v, axis=1)))]
    return _complete_basis(v)


@dataclass(frozen=True)
class StainJitter:
    """Per-image stain perturbation. ``scale``/``shift``: per stain (basic dye, eosin, residual)."""

    scale: tuple[float, float, float] = (0.3, 0.3, 0.15)  # c' = c * U(1 - s, 1 + s)
    shift: tuple[float, float, float] = (0.08, 0.08, 0.04)  # + U(-b, b) (OD units)
    tilt: float = 0.12  # stain-vector tilt: Gaussian sd added to each unit vector, renormalised


def _u(g: torch.Generator, shape: Sequence[int], lo: float | torch.Tensor, hi: float | torch.Tensor
       ) -> torch.Tensor:
    return torch.rand(*shape, generator=g) * (hi - lo) + lo


def stain_jitter(x: torch.Tensor, basis: np.ndarray | Sequence[Sequence[float]], cfg: StainJitter,
                 g: torch.Generator) -> torch.Tensor:
    """Stain-space perturbation of a [0, 1] batch (shape kept, values in [0, 1])."""
    b = x.shape[0]
    dev = x.device
    basis_t = torch.as_tensor(np.asarray(basis, dtype=np.float32))  # (3, 3) rows = OD vectors
    inv = torch.linalg.inv(basis_t)
    od = rgb_to_od(x).permute(0, 2, 3, 1)  # (B, H, W, 3)
    conc = od @ inv.to(dev)  # (B, H, W, 3) stain concentrations
    sc = torch.as_tensor(cfg.scale, dtype=torch.float32)
    sh = torch.as_tensor(cfg.shift, dtype=torch.float32)
    a = _u(g, (b, 3), 1 - sc, 1 + sc).to(dev)
    bias = _u(g, (b, 3), -sh, sh).to(dev)
    fg = (od.sum(dim=-1, keepdim=True) > FOREGROUND_OD * 0.5).float()  # shift only where stained
    conc = conc * a.view(b, 1, 1, 3) + bias.view(b, 1, 1, 3) * fg
    tilted = basis_t.unsqueeze(0) + torch.randn(b, 3, 3, generator=g) * cfg.tilt
    tilted = tilted.clamp_min(0.0)
    tilted = tilted / tilted.norm(dim=2, keepdim=True).clamp_min(1e-6)
    out = torch.einsum("bhwk,bkc->bhwc", conc, tilted.to(dev))
    return od_to_rgb(out.clamp_min(0.0)).permute(0, 3, 1, 2).contiguous()


# --- colour standardisation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColourStats:
    """Mean and standard deviation of the stain concentrations over foreground pixels of a set."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    foreground: float  # fraction of pixels counted as stained

    def to_dict(self) -> dict[str, list[float] | float]:
        return {"mean": list(self.mean), "std": list(self.std), "foreground": self.foreground}

    @staticmethod
    def from_dict(d: dict[str, object]) -> ColourStats:
        m = [float(v) for v in d["mean"]]  # type: ignore[attr-defined]
        s = [float(v) for v in d["std"]]  # type: ignore[attr-defined]
        return ColourStats((m[0], m[1], m[2]), (s[0], s[1], s[2]), float(d.get("foreground", 0.0)))  # type: ignore[arg-type]


#: optical density of each 8-bit value (a look-up replaces a log per pixel)
_OD_LUT = -np.log(np.clip(np.arange(256, dtype=np.float64) / 255.0, OD_EPS, 1.0)).astype(np.float32)


def _conc_np(images: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stain concentrations (float32, ``(..., 3)``) and the foreground mask of RGB images."""
    img = np.asarray(images)
    if img.dtype == np.uint8:
        od = _OD_LUT[img]
    else:
        od = -np.log(np.clip(img.astype(np.float32) / 255.0, OD_EPS, 1.0))
    inv = np.linalg.inv(np.asarray(basis, dtype=np.float64)).astype(np.float32)
    return od @ inv, od.sum(axis=-1) > FOREGROUND_OD


def _stats_of(conc: np.ndarray, fg: np.ndarray) -> ColourStats:
    sel = conc[fg] if fg.any() else conc.reshape(-1, 3)
    m, s = sel.mean(axis=0, dtype=np.float64), sel.std(axis=0, dtype=np.float64) + 1e-6
    return ColourStats((float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2])),
                       float(fg.mean()))


def colour_stats(images: np.ndarray, basis: np.ndarray) -> ColourStats:
    """Stain statistics of uint8 RGB images ``(..., 3)`` (a slide's crops, or a dataset)."""
    return _stats_of(*_conc_np(images, basis))


def _map_conc(conc: np.ndarray, basis: np.ndarray, source: ColourStats, reference: ColourStats
              ) -> np.ndarray:
    sm, ss = np.asarray(source.mean, np.float32), np.asarray(source.std, np.float32)
    rm, rs = np.asarray(reference.mean, np.float32), np.asarray(reference.std, np.float32)
    gain = rs / ss
    conc *= gain
    conc += rm - sm * gain
    od = conc @ np.asarray(basis, dtype=np.float32)
    np.clip(od, 0.0, None, out=od)
    np.negative(od, out=od)
    np.exp(od, out=od)
    od *= 255.0
    np.rint(od, out=od)
    return np.asarray(np.clip(od, 0, 255), dtype=np.uint8)


def standardise(images: np.ndarray, basis: np.ndarray, source: ColourStats, reference: ColourStats
                ) -> np.ndarray:
    """uint8 images whose stain statistics ``source`` are mapped onto ``reference``: a per-stain affine
    map of the concentrations, ``(c - mean_s) / std_s * std_r + mean_r`` (invertible up to 8-bit
    rounding and clipping)."""
    return _map_conc(_conc_np(images, basis)[0], basis, source, reference)


def standardise_to(images: np.ndarray, basis: np.ndarray, reference: ColourStats) -> np.ndarray:
    """:func:`standardise` with the images' own statistics as the source, computed in the same pass."""
    conc, fg = _conc_np(images, basis)
    return _map_conc(conc, basis, _stats_of(conc, fg), reference)


def standardise_units(images: np.ndarray, units: np.ndarray, basis: np.ndarray, reference: ColourStats
                      ) -> np.ndarray:
    """uint8 images with each unit's crops (``units[i]``: the unit of image ``i``, e.g. its slide)
    standardised onto ``reference`` with that unit's own statistics, as inference standardises the
    crops of one slide or set (:func:`standardise_to`)."""
    img = np.asarray(images)
    u = np.asarray(units)
    if u.shape != (len(img),):
        raise ValueError(f"need one unit per image: {len(img)} images, units of shape {u.shape}")
    out = np.empty_like(img)
    for k in np.unique(u):
        sel = np.nonzero(u == k)[0]
        out[sel] = standardise_to(img[sel], basis, reference)
    return out
