"""Seeded stand-in weights for DeOldify generator files, the same with or without the original's code.

The parity script (benchmarks/parity_deoldify.py, which builds the original
network) and tests/test_models_deoldify.py (which does not) both fill a state
dict layout with :func:`seeded_state`, so the reference outputs committed in
tests/data/deoldify_reference.json can be recomputed by colorvid alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

POWER_ITERATIONS = 3


def seeded_state(layout: Iterable[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of ``layout`` (key, shape) filled, in sorted-key order, from one seeded generator.

    Each tensor is standard normal noise scaled by what its name says it is, so
    that signals neither vanish nor saturate: convolutions by sqrt(2 / fan-in),
    batch-norm statistics near (0, 1), the scale of the batch norm that ends a
    ResNet block's residual branch near 0.1 (else the 33 blocks of a ResNet-101
    grow the signal a million-fold), self-attention gammas near 0.5 (nonzero, so
    the attention counts), weight-norm gains near sqrt(2). Spectral-norm u and
    v then take a few power iterations from their noise, as training leaves them,
    so sigma is near the weight's largest singular value.
    """
    generator = torch.Generator().manual_seed(seed)
    layout = sorted((k, tuple(s)) for k, s in layout)
    keys = {k for k, _ in layout}
    state = {}
    for key, shape in layout:
        owner, _, name = key.rpartition(".")
        if name == "num_batches_tracked":
            state[key] = torch.tensor(0)
            continue
        noise = torch.randn(shape, generator=generator)
        if len(shape) >= 3:  # convolution weights (weight, weight_orig, and weight-norm's weight_v)
            value = noise * math.sqrt(2.0 / math.prod(shape[1:]))
        elif name == "running_var":
            value = torch.exp(0.2 * noise)
        elif name == "weight" and len(shape) == 1:  # batch-norm scale
            value = (0.1 if _ends_residual_branch(owner, keys) else 1.0) * (1.0 + 0.1 * noise)
        elif name == "gamma":
            value = 0.5 + 0.1 * noise
        elif name == "weight_g":
            value = math.sqrt(2.0) * torch.exp(0.1 * noise)
        else:  # biases, running means, spectral-norm u and v
            value = 0.1 * noise
        state[key] = value.float()
    for key in [k for k in state if k.endswith(".weight_orig")]:
        owner = key[: -len(".weight_orig")]
        matrix = state[key].reshape(state[key].shape[0], -1)
        u, v = state[f"{owner}.weight_u"], state[f"{owner}.weight_v"]
        v = v / v.norm()
        for _ in range(POWER_ITERATIONS):
            u = torch.mv(matrix, v)
            u = u / u.norm()
            v = torch.mv(matrix.t(), u)
            v = v / v.norm()
        state[f"{owner}.weight_u"], state[f"{owner}.weight_v"] = u, v
    return state


def _ends_residual_branch(owner: str, keys: set[str]) -> bool:
    """The last batch norm of a ResNet block: bn3 of a bottleneck block, bn2 of a basic one."""
    block, _, bn = owner.rpartition(".")
    return bn == "bn3" or (bn == "bn2" and f"{block}.bn3.weight" not in keys)


def gray_picture(height: int, width: int) -> torch.Tensor:
    """A fixed 8-bit gray test picture, (3, height, width) uint8 with R = G = B: gradients, rings and a bar.

    Made with torch only, so the parity script (which hands it to the original
    as a PIL image) and the tests see the same pixels.
    """
    y = torch.linspace(0, 1, height).view(-1, 1)
    x = torch.linspace(0, 1, width).view(1, -1)
    rings = torch.cos(18 * torch.sqrt((x - 0.6) ** 2 + (y - 0.4) ** 2))
    level = 0.15 + 0.5 * x * (1 - 0.4 * y) + 0.2 * rings * torch.exp(-4 * ((x - 0.6) ** 2 + (y - 0.4) ** 2))
    level = torch.where((x > 0.1) & (x < 0.25) & (y > 0.2) & (y < 0.8), torch.full_like(level, 0.9), level)
    gray = (level.clamp(0, 1) * 255).round().to(torch.uint8)
    return gray.expand(3, -1, -1).contiguous()
