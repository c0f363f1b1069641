import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorvid.colorizer import WORK_FORMATS, FrameColorizer, _Plane, guided_upsample
from colorvid.model import Colorizer, ModelConfig, fuse_conv_bn
from colorvid.smoothing import TemporalSmoother, detect_cuts


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    model = Colorizer(ModelConfig()).eval()
    return fuse_conv_bn(model)


def _frames(width, height, count, rng):
    frames = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray((rng.random((height, width, 3)) * 255).astype(np.uint8), format="rgb24")
        frame.pts = 3 * i + (i % 2)  # irregular, as in variable frame rate video
        frames.append(frame)
    return frames


@pytest.mark.parametrize("work_format,size", [("yuv420p", (66, 50)), ("yuv444p", (65, 49)), ("yuv420p10le", (64, 48))])
def test_luma_is_untouched_and_chroma_is_written(random_model, work_format, size):
    rng = np.random.default_rng(0)
    frames = _frames(*size, 3, rng)
    colorizer = FrameColorizer(random_model, torch.device("cpu"), "bt601", render_size=64)
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
    FrameColorizer(random_model, torch.device("cpu"), "bt709", render_size=64).colorize_frames(yuv, "yuv420p")
    assert all(np.array_equal(b, f.to_ndarray()) for b, f in zip(before, yuv))


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
