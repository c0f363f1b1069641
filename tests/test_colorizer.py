import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorvid.color import WORK_FORMATS
from colorvid.colorizer import FrameColorizer, _downsample, _Plane, box_filter, guided_upsample
from colorvid.models.effnet_unet import Colorizer, ModelConfig, fuse_conv_bn
from colorvid.smoothing import DEFAULT_STRENGTH, MotionSmoother, TemporalSmoother, detect_cuts, temporal_settings


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    model = Colorizer(ModelConfig()).eval()
    model.render_size = 64
    return fuse_conv_bn(model)


def _frames(width, height, count, rng):
    frames = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray((rng.random((height, width, 3)) * 255).astype(np.uint8), format="rgb24")
        frame.pts = 3 * i + (i % 2)  # irregular, as in variable frame rate video
        frames.append(frame)
    return frames


@pytest.mark.parametrize("work_format,size", [("yuv420p", (66, 50)), ("yuv444p", (65, 49)), ("yuv420p10le", (64, 48))])
def test_luma_is_untouched_and_chroma_is_written(random_model, work_format, size: tuple[int, int]):
    rng = np.random.default_rng(0)
    frames = _frames(*size, 3, rng)
    colorizer = FrameColorizer(random_model, torch.device("cpu"), "bt601")
    out = colorizer.colorize_frames(frames, work_format)
    dtype = np.uint16 if WORK_FORMATS[work_format][0] > 8 else np.uint8
    for src, dst in zip(frames, out):
        assert dst.format.name == work_format
        assert dst.pts == src.pts
        src_y = _Plane.of(src.reformat(format=work_format).planes[0], dtype).array
        assert np.array_equal(_Plane.of(dst.planes[0], dtype).array, src_y)
        cb = _Plane.of(dst.planes[1], dtype).array.astype(float)
        assert cb.std() > 0.1  # the model's colors made it into the chroma plane


def test_input_frames_are_not_modified(random_model):
    frames = _frames(64, 48, 2, np.random.default_rng(1))
    yuv = [f.reformat(format="yuv420p") for f in frames]
    before = [f.to_ndarray().copy() for f in yuv]
    FrameColorizer(random_model, torch.device("cpu"), "bt709").colorize_frames(yuv, "yuv420p")
    assert all(np.array_equal(b, f.to_ndarray()) for b, f in zip(before, yuv))


@pytest.mark.parametrize("dtype,peak", [(torch.uint8, 255), (torch.uint16, 1023)])
@pytest.mark.parametrize("shift_h,shift_w", [(0, 0), (0, 1), (1, 1)])
def test_downsampled_luma_is_the_mean_over_each_chroma_sample(dtype, peak, shift_h, shift_w):
    y = torch.randint(0, peak + 1, (2, 1, 7, 9)).to(dtype)  # odd sizes: the last row and column repeat
    kh, kw = 1 << shift_h, 1 << shift_w
    padded = y.double()
    padded = torch.cat((padded, padded[..., -1:, :]), dim=-2) if 7 % kh else padded
    padded = torch.cat((padded, padded[..., -1:]), dim=-1) if 9 % kw else padded
    expected = F.avg_pool2d(padded, (kh, kw)).float()
    assert torch.equal(_downsample(y, shift_h, shift_w), expected)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 6, 64, 112), (1, 1, 2, 3)])
def test_box_filter_is_the_mean_over_the_window_inside_the_image(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    expected = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    assert torch.allclose(box_filter(x, 2), expected, atol=1e-6)


def test_guided_upsampling_keeps_colors_inside_edges():
    # a dark left half and a bright right half; low-res ab says red left, blue right
    high = torch.zeros(1, 1, 64, 64)
    high[..., 32:] = 1.0
    low = F.interpolate(high, size=(16, 16), mode="area")
    ab_low = torch.cat((torch.where(low < 0.5, 40.0, -40.0), torch.zeros_like(low)), dim=1)
    guided = guided_upsample(ab_low, low, high)
    naive = F.interpolate(ab_low, size=(64, 64), mode="bilinear", align_corners=False)
    # next to the edge the guided result stays closer to each side's color than plain bilinear
    assert (guided[0, 0, :, 30] - 40).abs().mean() < (naive[0, 0, :, 30] - 40).abs().mean()
    assert (guided[0, 0, :, 33] + 40).abs().mean() < (naive[0, 0, :, 33] + 40).abs().mean()


def test_cuts_are_detected_between_shots_only():
    rng = torch.Generator().manual_seed(0)
    shot_a = 20 + 10 * torch.rand(1, 1, 32, 32, generator=rng)
    shot_b = 70 + 10 * torch.rand(1, 1, 32, 32, generator=rng)
    frames = torch.cat([shot_a + i for i in range(4)] + [shot_b + i for i in range(4)])
    cuts = detect_cuts(frames, previous=None)
    assert cuts.tolist() == [True, False, False, False, True, False, False, False]


def test_smoothing_damps_flicker_and_resets_at_cuts():
    lightness = torch.full((6, 1, 8, 8), 50.0)
    lightness[3:] = 90.0  # a cut before frame 3
    ab = torch.zeros(6, 2, 8, 8)
    ab[:, 0] = torch.tensor([20.0, -20.0, 20.0, 60.0, 0.0, 60.0]).view(6, 1, 1)
    out, cuts = TemporalSmoother(0.5)(ab, lightness)
    assert cuts.tolist() == [True, False, False, True, False, False]
    steps = out[1:3, 0].mean((1, 2)) - out[0:2, 0].mean((1, 2))
    assert steps.abs().max() < 40  # unsmoothed, the color jumps by 40 each frame
    assert out[3, 0].mean() == 60.0  # the new shot starts from its own prediction


def test_smoothing_across_batches_equals_one_batch():
    lightness = torch.full((6, 1, 4, 4), 40.0)
    ab = torch.randn(6, 2, 4, 4) * 30
    whole, _ = TemporalSmoother(0.7)(ab, lightness)
    smoother = TemporalSmoother(0.7)
    parts = [smoother(ab[i : i + 2], lightness[i : i + 2])[0] for i in range(0, 6, 2)]
    assert torch.allclose(torch.cat(parts), whole)


def _moving_square(frames: int = 10, step: int = 3, side: int = 12):
    """L and predicted ab of a bright textured square moving right over a textured background.

    The predicted ab is red on the square, flickering by +-10 from frame to frame, and neutral elsewhere.
    Returns (lightness, ab, left edge of the square in each frame).
    """
    h, w = 48, 80
    ys = torch.arange(h).view(h, 1).float()
    xs = torch.arange(w).view(1, w).float()
    background = 40 + 6 * torch.sin(xs / 3.0) * torch.cos(ys / 4.0) + 4 * torch.sin((xs + 2 * ys) / 5.0)
    lightness = background.expand(frames, 1, h, w).clone()
    ab = torch.zeros(frames, 2, h, w)
    lefts = [10 + step * i for i in range(frames)]
    for i, x0 in enumerate(lefts):
        lightness[i, 0, 18 : 18 + side, x0 : x0 + side] = 80 + 5 * torch.sin(xs[:, x0 : x0 + side] - x0)
        ab[i, 0, 18 : 18 + side, x0 : x0 + side] = 60.0 + (10.0 if i % 2 else -10.0)
        ab[i, 1, 18 : 18 + side, x0 : x0 + side] = 40.0
    return lightness, ab, lefts


def test_flow_smoothing_keeps_color_on_a_moving_square_without_a_trail():
    lightness, ab, lefts = _moving_square()
    blended, _ = TemporalSmoother(0.5)(ab, lightness)
    moved, _ = MotionSmoother(0.5)(ab, lightness)
    last, side = len(lefts) - 1, 12
    # background uncovered by the last move: the plain blend leaves a reddish trail, flow does not
    trail = (slice(18, 18 + side), slice(lefts[last - 1], lefts[last]))
    assert blended[last, 0][trail].mean() > 20
    assert moved[last, 0][trail].abs().mean() < 3
    # on the square: flow keeps its color (true mean a = 60) and damps the +-10 flicker
    a_on_square = torch.stack([moved[i, 0, 20:28, x0 + 2 : x0 + side - 2].mean() for i, x0 in enumerate(lefts)])
    assert (a_on_square[2:] - 60).abs().max() < 6
    assert (a_on_square[3:] - a_on_square[2:-1]).abs().max() < 10  # unsmoothed, it jumps by 20
    assert moved[3:, 1, 20:28].amax() < 41  # b on the square is 40: no overshoot


def test_flow_smoothing_resets_at_cuts_and_across_batches():
    lightness, ab, _ = _moving_square(frames=8)
    lightness[5:] = 100 - lightness[5:]  # a cut before frame 5
    ab[5:] = torch.tensor([-30.0, 10.0]).view(1, 2, 1, 1)
    whole, cuts = MotionSmoother(0.7)(ab, lightness)
    assert cuts.tolist() == [True, False, False, False, False, True, False, False]
    assert torch.equal(whole[5], ab[5])  # the new shot starts from its own prediction
    smoother = MotionSmoother(0.7)
    parts = [smoother(ab[i : i + 3], lightness[i : i + 3])[0] for i in range(0, 8, 3)]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-4)


def test_flow_smoothing_with_strength_zero_is_off():
    lightness, ab, _ = _moving_square(frames=4)
    out, _ = MotionSmoother(0.0)(ab, lightness)
    assert torch.equal(out, ab)


@pytest.mark.parametrize("temporal,smooth,expected", [
    (None, None, ("flow", DEFAULT_STRENGTH["flow"])),
    (None, 0.3, ("flow", 0.3)),
    (None, 0.0, ("none", 0.0)),
    ("flow", None, ("flow", DEFAULT_STRENGTH["flow"])),
    ("blend", None, ("blend", DEFAULT_STRENGTH["blend"])),
    ("blend", 0.8, ("blend", 0.8)),
    ("none", None, ("none", 0.0)),
])
def test_temporal_settings(temporal, smooth, expected):
    assert temporal_settings(temporal, smooth) == expected


@pytest.mark.parametrize("temporal,smooth", [("none", 0.5), ("flow", 0.0), ("wobble", None)])
def test_temporal_settings_that_contradict_are_refused(temporal, smooth):
    with pytest.raises(ValueError):
        temporal_settings(temporal, smooth)


@pytest.mark.parametrize("temporal,kind", [(None, TemporalSmoother), ("blend", TemporalSmoother),
                                           ("flow", MotionSmoother)])
def test_colorizer_builds_the_chosen_smoother(random_model, temporal, kind):
    colorizer = FrameColorizer(random_model, torch.device("cpu"), "bt601", smooth=0.5,
                               temporal=temporal)
    assert type(colorizer.smoother) is kind and colorizer.smoother.strength == 0.5
    out = colorizer.colorize_frames(_frames(64, 48, 3, np.random.default_rng(2)), "yuv420p")
    assert len(out) == 3
