"""Color math: sRGB <-> CIE Lab (D65), Y'CbCr <-> RGB, and the names of color spaces.

Every function is pure and batched: tensors are (..., 3, H, W) float, on any
device, in any float dtype. The Lab formulas follow scikit-image's
``rgb2lab``/``lab2rgb`` (D65, 2 degree observer) so results agree with it.

A Y'CbCr matrix is named "bt601", "bt709" or "bt2020" throughout colorvid;
:func:`sws_colorspace` and :func:`sws_color_range` give the names FFmpeg's
swscale (``VideoFrame.reformat``) takes for a matrix and a range.
"""

from __future__ import annotations

import torch

# sRGB (linear) -> XYZ, as in scikit-image.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # (6/29)^3: where the Lab cube root turns linear
_KAPPA_SLOPE = 7.787  # slope of that linear part

# Luma coefficients (Kr, Kb) of the Y'CbCr matrices we read and write.
LUMA_COEFFICIENTS = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}


# Matrix name -> swscale colorspace name.
_SWS_COLORSPACE = {"bt601": "itu601", "bt709": "itu709", "bt2020": "bt2020"}

# Planar Y'CbCr formats colorvid writes chroma into: name -> (bit depth, log2 chroma subsampling w, h).
WORK_FORMATS = {
    "yuv420p": (8, 1, 1),
    "yuv422p": (8, 1, 0),
    "yuv444p": (8, 0, 0),
    "yuvj420p": (8, 1, 1),
    "yuvj422p": (8, 1, 0),
    "yuvj444p": (8, 0, 0),
    "yuv420p10le": (10, 1, 1),
    "yuv422p10le": (10, 1, 0),
    "yuv444p10le": (10, 0, 0),
}


def sws_colorspace(matrix: str) -> str:
    """swscale's ``src_colorspace``/``dst_colorspace`` name of a matrix."""
    return _SWS_COLORSPACE[matrix]


def sws_color_range(full_range: bool) -> str:
    """swscale's ``src_color_range``/``dst_color_range`` name of a range."""
    return "JPEG" if full_range else "MPEG"


def work_format(pix_fmt: str, bit_depth: int) -> str:
    """The planar format frames of ``pix_fmt`` are colorized in: their own where chroma can be
    written into it, else 4:4:4 at their depth (RGB, gray, packed and semi-planar formats)."""
    if pix_fmt in WORK_FORMATS:
        return pix_fmt
    return "yuv444p10le" if bit_depth > 8 else "yuv444p"


def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # x: (..., 3, H, W); m: (3, 3); result[..., i] = sum_j m[i, j] x[..., j]
    return torch.einsum("ij,...jhw->...ihw", m, x)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, lin * 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> Lab (L in [0, 100], a and b roughly in [-128, 127])."""
    xyz = _apply_matrix(_matrix(_XYZ_FROM_RGB, rgb), srgb_to_linear(rgb))
    white = _matrix(_WHITE_D65, rgb).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > _EPSILON, t.clamp_min(_EPSILON) ** (1 / 3), _KAPPA_SLOPE * t + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    lightness = 116 * fy - 16
    return torch.stack((lightness, 500 * (fx - fy), 200 * (fy - fz)), dim=-3)


def luma(rgb: torch.Tensor, matrix: str = "bt601") -> torch.Tensor:
    """Y' of R'G'B' with a matrix's coefficients (BT.601 by default): (..., 3, H, W) -> (..., 1, H, W)."""
    kr, kb = LUMA_COEFFICIENTS[matrix]
    r, g, b = rgb.unbind(-3)
    return (kr * r + (1 - kr - kb) * g + kb * b).unsqueeze(-3)


def picture_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R'G'B' in [0, 1] (..., 3, H, W) -> (ab (..., 2, H, W), L (..., 1, H, W)) of a color picture of a
    frame (a keyframe), its L made from its BT.601 luma as a frame's is from its Y plane, so that
    the network sees, and the carried colors compare, the lightness a decoded frame gives."""
    return rgb_to_lab(rgb)[..., 1:, :, :], luma_to_lightness(luma(rgb) * 255.0, 8, True)


def luminance_to_lightness(y: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y (linear, white = 1) -> Lab L."""
    f = torch.where(y > _EPSILON, y.clamp_min(_EPSILON) ** (1 / 3), _KAPPA_SLOPE * y + 16 / 116)
    return 116 * f - 16


def rgb_to_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """Only the L channel of :func:`rgb_to_lab`, shape (..., 1, H, W)."""
    lin = srgb_to_linear(rgb)
    return luminance_to_lightness((_matrix(_XYZ_FROM_RGB[1], rgb).view(3, 1, 1) * lin).sum(-3, keepdim=True))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB clipped to [0, 1]."""
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16) / 116
    fx = fy + a / 500
    fz = (fy - b / 200).clamp_min(0)  # scikit-image clips negative z the same way
    f = torch.stack((fx, fy, fz), dim=-3)
    t = torch.where(f > 6 / 29, f**3, (f - 16 / 116) / _KAPPA_SLOPE)
    xyz = t * _matrix(_WHITE_D65, lab).view(3, 1, 1)
    rgb_from_xyz = torch.linalg.inv(_matrix(_XYZ_FROM_RGB, lab).double()).to(lab.dtype)
    lin = _apply_matrix(rgb_from_xyz, xyz)
    return linear_to_srgb(lin).clamp(0, 1)


def ycbcr_matrices(matrix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb->ycbcr, ycbcr->rgb) 3x3 matrices for full-range, zero-centered chroma."""
    kr, kb = LUMA_COEFFICIENTS[matrix]
    kg = 1 - kr - kb
    forward = torch.tensor(
        [
            [kr, kg, kb],
            [-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5],
            [0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)],
        ],
        dtype=torch.float64,
    )
    return forward, torch.linalg.inv(forward)


def _range_scale(bit_depth: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma span, chroma center, chroma span) in code values."""
    peak = (1 << bit_depth) - 1
    center = float(1 << (bit_depth - 1))
    if full_range:
        return 0.0, float(peak), center, float(peak)
    scale = 1 << (bit_depth - 8)
    return 16.0 * scale, 219.0 * scale, center, 224.0 * scale


def luma_to_gray(y, bit_depth: int, full_range: bool):
    """Y' code values (a tensor or an array) -> the gray level, 0..1 for legal values (not clipped)."""
    y_off, y_span, _, _ = _range_scale(bit_depth, full_range)
    return (y - y_off) / y_span


def luma_to_lightness(y: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    """Y' code values -> Lab L of the gray with that luma (R' = G' = B' = Y')."""
    gray = luma_to_gray(y, bit_depth, full_range)
    # a gray's luminance is its linear value, since the luminance weights sum to 1
    return luminance_to_lightness(srgb_to_linear(gray.clamp(0, 1)))


def ycbcr_to_rgb(
    y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, matrix: str, full_range: bool, bit_depth: int = 8
) -> torch.Tensor:
    """Code-value planes (..., H, W) of equal size -> R'G'B' in [0, 1], (..., 3, H, W)."""
    y_off, y_span, c_mid, c_span = _range_scale(bit_depth, full_range)
    ycc = torch.stack(((y - y_off) / y_span, (cb - c_mid) / c_span, (cr - c_mid) / c_span), dim=-3)
    _, backward = ycbcr_matrices(matrix)
    return _apply_matrix(backward.to(y.dtype).to(y.device), ycc).clamp(0, 1)


def rgb_to_chroma(rgb: torch.Tensor, matrix: str, full_range: bool, bit_depth: int = 8) -> torch.Tensor:
    """R'G'B' in [0, 1] (..., 3, H, W) -> Cb, Cr code values (..., 2, H, W), not rounded."""
    _, _, c_mid, c_span = _range_scale(bit_depth, full_range)
    forward, _ = ycbcr_matrices(matrix)
    chroma = _apply_matrix(forward[1:].to(rgb.dtype).to(rgb.device), rgb)
    return chroma * c_span + c_mid
