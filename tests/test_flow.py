import math

import pytest
import torch

from colorvid.flow import estimate_flow, inside, warp

HEIGHT, WIDTH = 64, 112  # the model's output size for a 16:9 frame at --render-size 256


def texture(dx: float = 0.0, dy: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(1, 1, H, W) L in 0..100: a sum of sinusoids with a 1/f spectrum, seen shifted by (dx, dy).

    Analytic, so sub-pixel shifts are exact: texture(dx, dy)(x, y) = texture()(x - dx, y - dy).
    """
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(HEIGHT, dtype=torch.float64).view(-1, 1) - dy
    xs = torch.arange(WIDTH, dtype=torch.float64).view(1, -1) - dx
    img = torch.zeros(HEIGHT, WIDTH, dtype=torch.float64)
    for _ in range(60):
        freq = 0.01 * 25 ** torch.rand(1, generator=g, dtype=torch.float64)  # 0.01 .. 0.25 cycles/pixel
        angle, phase = torch.rand(2, generator=g, dtype=torch.float64) * 2 * math.pi
        img += 0.02 / freq * torch.cos(2 * math.pi * freq * (angle.cos() * xs + angle.sin() * ys) + phase)
    img = (img - img.mean()) / img.std()
    return (50 + 12 * img).float().view(1, 1, HEIGHT, WIDTH)


@pytest.mark.parametrize("dx,dy", [(0.3, -0.2), (2.4, -1.7), (5.6, 3.1), (-9.0, 4.5)])
def test_flow_recovers_a_translation(dx, dy):
    flow = estimate_flow(texture(), texture(dx, dy))
    # the current frame at x shows the previous one at x - d: the flow is -d; away
    # from the borders, where content entered or left the frame
    inner = flow[0, :, 12:-12, 12:-12]
    error = torch.stack((inner[0] + dx, inner[1] + dy)).norm(dim=0)
    assert error.mean() < 0.5
    assert error.quantile(0.9) < 0.5


def test_flow_of_a_batch_equals_flow_of_each_pair():
    prev = torch.cat([texture(seed=s) for s in range(3)])
    cur = torch.cat([texture(1.5 * s, -s, seed=s) for s in range(3)])
    batch = estimate_flow(prev, cur)
    for i in range(3):
        assert torch.allclose(batch[i : i + 1], estimate_flow(prev[i : i + 1], cur[i : i + 1]), atol=1e-4)


def test_brightness_flicker_does_not_bias_the_flow():
    flow = estimate_flow(texture(), texture(2.0, 1.0) + 8.0)  # the whole frame 8 L units brighter
    inner = flow[0, :, 12:-12, 12:-12]
    assert (inner[0] + 2.0).abs().mean() < 0.5 and (inner[1] + 1.0).abs().mean() < 0.5


def test_warp_with_zero_flow_is_identity():
    x = torch.rand(2, 3, 17, 29)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 17, 29)), x, atol=1e-5)
    assert inside(torch.zeros(2, 2, 17, 29)).eq(1).all()


def test_warp_moves_by_whole_pixels_and_flags_what_comes_from_outside():
    x = torch.arange(40.0).view(1, 1, 5, 8)
    flow = torch.zeros(1, 2, 5, 8)
    flow[:, 0] = -2.0  # each pixel shows what was 2 pixels to its left
    moved = warp(x, flow)
    assert torch.allclose(moved[..., 2:], x[..., :-2], atol=1e-4)
    assert inside(flow)[0, 0].sum(0).tolist() == [0, 0] + [5] * 6
