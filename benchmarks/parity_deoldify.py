"""Random-weight parity of colorvid's DeOldify port (colorvid/models/deoldify.py) with the original code.

Run by hand, not in CI: it needs DeOldify's own code, which colorvid does not
depend on. The original is the ``deoldify`` 0.0.1 wheel, which vendors fastai v1:

    pip download --no-deps deoldify==0.0.1 -d deoldify_ref
    unzip -q deoldify_ref/deoldify-0.0.1-py3-none-any.whl -d deoldify_ref/src

and a throwaway virtual environment that has colorvid's torch plus what that
fastai imports: torchvision (the torch's matching build), pillow, numpy,
scipy, pyyaml, pandas, matplotlib, fastprogress, opencv-python-headless,
requests and "setuptools<80" (for pkg_resources). Then, from the repository root:

    python benchmarks/parity_deoldify.py --reference deoldify_ref/src
    python benchmarks/parity_deoldify.py --reference deoldify_ref/src --default-factor   # + artistic at 35
    python benchmarks/parity_deoldify.py --reference deoldify_ref/src --write-fixture tests/data/deoldify_reference.json

For each variant it builds the original generator exactly as DeOldify's
``gen_learner_deep``/``gen_learner_wide`` do (but without downloading the
ImageNet body), fills every tensor of its state dict with seeded random values
(tests/deoldify_weights.py: weights, biases, batch-norm statistics, spectral-norm
u and v, a nonzero self-attention gamma), saves them as the published files are
laid out (``torch.save({"model": state_dict})``), loads that file into the
original (``load_state_dict``, strict, as fastai's ``Learner.load`` does) and
into colorvid (``colorvid.models.deoldify.load``), and prints the largest
absolute differences of

- the generator's output (normalized RGB) on the same input tensor, the one
  the original's own pre-processing makes from a test picture;
- the whole path: Lab ab of the original's ColorizerFilter output (its PIL
  pre- and post-processing, without the luma post-process) against colorvid's
  DeOldifyColorizer on the same 8-bit gray picture. The original rounds to 8
  bits on the way, colorvid does not; the "swap" line puts the original's
  generator inside colorvid's processing to show how much of that difference
  the processing makes and how much the network.
"""

# The original's modules and tests/ are put on sys.path at run time:
# pyright: reportMissingImports=false

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO, REPO / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from deoldify_weights import gray_picture, seeded_state  # noqa: E402

from colorvid.color import rgb_to_lab  # noqa: E402
from colorvid.models import deoldify  # noqa: E402

SEED = 0
GENERATOR_INPUT = {"seed": 1, "shape": [1, 3, 24, 40]}  # odd sizes in the body: the U-Net's nearest resize runs
FIXTURE_RENDER_FACTOR = 3  # 48 px
FIXTURE_SIZE = (32, 48)
PICTURE_SIZE = (120, 176)


def import_reference(path: Path):
    sys.path.insert(0, str(path))
    warnings.filterwarnings("ignore")
    from deoldify import device  # noqa: F401  (the original sets its device flags first)
    from deoldify.dataset import get_dummy_databunch
    from deoldify.filters import ColorizerFilter
    from deoldify.generators import unet_learner_deep, unet_learner_wide
    from fastai.layers import NormType
    from fastai.vision import models

    def learner(variant: str):
        cwd = os.getcwd()
        os.chdir(tempfile.mkdtemp())  # the dummy data bunch looks for ./dummy/
        try:
            data = get_dummy_databunch()
        finally:
            os.chdir(cwd)
        # gen_learner_deep / gen_learner_wide, with pretrained=False instead of downloading the body
        common = dict(pretrained=False, wd=1e-3, blur=True, norm_type=NormType.Spectral, self_attention=True,
                      y_range=(-3.0, 3.0), loss_func=F.l1_loss)
        if variant == deoldify.ARTISTIC:
            learn = unet_learner_deep(data, models.resnet34, nf_factor=1.5, **common)
        else:
            learn = unet_learner_wide(data, models.resnet101, nf_factor=2, **common)
        learn.model.eval()
        return learn

    return learner, ColorizerFilter


def to_pil(rgb: torch.Tensor):
    from PIL import Image

    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def pil_to_unit(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().unsqueeze(0) / 255


def reference_input(filter_, picture: torch.Tensor, render_factor: int) -> torch.Tensor:
    """The normalized tensor the original's ColorizerFilter feeds its generator for ``picture``."""
    from fastai.vision.image import pil2tensor

    image = filter_._get_model_ready_image(to_pil(picture), deoldify.render_pixels(render_factor))
    x = pil2tensor(image, np.float32).div_(255)
    x, _ = filter_.norm((x, x), do_x=True)
    return x[None]


def reference_ab(filter_, picture: torch.Tensor, render_factor: int) -> torch.Tensor:
    image = to_pil(picture)
    with torch.no_grad():
        raw = filter_.filter(image, image, render_factor, post_process=False)
    return rgb_to_lab(pil_to_unit(raw))[:, 1:]


def lightness_of(picture: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(picture.float().unsqueeze(0) / 255)[:, :1]


def compare_variant(variant: str, learner, ColorizerFilter, factors: list[int], workdir: Path) -> dict:
    started = time.perf_counter()
    learn = learner(variant)
    reference = learn.model
    layout = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    ours = deoldify.file_layout(deoldify.build_generator(variant, device="meta"))
    same = dict(layout) == ours
    print(f"\n{variant}: {len(layout)} tensors, {sum(int(np.prod(s)) for _, s in layout) / 1e6:.1f} M values; "
          f"colorvid's layout {'is identical' if same else 'DIFFERS'}")
    if not same:
        print("  only in the original:", sorted(set(dict(layout)) - set(ours))[:10])
        print("  only in colorvid:", sorted(set(ours) - set(dict(layout)))[:10])

    state = seeded_state(layout, SEED)
    path = workdir / f"{variant}.pth"
    torch.save({"model": state}, path)
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"], strict=True)
    reference.eval()
    filter_ = ColorizerFilter(learn=learn)
    print(f"  built and saved in {time.perf_counter() - started:.1f} s")

    result: dict = {"layout": sorted([k, list(s)] for k, s in layout)}
    picture = gray_picture(*PICTURE_SIZE)
    for factor in factors:
        fused = deoldify.load(path, render_size=factor)
        plain = deoldify.load(path, render_size=factor, fuse=False)
        with torch.no_grad():
            x = reference_input(filter_, picture, factor)
            rgb_ref = reference(x)
            for name, model in (("fused", fused), ("unfused", plain)):
                rgb = model.generator(x)
                print(f"  render factor {factor} ({x.shape[-1]} px), generator RGB, {name}: max |diff| "
                      f"{(rgb - rgb_ref).abs().max().item():.2e} (output std {rgb_ref.std().item():.3f}, "
                      f"range {rgb_ref.min().item():.2f}..{rgb_ref.max().item():.2f})")
            ab_ref = reference_ab(filter_, picture, factor)
            lightness = lightness_of(picture)
            ab = fused(lightness)
            swap = deoldify.DeOldifyColorizer(reference, variant, factor)(lightness)  # type: ignore[arg-type]
        diff = (ab - ab_ref).abs()
        print(f"  render factor {factor}, whole path ab vs the original's filter on a {PICTURE_SIZE} picture: "
              f"max |diff| {diff.max().item():.3f}, mean {diff.mean().item():.4f} (ab std {ab_ref.std().item():.2f})")
        print(f"    swap (original generator, colorvid processing): vs original "
              f"{(swap - ab_ref).abs().max().item():.3f}, vs colorvid {(swap - ab).abs().max().item():.2e}")

    # the fixture's numbers: generator on a fixed tensor, whole path on a small fixed picture
    gen_input = torch.randn(GENERATOR_INPUT["shape"], generator=torch.Generator().manual_seed(GENERATOR_INPUT["seed"]))
    with torch.no_grad():
        gen_out = reference(gen_input)
    small = gray_picture(*FIXTURE_SIZE)
    ab_small = reference_ab(filter_, small, FIXTURE_RENDER_FACTOR)
    result["generator"] = {**GENERATOR_INPUT, "output": _rounded(gen_out)}
    result["whole_path"] = {
        "size": list(FIXTURE_SIZE),
        "render_factor": FIXTURE_RENDER_FACTOR,
        "ab": _rounded(ab_small),
    }
    print(f"  {variant} done in {time.perf_counter() - started:.1f} s")
    path.unlink()
    return result


def _rounded(t: torch.Tensor) -> list:
    return [round(float(v), 4) for v in t.flatten()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True,
                        help="the unzipped deoldify wheel (holds deoldify/ and fastai/)")
    parser.add_argument("--render-factor", type=int, default=9,
                        help="reduced render factor for both variants (9: 144 px)")
    parser.add_argument("--default-factor", action="store_true", help="also run artistic at its default factor, 35")
    parser.add_argument("--variants", default=f"{deoldify.ARTISTIC},{deoldify.STABLE}")
    parser.add_argument("--write-fixture", type=Path, help="write the CI fixture (layouts and reference outputs) here")
    args = parser.parse_args()

    torch.manual_seed(0)
    learner, ColorizerFilter = import_reference(args.reference.resolve())
    fixture = {
        "about": "DeOldify generator layouts and outputs of the original code with tests/deoldify_weights.py's "
        "seeded weights; written by benchmarks/parity_deoldify.py",
        "seed": SEED,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as workdir:
        for variant in args.variants.split(","):
            factors = [args.render_factor]
            if args.default_factor and variant == deoldify.ARTISTIC:
                factors.append(deoldify.DEFAULT_RENDER_FACTOR[variant])
            fixture["variants"][variant] = compare_variant(variant, learner, ColorizerFilter, factors, Path(workdir))
    if args.write_fixture:
        args.write_fixture.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        print(f"\nwrote {args.write_fixture} ({args.write_fixture.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
