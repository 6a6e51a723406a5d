"""Romanowsky stain model: basis estimation, seeded stain augmentation, colour standardisation round trip,
GroupNorm backbone."""

from __future__ import annotations

import numpy as np
import torch

from marrowscope.data.cell_augment import augment_batch, romanowsky_config
from marrowscope.data.stain import (
    StainJitter,
    colour_stats,
    estimate_stain_basis,
    od_to_rgb,
    stain_jitter,
    standardise,
    standardise_to,
    standardise_units,
)

BLUE = np.array([0.55, 0.75, 0.37])  # a thiazine-like OD vector (absorbs red/green: blue-purple)
PINK = np.array([0.05, 0.80, 0.60])  # an eosin-like OD vector (absorbs green: pink)


def _two_dye_images(n: int = 6, s: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c1 = rng.uniform(0, 1.2, (n, s, s, 1)) * (rng.uniform(size=(n, s, s, 1)) > 0.4)
    c2 = rng.uniform(0, 0.8, (n, s, s, 1)) * (rng.uniform(size=(n, s, s, 1)) > 0.4)
    od = c1 * BLUE / np.linalg.norm(BLUE) + c2 * PINK / np.linalg.norm(PINK)
    return np.asarray(np.clip(np.rint(np.exp(-od) * 255), 0, 255), dtype=np.uint8)


def test_estimated_basis_recovers_the_two_dyes() -> None:
    b = estimate_stain_basis(_two_dye_images())
    assert b.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-6)
    cos = np.abs(b[:2] @ np.stack([BLUE, PINK]).T / np.linalg.norm([BLUE, PINK], axis=1))
    assert cos.max(axis=1).min() > 0.97  # each estimated vector matches one dye
    assert abs(float(np.linalg.det(b))) > 1e-3  # invertible


def test_stain_jitter_shapes_ranges_and_seed() -> None:
    imgs = _two_dye_images()
    b = estimate_stain_basis(imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    y1 = stain_jitter(x, b, StainJitter(), torch.Generator().manual_seed(3))
    y2 = stain_jitter(x, b, StainJitter(), torch.Generator().manual_seed(3))
    y3 = stain_jitter(x, b, StainJitter(), torch.Generator().manual_seed(4))
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert float(y1.min()) >= 0.0 and float(y1.max()) <= 1.0
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, y3) and not torch.allclose(y1, x, atol=0.02)
    # no jitter at all: identity up to the OD floor of one 8-bit level
    none = StainJitter(scale=(0, 0, 0), shift=(0, 0, 0), tilt=0.0)
    y0 = stain_jitter(x, b, none, torch.Generator().manual_seed(0))
    assert float((y0 - x).abs().max()) < 2 / 255
    assert float(od_to_rgb(torch.zeros(1)).item()) == 1.0


def test_romanowsky_augment_batch_is_seeded_and_in_range() -> None:
    imgs = _two_dye_images(n=8, s=40)
    cfg = romanowsky_config(estimate_stain_basis(imgs), jpeg_p=0.5, lowres_p=0.5)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    a = augment_batch(x, 32, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, 32, cfg, torch.Generator().manual_seed(1))
    assert a.shape == (8, 3, 32, 32)
    assert torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_colour_standardisation_round_trip() -> None:
    src = _two_dye_images(seed=1)
    ref_imgs = np.asarray(np.clip(src.astype(int) * 0.8 + 10, 0, 255), dtype=np.uint8)  # another "lab"
    b = estimate_stain_basis(src)
    s_src, s_ref = colour_stats(src, b), colour_stats(ref_imgs, b)
    there = standardise(src, b, s_src, s_ref)
    back = standardise(there, b, s_ref, s_src)
    # statistics move to the reference, and the way back restores the image up to 8-bit rounding
    st = colour_stats(there, b)
    np.testing.assert_allclose(st.mean, s_ref.mean, atol=0.06)
    inner = np.abs(back.astype(int) - src.astype(int))
    assert np.median(inner) <= 1 and np.percentile(inner, 95) <= 4
    assert ColourStatsRoundTrip.ok(s_ref)


def test_standardise_units_maps_each_unit_with_its_own_statistics() -> None:
    a = _two_dye_images(seed=3)
    b_lab = np.asarray(np.clip(_two_dye_images(seed=4).astype(int) * 0.7 + 30, 0, 255), dtype=np.uint8)
    basis = estimate_stain_basis(a)
    ref = colour_stats(a, basis)
    both = np.concatenate([a, b_lab])
    units = np.array([7] * len(a) + [2] * len(b_lab))
    out = standardise_units(both, units, basis, ref)
    assert out.shape == both.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[len(a):], standardise_to(b_lab, basis, ref))  # its own statistics
    far = np.abs(np.subtract(colour_stats(b_lab, basis).mean, ref.mean))[:2]
    near = np.abs(np.subtract(colour_stats(out[len(a):], basis).mean, ref.mean))[:2]
    assert (near < 0.5 * far).all()
    # pooled, the second lab would be mapped with the mixture's statistics: a different result
    assert not np.array_equal(standardise_to(both, basis, ref)[len(a):], out[len(a):])


class ColourStatsRoundTrip:
    @staticmethod
    def ok(s: object) -> bool:
        from marrowscope.data.stain import ColourStats

        assert isinstance(s, ColourStats)
        return ColourStats.from_dict(s.to_dict()) == s


def test_groupnorm_backbone_saves_and_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from marrowscope.models.classifier import create_classifier, load_classifier, make_spec, save_classifier

    spec = make_spec(("lymphocyte", "monocyte"), params={"norm": "gn"}, input_size=32)
    clf = create_classifier(spec)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in clf.net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.net.modules())
    save_classifier(tmp_path / "w.pt", clf, half=False)
    back = load_classifier(tmp_path / "w.pt", device="cpu")
    x = clf.to_tensor(np.full((2, 32, 32, 3), 128, dtype=np.uint8))
    # per-image normalisation: a sample's output does not depend on the rest of the batch
    one = back.logits(x[:1])
    both = back.logits(torch.cat([x[:1], x[:1] * 0 + 3.0]))
    torch.testing.assert_close(one, both[:1], atol=1e-4, rtol=1e-4)


def test_cli_train_romanowsky_gn_and_fine_tune(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--augment romanowsky --norm gn stores the stain basis, colour reference and OOD statistics in the
    weights; --init-weights fine-tunes them and refuses weights of another normalisation."""
    from marrowscope.cli.main import main
    from marrowscope.models.classifier import load_classifier
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=4)
    base = ["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--epochs", "1", "--input-size",
            "16", "--batch-size", "8", "--eval-every", "1"]
    assert main([*base, "--out", str(tmp_path / "gn"), "--norm", "gn", "--augment", "romanowsky"]) == 0
    clf = load_classifier(tmp_path / "gn" / "classifier.pt")
    p = clf.spec.params
    assert p["norm"] == "gn" and np.asarray(p["stain_basis"]).shape == (3, 3)
    assert set(p["colour_reference"]) >= {"mean", "std"} and p["ood"]["slide_threshold"] > 0
    w = str(tmp_path / "gn" / "classifier.pt")
    assert main([*base, "--out", str(tmp_path / "ft"), "--norm", "gn", "--init-weights", w]) == 0
    assert main([*base, "--out", str(tmp_path / "bad"), "--init-weights", w]) != 0  # bn vs gn
    assert "colour_standardise" not in p  # inference-only standardisation is a separate, later choice
    std_args = ["--out", str(tmp_path / "std"), "--augment", "romanowsky", "--standardise-colour"]
    assert main([*base, *std_args]) == 0
    std = load_classifier(tmp_path / "std" / "classifier.pt")
    assert std.spec.params["colour_standardise"] is True


def test_colour_units_one_per_real_dataset_and_one_per_synthetic_slide() -> None:
    from marrowscope.data.classification_datasets import CropSet
    from marrowscope.engines.train_classifier import colour_units

    def crops(groups: list[int]) -> CropSet:
        n = len(groups)
        return CropSet(images=np.zeros((n, 4, 4, 3), np.uint8), targets=np.zeros((n, 2), np.float32),
                       target_kind=np.zeros(n, np.int8), classes=("a", "b"), labels=("a",) * n,
                       source_labels=("a",) * n, groups=np.asarray(groups, np.int64))

    real_tr, real_va = crops([0, 5, 9]), crops([3])
    syn_tr, syn_va = crops([0, 0, 1, 2]), crops([4, 4])
    parts = [("pbc:x", "pbc", crops([]), {}), ("synth:y", "synth", crops([]), {})]
    tr, va = colour_units(parts, [(real_tr, real_va), (syn_tr, syn_va)])  # type: ignore[list-item]
    assert len(tr) == 7 and len(va) == 3
    assert len(set(tr[:3].tolist())) == 1  # a real dataset's part is one set, whatever its groups
    assert len(set(tr[3:].tolist())) == 3 and tr[3] == tr[4]  # one unit per synthetic patient
    assert not set(tr[:3].tolist()) & set(tr[3:].tolist())  # datasets never share a unit
    assert va[1] == va[2] and va[0] != va[1]


def test_classify_crops_standardises_when_the_weights_ask() -> None:
    from marrowscope.data.stain import ColourStats
    from marrowscope.engines.classify import MIN_STANDARDISE, standardise_crops
    from marrowscope.models.classifier import create_classifier, make_spec

    imgs = _two_dye_images(n=MIN_STANDARDISE, s=16, seed=2)
    b = estimate_stain_basis(imgs)
    ref = colour_stats(imgs, b)
    shifted = ColourStats(tuple(m * 1.5 for m in ref.mean), ref.std, ref.foreground)  # type: ignore[arg-type]
    spec = make_spec(("lymphocyte", "monocyte"), input_size=16, params={
        "stain_basis": b.tolist(), "colour_reference": shifted.to_dict(), "colour_standardise": True})
    clf = create_classifier(spec)
    out = standardise_crops(clf, imgs)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    before = np.abs(np.subtract(ref.mean, shifted.mean))[:2]
    after = np.abs(np.subtract(colour_stats(out, b).mean, shifted.mean))[:2]
    assert (after < 0.6 * before).all()  # moved most of the way to the reference (clipping, 8 bits)
    np.testing.assert_array_equal(standardise_crops(clf, imgs[:4]), imgs[:4])  # too few: unchanged
    off = create_classifier(make_spec(("lymphocyte", "monocyte"), input_size=16))
    np.testing.assert_array_equal(standardise_crops(off, imgs), imgs)
