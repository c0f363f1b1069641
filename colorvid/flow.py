"""Dense optical flow between small lightness images, in torch, batched.

Coarse-to-fine Lucas-Kanade: at each level of an image pyramid the previous
frame is warped by the current flow estimate, and a few Gauss-Newton steps
solve the windowed 2x2 brightness-constancy system per pixel; the flow is
then carried to the next finer level. A small Tikhonov term keeps flat or
edge-only windows (the aperture problem) from producing wild vectors: there
the update shrinks towards zero instead.

It is meant for the model's output resolution (about 64 x 112), where a
whole batch of frame pairs costs a few milliseconds on a CPU. Flow is in
pixels and points from the current frame into the previous one:
``warp(prev, estimate_flow(prev, cur))`` looks like ``cur``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_LEVEL_SIDE = 8  # the coarsest pyramid level keeps its short side at least this long
MAX_LEVELS = 4  # 1/8 scale at most: motions up to ~15 pixels per frame at the finest level
ITERATIONS = 2  # Gauss-Newton steps per level (more did not help on test textures)
WINDOW_RADIUS = 3  # LK window: (2r + 1)^2 pixels
MAX_STEP = 1.0  # pixels one step may move a vector (at that level): a trust region
# Tikhonov weight on the update, in (L/100 per pixel)^2: the structure of a
# window whose L changes by about 1 unit per pixel. Flatter windows keep the
# coarser level's flow instead of chasing noise.
REGULARIZATION = 1e-4


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` (B, C, h, w) at each pixel's position plus ``flow`` (B, 2, h, w; x then y, in pixels).

    Bilinear; positions outside the image take the nearest border value.
    """
    grid = _sampling_grid(flow)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def inside(flow: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) float: 1 where pixel + flow falls inside the image, 0 outside (new content)."""
    h, w = flow.shape[-2:]
    ys, xs = _pixel_coords(h, w, flow.device, flow.dtype)
    px = xs + flow[:, 0]
    py = ys + flow[:, 1]
    ok = (px >= -0.5) & (px <= w - 0.5) & (py >= -0.5) & (py <= h - 0.5)
    return ok.unsqueeze(1).to(flow.dtype)


def estimate_flow(prev_lightness: torch.Tensor, cur_lightness: torch.Tensor) -> torch.Tensor:
    """Flow from each current frame into its previous one: (B, 1, h, w) L in 0..100, twice -> (B, 2, h, w).

    Pairs are independent, so a whole batch of consecutive frames goes in one call
    (``prev = L[:-1]``, ``cur = L[1:]``). Each image's mean is removed first, so a
    global brightness change (old film's flicker) does not bias the flow.
    """
    prev = prev_lightness.float() / 100.0
    cur = cur_lightness.float() / 100.0
    prev = prev - prev.mean((-2, -1), keepdim=True)
    cur = cur - cur.mean((-2, -1), keepdim=True)
    pyramid = [(prev, cur)]
    while len(pyramid) < MAX_LEVELS and min(pyramid[-1][0].shape[-2:]) >= 2 * MIN_LEVEL_SIDE:
        p, c = pyramid[-1]
        pyramid.append((_half(p), _half(c)))

    flow = torch.zeros(prev.shape[0], 2, *pyramid[-1][0].shape[-2:], device=prev.device)
    for level, (p, c) in enumerate(reversed(pyramid)):
        if level:
            flow = _resize_flow(flow, p.shape[-2:])
        flow = _median3(_refine(p, c, flow))
    return flow


def _refine(prev: torch.Tensor, cur: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """A few Lucas-Kanade steps at one level, starting from ``flow``."""
    cur_gx, cur_gy = _gradients(cur)
    for _ in range(ITERATIONS):
        warped = warp(prev, flow)
        wgx, wgy = _gradients(warped)
        # pixels that sample outside the previous frame carry no information: leave them
        # out of the windows, or their made-up differences pull the inside pixels too
        valid = inside(flow)
        gx = 0.5 * (cur_gx + wgx) * valid
        gy = 0.5 * (cur_gy + wgy) * valid
        diff = (warped - cur) * valid
        # windowed means of the normal equations, all five in one pass
        terms = _box(torch.cat((gx * gx, gx * gy, gy * gy, gx * diff, gy * diff), dim=1))
        sxx, sxy, syy, sxt, syt = (terms[:, i : i + 1] for i in range(5))
        sxx = sxx + REGULARIZATION
        syy = syy + REGULARIZATION
        det = sxx * syy - sxy * sxy
        du = (sxy * syt - syy * sxt) / det
        dv = (sxy * sxt - sxx * syt) / det
        flow = flow + torch.cat((du, dv), dim=1).clamp_(-MAX_STEP, MAX_STEP)
    return flow


def _median3(x: torch.Tensor) -> torch.Tensor:
    """Separable 3 x 3 median (3 along rows, then 3 along columns) of each channel.

    Removes the isolated vectors where Lucas-Kanade diverged, at the cost of a few
    elementwise min/max (a full 9-sample median is ten times slower here).
    """
    p = F.pad(x, (1, 1, 0, 0), mode="replicate")
    x = _median_of_3(p[..., :-2], p[..., 1:-1], p[..., 2:])
    p = F.pad(x, (0, 0, 1, 1), mode="replicate")
    return _median_of_3(p[..., :-2, :], p[..., 1:-1, :], p[..., 2:, :])


def _median_of_3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences, with the border replicated."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return gx, gy


def _box(x: torch.Tensor) -> torch.Tensor:
    """Mean over the LK window, shrunk at the borders.

    Running sums along each axis: several times faster on a CPU than avg_pool2d.
    """
    return _window_sum(x) / _window_sum(torch.ones_like(x[:1, :1]))


def _window_sum(x: torch.Tensor) -> torch.Tensor:
    r = WINDOW_RADIUS
    size = 2 * r + 1
    c = F.pad(x, (r + 1, r, 0, 0)).cumsum(-1)
    x = c[..., size:] - c[..., :-size]
    c = F.pad(x, (0, 0, r + 1, r)).cumsum(-2)
    return c[..., size:, :] - c[..., :-size, :]


def _half(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="area")


def _resize_flow(flow: torch.Tensor, size: torch.Size) -> torch.Tensor:
    h, w = flow.shape[-2:]
    scale = torch.tensor([size[1] / w, size[0] / h], device=flow.device).view(1, 2, 1, 1)
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * scale


def _pixel_coords(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=device, dtype=dtype).view(1, w).expand(h, w)
    return ys, xs


def _sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Pixel flow -> grid_sample's (B, h, w, 2) grid in [-1, 1] (align_corners=True)."""
    h, w = flow.shape[-2:]
    ys, xs = _pixel_coords(h, w, flow.device, flow.dtype)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1)
