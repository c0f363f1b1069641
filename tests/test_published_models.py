"""The published model families (DDColor, DeOldify) as a user meets them: fetched from a hub by
registry name, listed, loaded, run by `colorvid colorize`, refused with one line when unusable.

The files are random-weight stand-ins of the published ones at their real size and
layout (published_weights.py), saved in fp16 to halve them, made once per session:
a ddcolor-tiny file as ``{"params": state}`` (as the published DDColor files are),
and one DeOldify artistic state both as ``{"model": state}`` (fastai's layout) and
bare (as ColorizeArtistic_gen.pth is). The hub is FakeHub (fake_hub.py, the
``hub`` fixture of conftest.py). Render sizes are kept small (DDColor 64, DeOldify
4, a 64 px square) to keep the tests fast on a CPU.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_hub import cached_files
from media import audio_packets, make_clip, mean_chroma_offset, read_video_pts, synthetic_rgb, y_psnr
from published_weights import random_state, save_published

from colorvid import registry as model_registry
from colorvid import weights
from colorvid.color import luma_to_lightness, rgb_to_lab, ycbcr_to_rgb
from colorvid.colorizer import FrameColorizer, _Plane
from colorvid.errors import WeightsError
from colorvid.models import family_of, load_model
from colorvid.runtime import LoadedModel

HUB_REPO = "colorvid-test/published-stand-ins"
HUB_REVISION = "fedcba9876543210fedcba9876543210fedcba98"


# --- the stand-in files -----------------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    """A stand-in weights file and what colorvid should make of it."""

    path: Path
    sha256: str
    family: str  # the architecture colorvid should find in it
    variant: str  # the loaded model's .variant
    render_size: int  # a small --render-size for the tests (DDColor: square side; DeOldify: render factor)


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory) -> dict[str, StandIn]:
    """The stand-ins by key: "ddcolor" ({"params": ...}), "artistic" ({"model": ...}) and "artistic-bare"
    (the same tensors, bare); fp16, about 110, 128 and 128 MB."""
    folder = tmp_path_factory.mktemp("published")
    files = {}

    def add(key, filename, state, wrapper, family, variant, render_size):
        path = save_published(state, folder / filename, wrapper, torch.float16)
        files[key] = StandIn(path, model_registry.sha256_file(path), family, variant, render_size)

    add("ddcolor", "ddcolor_paper_tiny.pth", random_state("ddcolor-tiny"), "params", "ddcolor", "ddcolor-tiny", 64)
    artistic = random_state("deoldify-artistic")
    add("artistic", "ColorizeArtistic_gen.pth", artistic, "model", "deoldify", "deoldify-artistic", 4)
    add("artistic-bare", "ColorizeArtistic_gen_bare.pth", artistic, None, "deoldify", "deoldify-artistic", 4)
    return files


# Registry name -> (stand-in, extra TOML lines). "artistic-bare" has no size (the hub's is taken).
HUB_MODELS = {
    "dd-tiny": ("ddcolor", 'speed = "slow"\n'),
    "artistic": ("artistic", 'speed = "very slow"\n'),
    "artistic-bare": ("artistic-bare", ""),
}


def hub_entry(name: str, stand_in: StandIn, extra: str = "", size: bool = True) -> str:
    size_line = f"size = {stand_in.path.stat().st_size}\n" if size else ""
    return (f'[models.{name}]\narchitecture = "{stand_in.family}"\nhf_repo = "{HUB_REPO}"\n'
            f'hf_filename = "{stand_in.path.name}"\nhf_revision = "{HUB_REVISION}"\n'
            f'sha256 = "{stand_in.sha256}"\n{size_line}{extra}license = "MIT"\ndescription = "random {name}"\n\n')


def write_registry(path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> model_registry.Registry:
    """Write a weights.toml, make it colorvid's (COLORVID_WEIGHTS_TOML) and read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv(model_registry.REGISTRY_ENV, str(path))
    return model_registry.load_registry()


@pytest.fixture
def published_hub(hub, stand_ins, tmp_path, monkeypatch) -> model_registry.Registry:
    """The hub serving every stand-in, and a registry of HUB_MODELS pinned to them (colorvid's registry)."""
    for stand_in in stand_ins.values():
        hub.add(stand_in.path, repo=HUB_REPO, revision=HUB_REVISION, filename=stand_in.path.name)
    text = "".join(hub_entry(name, stand_ins[key], extra, size=name != "artistic-bare")
                   for name, (key, extra) in HUB_MODELS.items())
    return write_registry(tmp_path / "registry" / "weights.toml", text, monkeypatch)


def table(out: str) -> dict[str, list[str]]:
    """`colorvid weights` output: NAME -> its cells (NAME FAMILY SIZE SPEED LICENSE CACHED ...), split on
    two or more spaces (a size is "127.7 MB", a speed "very slow")."""
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NAME", "FAMILY", "SIZE", "SPEED", "LICENSE", "CACHED", "DEFAULT",
                                            "DESCRIPTION"]
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


def small_input(model, height: int = 48, width: int = 64) -> torch.Tensor:
    """Lab lightness of a gray synthetic picture, at the model's inference size for a frame of that size."""
    gray = torch.from_numpy(synthetic_rgb(2, width, height, color=False)[..., 0].astype(np.float32))
    lightness = luma_to_lightness(gray[None, None], 8, full_range=True)
    return F.interpolate(lightness, size=model.inference_size(height, width), mode="bilinear", antialias=True,
                         align_corners=False)


# --- fetching ---------------------------------------------------------------------------


def test_fetch_weights_downloads_every_published_layout_and_each_loads(hub, published_hub, stand_ins, run, tmp_path):
    status, err = run(["weights"])
    assert status == 0, err
    before = table(run.out)
    assert before["dd-tiny"][1:4] == ["ddcolor", f"{stand_ins['ddcolor'].path.stat().st_size / 1e6:.1f} MB", "slow"]
    assert before["artistic"][1:4] == ["deoldify", f"{stand_ins['artistic'].path.stat().st_size / 1e6:.1f} MB",
                                       "very slow"]
    assert before["artistic-bare"][1:4] == ["deoldify", "?", "?"]  # no size in the registry, not downloaded
    assert [before[name][5] for name in HUB_MODELS] == ["no", "no", "no"]

    status, err = run(["fetch-weights", *HUB_MODELS])
    assert status == 0, err
    paths = [Path(line) for line in run.out.splitlines()]
    cache = tmp_path / "hf" / "hub"
    assert len(paths) == 3 and all(path.is_relative_to(cache) for path in paths)
    for path, (key, _) in zip(paths, HUB_MODELS.values()):
        assert model_registry.sha256_file(path) == stand_ins[key].sha256
    assert hub.count("GET") == 3 and len({os.path.realpath(path) for path in paths}) == 3

    run(["weights"])
    after = table(run.out)
    assert [after[name][5] for name in HUB_MODELS] == ["yes", "yes", "yes"]
    bare_size = stand_ins["artistic-bare"].path.stat().st_size
    assert after["artistic-bare"][1:3] == ["deoldify", f"{bare_size / 1e6:.1f} MB"]  # now known: the file's

    outputs = {}
    for name, (key, _) in HUB_MODELS.items():
        stand_in = stand_ins[key]
        assert family_of(weights.resolve(name)) == stand_in.family
        model = weights.open_model(name, render_size=stand_in.render_size)
        assert isinstance(model, torch.nn.Module) and not model.training
        assert getattr(model, "variant") == stand_in.variant
        with torch.inference_mode():
            outputs[name] = model(small_input(model))
    # the fastai wrapper and the bare file hold the same tensors: the same model (two runs of it
    # may differ in the last bits of their float sums)
    torch.testing.assert_close(outputs["artistic"], outputs["artistic-bare"], rtol=1e-5, atol=1e-5)


def test_a_download_with_another_sha256_is_deleted_and_fetch_fails(hub, published_hub, stand_ins, run, tmp_path):
    bare = stand_ins["artistic-bare"]
    # a mirror serving the fastai-wrapped file where the bare one belongs, claiming the bare one's sha256;
    # the entry has no size, so only the downloaded bytes can tell
    hub.add(stand_ins["artistic"].path, sha256=bare.sha256, repo=HUB_REPO, revision=HUB_REVISION,
            filename=bare.path.name)
    status, err = run(["fetch-weights", "artistic-bare"])  # as a user runs it: not quiet
    assert status == 1 and run.out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line, and nothing else on stderr
    assert err.startswith("colorvid: error: model 'artistic-bare': the file downloaded from ")
    assert f"sha256 {stand_ins['artistic'].sha256}, expected {bare.sha256}; deleted it from the cache" in err
    assert cached_files(tmp_path / "hf" / "hub") == []
    run(["weights"])
    assert table(run.out)["artistic-bare"][5] == "no"
    with pytest.raises(WeightsError, match="not downloaded"):
        weights.resolve("artistic-bare")


# --- colorizing -------------------------------------------------------------------------


@pytest.fixture
def gray_clip(tmp_path) -> Path:
    """A small gray clip with a sound track: 64x48, 8 frames."""
    path = tmp_path / "film.mp4"
    make_clip(path, width=64, height=48, frames=8, color=False, audio_tracks=1)
    return path


def assert_colorized(source: Path, out: Path) -> None:
    """The output has the source's frames, timing, luma and audio, and colors that are not gray."""
    assert read_video_pts(out) == read_video_pts(source)  # frame count and timestamps
    assert y_psnr(source, out) >= 45.0  # luma unchanged (but for the encoder's rounding)
    assert audio_packets(out) == audio_packets(source)
    assert mean_chroma_offset(source) < 0.5
    # the random stand-ins give small colors: Cb/Cr are on average about 3.8 codes off neutral with the
    # DDColor one (|ab| about 2), 22 with DeOldify's; a gray output is 0 codes off (the source is)
    assert mean_chroma_offset(out) > 1.0


@pytest.mark.parametrize("name, key", [("dd-tiny", "ddcolor"), ("artistic", "artistic")])
def test_colorize_with_a_fetched_published_model(published_hub, stand_ins, run, gray_clip, tmp_path, name, key):
    status, err = run(["-q", "fetch-weights", name])
    assert status == 0, err
    out = tmp_path / "film-color.mp4"
    status, err = run(["colorize", gray_clip, "-o", out, "--model", name, "--device", "cpu",
                       "--render-size", stand_ins[key].render_size])
    assert status == 0, err
    assert_colorized(gray_clip, out)


def test_colorize_with_a_local_pth_file(stand_ins, run, gray_clip, tmp_path):
    """A bare pickle given by path: no registry entry, its family found from its keys."""
    bare = stand_ins["artistic-bare"]
    out = tmp_path / "film-color.mp4"
    status, err = run(["colorize", gray_clip, "-o", out, "--model", bare.path, "--device", "cpu",
                       "--render-size", bare.render_size])
    assert status == 0, err
    assert_colorized(gray_clip, out)


@pytest.mark.parametrize("key", ["ddcolor", "artistic"])
def test_the_chroma_planes_carry_the_models_prediction(stand_ins, key):
    """colorvid's chroma, read back as Lab ab, agrees with the model's own ab at the frame's size.

    They are not equal pixel by pixel, by design: colorvid brings ab from the
    model's square up to the chroma planes with a guided filter on luma (5x5
    windows), which evens out pixel-scale detail (most of the random DDColor
    stand-in's ab is such noise) while keeping window means, and it writes
    8-bit Cb/Cr codes (up to half a code each, about 0.3 ab units). So 8x8
    block means are compared. Measured, they differ by 9 % of |ab| for the
    DDColor stand-in (|ab| about 1.7) and 1 % for DeOldify (|ab| about 24), and
    per channel they correlate at 0.95 and 0.99. A lost prediction (gray) is
    off by 100 % of |ab|, one in the wrong place (mirrored) correlates below 0.8.
    """
    stand_in = stand_ins[key]
    model = load_model(stand_in.path, render_size=stand_in.render_size)
    rgb = synthetic_rgb(3, 64, 48, color=False)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv444p", dst_colorspace="itu601", dst_color_range="MPEG")
    colorizer = FrameColorizer(model, torch.device("cpu"), "bt601", full_range=False, temporal="none")
    [out] = colorizer.colorize_frames([frame], "yuv444p")
    y, cb, cr = (torch.from_numpy(_Plane.of(plane, np.uint8).array.astype(np.float32)) for plane in out.planes)
    written = rgb_to_lab(ycbcr_to_rgb(y, cb, cr, "bt601", full_range=False))[1:]
    with torch.inference_mode():
        predicted = model(luma_to_lightness(y[None, None], 8, full_range=False))[0]
    assert predicted.shape == written.shape == (2, 48, 64)

    written_blocks, predicted_blocks = F.avg_pool2d(written[None], 8)[0], F.avg_pool2d(predicted[None], 8)[0]
    error = (written_blocks - predicted_blocks).abs().mean().item()
    magnitude = predicted_blocks.abs().mean().item()
    correlation = [np.corrcoef(w.flatten(), p.flatten())[0, 1] for w, p in zip(written_blocks, predicted_blocks)]
    print(f"{key}: |ab| {magnitude:.2f}, block error {error:.3f}, correlation a {correlation[0]:.3f} "
          f"b {correlation[1]:.3f}")
    assert magnitude > 1.0  # the stand-in does predict colors
    assert error < 0.2 * magnitude
    assert min(correlation) > 0.85


# --- errors -----------------------------------------------------------------------------


def deoldify_with_extra_key(stand_ins, path: Path) -> None:
    state = torch.load(stand_ins["artistic-bare"].path, weights_only=True)
    state["layers.12.scale"] = torch.ones(1)
    torch.save(state, path)


def pickle_with_unsafe_global(stand_ins, path: Path) -> None:
    # as fastai's Learner.save stores the optimizer factory beside the model
    torch.save({"model": {"layers.0.0.weight": torch.zeros(1)},
                "opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99))}, path)


def state_dict_of_no_family(stand_ins, path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(8, 1, 3, 3), "conv.bias": torch.zeros(8)}, path)


@pytest.mark.parametrize("make, render_size, expected", [
    (deoldify_with_extra_key, 4, "weights do not match the DeOldify generator: unexpected 1 key: layers.12.scale"),
    (pickle_with_unsafe_global, None, "refused as a weights-only torch file (unpickling it would call "
                                      "functools.partial"),
    (state_dict_of_no_family, None, "a PyTorch state dict of no family this colorvid loads (DDColor or DeOldify)"),
    (None, 100, "--render-size: DDColor's input size must be a positive multiple of 32, not 100"),
], ids=["deoldify-extra-key", "unsafe-global", "no-family", "ddcolor-render-size"])
def test_unusable_models_fail_in_one_line(stand_ins, run, gray_clip, tmp_path, make, render_size, expected):
    if make is None:
        model = stand_ins["ddcolor"].path
    else:
        model = tmp_path / "model.pth"
        make(stand_ins, model)
    out = tmp_path / "out.mp4"
    args = ["colorize", gray_clip, "-o", out, "--model", model, "--device", "cpu"]
    status, err = run(args + (["--render-size", render_size] if render_size else []))
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("colorvid: error: ") and expected in err, err
    if make is not None:
        assert str(model) in err  # the message names the file
    assert not out.exists()


# --- the registry's fields --------------------------------------------------------------


PACKAGE_ENTRY = """[models.m]
architecture = "deoldify"
package_file = "weights/m.pth"
sha256 = "{sha}"
license = "MIT"
description = "d"
"""
HUB_ENTRY = f"""[models.m]
architecture = "deoldify"
hf_repo = "{HUB_REPO}"
hf_filename = "m.pth"
hf_revision = "{HUB_REVISION}"
sha256 = "{'0' * 64}"
license = "MIT"
description = "d"
"""


def test_size_is_optional_for_a_hub_file_only(tmp_path):
    hub_file = tmp_path / "hub.toml"
    hub_file.write_text(HUB_ENTRY, encoding="utf-8")
    entry = model_registry.load_registry(hub_file).models["m"]
    assert entry.on_hub and entry.size is None
    package_file = tmp_path / "package.toml"
    package_file.write_text(PACKAGE_ENTRY.format(sha="0" * 64), encoding="utf-8")
    with pytest.raises(WeightsError) as refused:
        model_registry.load_registry(package_file)
    assert str(refused.value) == f"{package_file}: model 'm': missing 'size' (required of a package file)"


@pytest.mark.parametrize("line, problem", [
    ('speed = "quick"', "'speed' must be one of 'real-time', 'fast', 'slow', 'very slow'"),
    ("speed = 3", "'speed' must be a string"),
    ("render_size = 0", "'render_size' must be a positive integer"),
    ('render_size = "21"', "'render_size' must be a positive integer"),
    ("render_size = true", "'render_size' must be a positive integer"),
    ("render_size = 2.5", "'render_size' must be a positive integer"),
    ("size = 0", "'size' must be a positive integer (bytes)"),
])
def test_invalid_optional_fields_are_one_line_naming_file_and_model(tmp_path, line, problem):
    path = tmp_path / "weights.toml"
    path.write_text(HUB_ENTRY + line + "\n", encoding="utf-8")
    with pytest.raises(WeightsError) as refused:
        model_registry.load_registry(path)
    assert str(refused.value) == f"{path}: model 'm': {problem}"


def test_every_speed_class_is_accepted(tmp_path):
    path = tmp_path / "weights.toml"
    for speed in model_registry.SPEED_CLASSES:
        path.write_text(HUB_ENTRY + f'speed = "{speed}"\n', encoding="utf-8")
        assert model_registry.load_registry(path).models["m"].speed == speed


def test_a_registry_render_size_is_the_models_default_and_an_option_overrides_it(stand_ins, tmp_path, monkeypatch):
    stand_in = stand_ins["artistic-bare"]
    folder = tmp_path / "pkg"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "m.pth").symlink_to(stand_in.path)
    text = PACKAGE_ENTRY.format(sha=stand_in.sha256) + f"size = {stand_in.path.stat().st_size}\nrender_size = 3\n"
    write_registry(folder / "weights.toml", text, monkeypatch)

    assert weights.open_model("m").render_size == 3
    assert load_model(stand_in.path).render_size == 35  # the file alone: the family's default
    # as colorize, evaluate and preview load it: the entry's default, unless --render-size says otherwise
    loaded = LoadedModel.load("m", "cpu")
    assert (loaded.render_size, loaded.model.render_size, loaded.temporal) == (3, 3, "flow")
    overridden = LoadedModel.load("m", "cpu", render_size=5)
    assert (overridden.render_size, overridden.model.render_size) == (5, 5)
    [row] = weights.list_models()
    assert (row.family, row.render_size, row.speed) == ("deoldify", 3, None)


def test_a_registry_render_size_the_family_cannot_use_is_blamed_on_the_registry(stand_ins, tmp_path, monkeypatch):
    stand_in = stand_ins["ddcolor"]
    folder = tmp_path / "pkg"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "m.pth").symlink_to(stand_in.path)
    text = PACKAGE_ENTRY.format(sha=stand_in.sha256) + f"size = {stand_in.path.stat().st_size}\nrender_size = 100\n"
    write_registry(folder / "weights.toml", text, monkeypatch)
    with pytest.raises(WeightsError, match=r"^model 'm': the registry's render_size does not fit: .*multiple of 32"):
        weights.open_model("m")
    assert weights.open_model("m", render_size=64).render_size == 64  # an option the family takes still works


# --- CUDA -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["effnet-lite0-unet", "ddcolor", "deoldify"])
def test_cuda_matches_the_cpu_and_half_precision_stays_close(request, family):
    """fp32 on CUDA gives the CPU's ab; the family's half precision (``half=True``: fp16, bf16 for
    DDColor) runs and stays close to fp32.

    Tolerances are fractions of the largest |ab| on the CPU. A wrong computation is off by about
    100 %. CUDA's fp32 convolutions may run in TF32 (11 significant bits, as fp16; bf16 keeps 8):
    on a CPU, bf16 moves the DDColor stand-in's ab by at most 3.8 % of that largest |ab|, fp16 the
    DeOldify one's by 0.4 % and the effnet model's by 0.04 %; the bounds leave 2.5x to 5x room.
    """
    if family == "effnet-lite0-unet":
        path, render_size, half_tolerance = request.getfixturevalue("tiny_model"), 64, 0.02
    else:
        stand_in = request.getfixturevalue("stand_ins")["ddcolor" if family == "ddcolor" else "artistic"]
        path, render_size = stand_in.path, stand_in.render_size
        half_tolerance = 0.1 if family == "ddcolor" else 0.02
    assert family_of(path) == family

    def ab(device: str, half: bool) -> torch.Tensor:
        model = load_model(path, device, half=half, render_size=render_size)
        lightness = small_input(model).to(device, model.input_dtype)
        with torch.inference_mode():
            return model(lightness).float().cpu()

    cpu = ab("cpu", False)
    cuda = ab("cuda", False)
    half = ab("cuda", True)
    scale = cpu.abs().max().item()
    fp32_error = (cuda - cpu).abs().max().item()
    half_error = (half - cuda).abs().max().item()
    print(f"{family}: max |ab| {scale:.2f}; max |ab difference|: cuda fp32 vs cpu {fp32_error:.4f}, "
          f"half vs fp32 {half_error:.4f}")
    assert scale > 1.0
    assert torch.isfinite(half).all()
    assert fp32_error < 0.02 * scale
    assert half_error < half_tolerance * scale


# --- the large layouts (slow: -m slow) --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind, wrapper, render_size", [("ddcolor-large", "params", 64), ("deoldify-stable", None, 4)])
def test_the_large_published_layouts_colorize(run, gray_clip, tmp_path, kind, wrapper, render_size):
    """ConvNeXt-L DDColor (ddcolor, -artistic, -modelscope) and ResNet-101 DeOldify (stable, video) files,
    as published, given by path."""
    path = save_published(random_state(kind), tmp_path / f"{kind}.pth", wrapper, torch.float16)
    assert getattr(load_model(path, render_size=render_size), "variant") == kind
    out = tmp_path / "film-color.mp4"
    status, err = run(["colorize", gray_clip, "-o", out, "--model", path, "--device", "cpu",
                       "--render-size", render_size])
    assert status == 0, err
    assert_colorized(gray_clip, out)
