import numpy as np
import pytest
import torch
from skimage import color as skcolor

from colorvid.color import lab_to_rgb, rgb_to_chroma, rgb_to_lab, rgb_to_lightness, ycbcr_to_rgb


def _delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    return np.sqrt(((lab1 - lab2) ** 2).sum(-1))


def test_rgb_to_lab_matches_scikit_image():
    rng = np.random.default_rng(1)
    rgb = rng.random((64, 64, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert _delta_e(ours, skcolor.rgb2lab(rgb)).max() < 0.5


def test_lab_to_rgb_matches_scikit_image_in_batches():
    rng = np.random.default_rng(2)
    rgb = rng.random((4, 32, 32, 3))
    lab = skcolor.rgb2lab(rgb)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).numpy()
    # compare in Lab: the Delta-E of the round trip against the original colors
    assert _delta_e(skcolor.rgb2lab(ours.astype(np.float64)), lab).max() < 0.5
    assert np.abs(ours - skcolor.lab2rgb(lab)).max() < 2e-3


def test_out_of_gamut_lab_is_clipped_like_scikit_image():
    lab = np.array([[[50.0, 120.0, -120.0], [90.0, -100.0, 100.0], [5.0, 0.0, 90.0]]])
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    with pytest.warns(UserWarning):
        theirs = skcolor.lab2rgb(lab)
    assert np.abs(ours - theirs).max() < 2e-3


def test_lightness_only_matches_full_conversion():
    rgb = torch.rand(2, 3, 16, 16)
    assert torch.allclose(rgb_to_lightness(rgb), rgb_to_lab(rgb)[:, :1], atol=1e-3)


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("full_range,bit_depth", [(False, 8), (True, 8), (False, 10)])
def test_ycbcr_round_trip(matrix, full_range, bit_depth):
    rgb = torch.rand(3, 8, 8, dtype=torch.float64)
    from colorvid.color import _range_scale, ycbcr_matrices

    y_off, y_span, _, _ = _range_scale(bit_depth, full_range)
    forward, _ = ycbcr_matrices(matrix)
    y = torch.einsum("j,jhw->hw", forward[0], rgb) * y_span + y_off
    cb, cr = rgb_to_chroma(rgb, matrix, full_range, bit_depth).unbind(0)
    back = ycbcr_to_rgb(y, cb, cr, matrix, full_range, bit_depth)
    assert torch.allclose(back, rgb, atol=1e-9)


def test_bt601_matches_scikit_image_ycbcr():
    rgb = np.random.default_rng(3).random((8, 8, 3))
    theirs = skcolor.rgb2ycbcr(rgb)  # BT.601 limited range, 8-bit code values
    ours = rgb_to_chroma(torch.from_numpy(rgb).permute(2, 0, 1), "bt601", full_range=False).permute(1, 2, 0).numpy()
    assert np.abs(ours - theirs[..., 1:]).max() < 0.01


def test_picture_lab_takes_ab_from_lab_and_lightness_from_luma():
    from colorvid.color import luma, picture_lab

    rng = np.random.default_rng(3)
    rgb = rng.random((8, 10, 3))
    ab, lightness = picture_lab(torch.from_numpy(rgb).permute(2, 0, 1).float())
    np.testing.assert_allclose(ab.permute(1, 2, 0).numpy(), skcolor.rgb2lab(rgb)[..., 1:], atol=0.05)
    # the lightness of the gray with the picture's BT.601 luma: what a decoded frame of it gives
    gray = luma(torch.from_numpy(rgb).permute(2, 0, 1)).numpy()[0]
    expected = skcolor.rgb2lab(np.repeat(gray[..., None], 3, axis=-1))[..., 0]
    np.testing.assert_allclose(lightness[0].numpy(), expected, atol=0.05)
