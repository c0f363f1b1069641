"""Parity of colorvid's DDColor with the original DDColor code, on random weights (run by hand, not in CI).

The original code (Apache-2.0) is the copy vendored in the ``modelscope``
package; its pre- and post-processing (modelscope's DDColor pipeline, the
same as the original repository's inference script) need OpenCV. Neither is
a colorvid dependency:

    pip download --no-deps modelscope -d /tmp/ms
    unzip -q /tmp/ms/modelscope-*.whl 'modelscope/models/cv/image_colorization/*' -d /tmp/ms/src
    pip install --no-deps --target /tmp/cv2 opencv-python-headless
    PYTHONPATH=/tmp/cv2 python benchmarks/parity_ddcolor.py --reference /tmp/ms/src

For each variant (tiny: ConvNeXt-T, large: ConvNeXt-L) it builds the original
network, gives every tensor seeded random values (tests/test_models_ddcolor.py's
``stand_in_state``: weights, biases, norm statistics, query embeddings, the
normalization mean and std), saves it as the published files are
(``{"params": state_dict}``), loads that file with ``colorvid.models.ddcolor.load``
and prints the max abs difference of ab:

- network: the same gray RGB input through both networks;
- whole path: a gray image (not square, not the network's size) through the
  original pipeline (OpenCV Lab and resize, network, ab resized back) and
  through colorvid's ``DDColorColorizer`` from colorvid's L of the image, with
  ab brought back by "nearest" (the original's) and by "bilinear" (colorvid's
  default).

``--write-fixture`` also writes tests/data/ddcolor_tiny_reference.json: the
tiny layout and the original network's ab on the test's stand-in weights and
gray image (the CI guard, tests/test_models_ddcolor.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

# as colorvid sets it, before torch is imported: OpenMP threads that spin stall on a busy machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parent.parent
for folder in (REPO, REPO / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_models_ddcolor import (  # noqa: E402  # pyright: ignore[reportMissingImports]
    FIXTURE,
    fixture_gray,
    lightness_of,
    stand_in_state,
)

from colorvid.color import rgb_to_lab  # noqa: E402
from colorvid.models import ddcolor  # noqa: E402

ENCODERS = {"tiny": "convnext-t", "large": "convnext-l"}
FIXTURE_SIZE = 64
FIXTURE_STEP = 4
FIXTURE_SEED = 0


def import_reference(root: Path) -> types.ModuleType:
    """The original ``ddcolor`` arch module, imported from an unzipped modelscope without modelscope itself."""
    folder = root / "modelscope" / "models" / "cv" / "image_colorization" / "ddcolor"
    if not (folder / "ddcolor.py").is_file():
        sys.exit(f"no DDColor code under {folder}")

    class DropPath(torch.nn.Identity):  # DDColor builds ConvNeXt with drop_path_rate 0
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            assert drop_prob == 0.0

    # The arch modules import only DropPath and trunc_normal_ from timm.
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.trunc_normal_ = torch.nn.init.trunc_normal_  # type: ignore[attr-defined]
    for name, module in (("timm", types.ModuleType("timm")), ("timm.models", types.ModuleType("timm.models"))):
        sys.modules.setdefault(name, module)
    sys.modules["timm.models.layers"] = layers
    # A package over the folder whose __init__ (which imports modelscope) is never run.
    package = types.ModuleType("ddcolor_reference")
    package.__path__ = [str(folder)]  # type: ignore[attr-defined]
    sys.modules["ddcolor_reference"] = package
    return importlib.import_module("ddcolor_reference.ddcolor")


def reference_colorize(model: torch.nn.Module, bgr: np.ndarray, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """modelscope's DDColorImageColorizationPipeline.preprocess and .forward, up to the resized ab.

    Returns (the network's input, ab at the image's size).
    """
    import cv2  # pyright: ignore[reportMissingImports]

    height, width = bgr.shape[:2]
    img = (bgr / 255.0).astype(np.float32)
    img = cv2.resize(img, (input_size, input_size))
    img_l = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)[:, :, :1]
    img_gray_lab = np.concatenate((img_l, np.zeros_like(img_l), np.zeros_like(img_l)), axis=-1)
    img_gray_rgb = cv2.cvtColor(img_gray_lab, cv2.COLOR_LAB2RGB)
    tensor_gray_rgb = torch.from_numpy(img_gray_rgb.transpose((2, 0, 1))).float().unsqueeze(0)
    with torch.no_grad():
        output_ab = model(tensor_gray_rgb)
    return tensor_gray_rgb, F.interpolate(output_ab, size=(height, width))


def cv2_stretch(bgr: np.ndarray, input_size: int) -> torch.Tensor:
    """The original's stretch alone (cv2.resize, INTER_LINEAR by default) of the image in 0..1."""
    import cv2  # pyright: ignore[reportMissingImports]

    img = (bgr / 255.0).astype(np.float32)
    return torch.from_numpy(cv2.resize(img, (input_size, input_size))).permute(2, 0, 1)[None]


def test_image(height: int, width: int, seed: int = 1) -> np.ndarray:
    """A gray 8-bit BGR image: smooth shapes and some noise."""
    gen = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    value = 0.3 + 0.4 * x / width + 0.2 * np.sin(y / 9.0) * np.cos(x / 13.0)
    value[(x - 0.3 * width) ** 2 + (y - 0.5 * height) ** 2 < (0.25 * height) ** 2] = 0.85
    value += gen.normal(0, 0.02, value.shape)
    gray = (value.clip(0, 1) * 255).round().astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def layout_of(state: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(key, list(state[key].shape)) for key in sorted(state)]


def build_reference(reference: types.ModuleType, variant: str, seed: int) -> tuple[torch.nn.Module, dict]:
    model = reference.DDColor(ENCODERS[variant], input_size=(256, 256), num_queries=100)
    state = stand_in_state(layout_of(model.state_dict()), seed)
    model.load_state_dict(state, strict=True)
    return model.eval(), state


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def parity(reference: types.ModuleType, variant: str, sizes: list[int], folder: Path) -> None:
    start = time.perf_counter()
    model, state = build_reference(reference, variant, seed=FIXTURE_SEED + 1)
    path = folder / f"ddcolor_{variant}.pth"
    torch.save({"params": state}, path)
    keys = len(state)
    del state
    print(f"{variant}: {keys} tensors, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"reference built in {time.perf_counter() - start:.1f} s")
    assert ddcolor.check(path) is None and ddcolor.matches(ddcolor.read_state(path)) == f"ddcolor-{variant}"
    image = test_image(180, 320)
    lightness = lightness_of(torch.from_numpy(np.ascontiguousarray(image[:, :, 0])))
    for size in sizes:
        start = time.perf_counter()
        ours = ddcolor.load(path, render_size=size)
        loaded = time.perf_counter() - start
        net_in, ref_ab = reference_colorize(model, image, size)
        with torch.no_grad():
            net_ours = ours.net(net_in)
            ref_net = model(net_in)
            ours.ab_resize = "nearest"
            path_nearest = ours(lightness)
            ours.ab_resize = "bilinear"
            path_bilinear = ours(lightness)
        ref_l = rgb_to_lab(net_in)[:, :1]
        our_l = rgb_to_lab(ours_gray(ours, lightness))[:, :1]
        source = torch.from_numpy((image / 255.0).astype(np.float32)).permute(2, 0, 1)[None]
        stretch = max_diff(cv2_stretch(image, size), F.interpolate(source, size=(size, size), mode="bilinear"))
        print(f"  {size}x{size} (colorvid load {loaded:.1f} s): |ab| max {ref_net.abs().max().item():.2f}; "
              f"network {max_diff(net_ours, ref_net):.2e}; whole path, nearest {max_diff(path_nearest, ref_ab):.2e}, "
              f"bilinear {max_diff(path_bilinear, ref_ab):.2e} (mean {(path_bilinear - ref_ab).abs().mean():.2e}); "
              f"network input, OpenCV vs colorvid: L {max_diff(ref_l, our_l):.2e}, RGB "
              f"{max_diff(net_in, ours_gray(ours, lightness)):.2e} (the stretch alone: {stretch:.2e})")
        if size == sizes[0]:
            unfused = ddcolor.load(path, render_size=size, fuse=False)
            bf16 = ddcolor.load(path, render_size=size, half=True)
            with torch.no_grad():
                print(f"  {size}x{size}: unfused network {max_diff(unfused.net(net_in), ref_net):.2e}; "
                      f"bf16 (CPU) whole path vs fp32 {max_diff(bf16(lightness), path_bilinear):.2e}")
            del unfused, bf16
        del ours
    path.unlink()


def ours_gray(model: ddcolor.DDColorColorizer, lightness: torch.Tensor) -> torch.Tensor:
    """The gray RGB colorvid's wrapper gives the network (as its forward makes it)."""
    from colorvid.color import lab_to_rgb

    zeros = torch.zeros_like(lightness)
    gray = lab_to_rgb(torch.cat((lightness, zeros, zeros), dim=1))
    return F.interpolate(gray, size=(model.input_size,) * 2, mode="bilinear", align_corners=False)


def write_fixture(reference: types.ModuleType) -> None:
    """The tiny layout and the original network's ab on the test's stand-in weights and gray image."""
    model = reference.DDColor(ENCODERS["tiny"], input_size=(256, 256), num_queries=100)
    layout = layout_of(model.state_dict())
    model.load_state_dict(stand_in_state(layout, FIXTURE_SEED), strict=True)
    model.eval()
    rgb = (fixture_gray(FIXTURE_SIZE).float() / 255).expand(1, 3, -1, -1)
    with torch.no_grad():
        ab = model(rgb)[0]
    header = {
        "about": "DDColor tiny as the original code (modelscope's copy) lays it out, and the ab its network computes "
        "with tests/test_models_ddcolor.py's stand_in_state(layout, seed) on fixture_gray(size) as RGB in 0..1, "
        "every step-th pixel; ab rows are channel-major. Written by benchmarks/parity_ddcolor.py --write-fixture.",
        "torch": torch.__version__,
        "seed": FIXTURE_SEED,
        "size": FIXTURE_SIZE,
        "step": FIXTURE_STEP,
        "mean": round(ab.mean().item(), 5),
    }
    rows = [json.dumps([round(v, 4) for v in row]) for channel in ab[:, ::FIXTURE_STEP, ::FIXTURE_STEP].tolist()
            for row in channel]
    entries = [json.dumps(entry) for entry in layout]
    lines = json.dumps(header, indent=1)[:-2].splitlines()
    lines[-1] += ","
    lines += [' "ab": ['] + [f"  {row}," for row in rows[:-1]] + [f"  {rows[-1]}", " ],"]
    lines += [' "layout": ['] + [f"  {entry}," for entry in entries[:-1]] + [f"  {entries[-1]}", " ]", "}"]
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text("\n".join(lines) + "\n")
    json.loads(FIXTURE.read_text())
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.1f} KiB): |ab| max {ab.abs().max().item():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="folder holding the unzipped modelscope/ tree")
    parser.add_argument("--variants", default="tiny,large")
    parser.add_argument("--sizes", default="128", help="network input sides, comma-separated (the original uses 512)")
    parser.add_argument("--tiny-sizes", default=None, help="sides for tiny only (default: --sizes)")
    parser.add_argument("--write-fixture", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    reference = import_reference(args.reference)
    if args.write_fixture:
        write_fixture(reference)
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants.split(","):
            sizes = args.tiny_sizes if variant == "tiny" and args.tiny_sizes else args.sizes
            parity(reference, variant, [int(s) for s in sizes.split(",")], Path(folder))


if __name__ == "__main__":
    main()
