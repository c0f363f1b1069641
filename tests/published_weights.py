"""Random-weight stand-ins for the published DDColor and DeOldify files, at their real size and layout.

Used by the tests (a fake hub serving files in each real layout) and by the
benchmarks (speed with weights of the real size), so that neither needs the
published files:

    python tests/published_weights.py deoldify-artistic /tmp/ColorizeArtistic_gen.pth
    python tests/published_weights.py ddcolor-large /tmp/ddcolor_large.pth --wrapper params

Kinds: ddcolor-tiny, ddcolor-large (ConvNeXt-T/L, saved as ``{"params": state}``
by default, as the published files are), deoldify-artistic, deoldify-stable
(saved bare by default; ``{"model": state}`` is fastai's other layout).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: its own folder is on sys.path, the repository may not be
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deoldify_weights import seeded_state  # noqa: E402  # pyright: ignore[reportMissingImports]
from test_models_ddcolor import stand_in_state  # noqa: E402  # pyright: ignore[reportMissingImports]

from colorvid.models import ddcolor, deoldify  # noqa: E402

KINDS = ("ddcolor-tiny", "ddcolor-large", "deoldify-artistic", "deoldify-stable")
WRAPPERS = {"params": "params", "model": "model", "bare": None}
DEFAULT_WRAPPER = {"ddcolor-tiny": "params", "ddcolor-large": "params",
                   "deoldify-artistic": "bare", "deoldify-stable": "bare"}
_DDCOLOR_ENCODERS = {"ddcolor-tiny": "convnext-t", "ddcolor-large": "convnext-l"}


def ddcolor_layout(kind: str) -> list[tuple[str, list[int]]]:
    """(key, shape) of every tensor of the published DDColor files (the original's settings: 100 queries,
    9 decoder layers, 3 scales, spectral norm, 2 output channels), as spandrel's copy of the network names them."""
    from spandrel_extra_arches.architectures.DDColor import DDColor

    with ddcolor._SkipInit():
        net = DDColor(encoder_name=_DDCOLOR_ENCODERS[kind], num_output_channels=2, last_norm="Spectral",
                      num_queries=100, num_scales=3, dec_layers=9, input_size=(64, 64))
    return [(key, list(value.shape)) for key, value in net.state_dict().items()]


def random_state(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights of ``kind`` in the published layout (fp32)."""
    if kind in _DDCOLOR_ENCODERS:
        return stand_in_state(ddcolor_layout(kind), seed)
    layout = deoldify.file_layout(deoldify.build_generator(kind, device="meta"))
    return seeded_state(layout.items(), seed)


def save_published(state: dict[str, torch.Tensor], path: str | Path, wrapper: str | None,
                   dtype: torch.dtype | None = None) -> Path:
    """Write ``state`` as a torch pickle: under ``wrapper`` ("params", "model") or bare (None);
    ``dtype`` casts the floating tensors (fp16 halves a test file)."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state if wrapper is None else {wrapper: state}, path)
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("path")
    parser.add_argument("--wrapper", choices=tuple(WRAPPERS), help="default: the published files' layout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    wrapper = WRAPPERS[args.wrapper or DEFAULT_WRAPPER[args.kind]]
    path = save_published(random_state(args.kind, args.seed), args.path, wrapper)
    print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
