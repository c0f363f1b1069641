"""DDColor family: loading guarded against the original code's output, without the original code.

tests/data/ddcolor_tiny_reference.json holds the (key, shape) list of the tiny
model as the original code lays it out, and ab that the original network
computed (benchmarks/parity_ddcolor.py --write-fixture) with the stand-in
weights that :func:`stand_in_state` makes from that list and the fixture's
seed, on :func:`fixture_gray` as RGB. The tests rebuild those weights with this
file's code, save them as the published files are, load them with colorvid
and compare. The original's pre- and post-processing is compared by the
parity script, which needs OpenCV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ModelFileError
from colorvid.models import ddcolor

FIXTURE = Path(__file__).parent / "data" / "ddcolor_tiny_reference.json"
_POWER_ITERATIONS = 5
# colorvid against the original code on the same weights, relative to the largest |ab|
# (float rounding differs between machines; a wrong step gives differences near 1).
TOLERANCE = 1e-3


def stand_in_state(layout: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights for a DDColor layout, every tensor drawn.

    Tensors are drawn in sorted-key order as normal values from
    ``torch.Generator().manual_seed(seed)`` and scaled so that activations stay
    near 1: weights by 1/sqrt(fan in), norm scales near 1, biases and shifts
    small, running variances positive (and small). A spectrally normalized
    weight's v is its drawn v after a few power iterations and its u is W v
    normalized, so that u.(W v) is near W's largest singular value (positive),
    as in a trained network.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in sorted((k, tuple(s)) for k, s in layout):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
            continue
        x = torch.randn(shape, generator=gen)
        leaf = key.rsplit(".", 1)[-1]
        if key == "mean":
            x = 0.45 + 0.05 * x
        elif key == "std":
            x = 0.22 + 0.02 * x.abs()
        elif leaf == "running_var":  # small, so that batch norms amplify as trained ones do after
            x = 0.05 * (1.0 + 0.2 * x.abs())  # the spectrally normalized convolutions that shrink
        elif leaf in ("running_mean", "bias", "gamma") or leaf.endswith("_bias"):
            x = 0.1 * x
        elif x.dim() == 1 and leaf == "weight":  # layer and batch norm scales
            x = 1.0 + 0.1 * x
        elif x.dim() >= 2 and not any(part in key for part in ("query_feat", "query_embed", "level_embed")):
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    for key in [k for k in state if k.endswith("weight_orig")]:
        stem = key[: -len("_orig")]
        matrix = state[key].reshape(state[key].shape[0], -1)
        v = F.normalize(state[stem + "_v"], dim=0)
        for _ in range(_POWER_ITERATIONS):
            u = F.normalize(matrix @ v, dim=0)
            v = F.normalize(matrix.t() @ u, dim=0)
        state[stem + "_u"] = F.normalize(matrix @ v, dim=0)
        state[stem + "_v"] = v
    return state


def fixture_gray(size: int) -> torch.Tensor:
    """A gray 8-bit test image (size, size): gradients, stripes and a disk."""
    coords = torch.arange(size, dtype=torch.float64)
    y, x = coords[:, None], coords[None, :]
    value = 0.2 + 0.5 * x / size + 0.15 * torch.sin(y / 3.0) * torch.cos(x / 5.0)
    value = torch.where((x - 0.6 * size) ** 2 + (y - 0.4 * size) ** 2 < (0.2 * size) ** 2, 0.9 - 0.3 * y / size, value)
    return (value.clamp(0, 1) * 255).round().to(torch.uint8)


def lightness_of(gray: torch.Tensor) -> torch.Tensor:
    """colorvid's Lab L (1, 1, H, W) of an 8-bit gray image."""
    rgb = (gray.float() / 255).expand(3, -1, -1)
    return rgb_to_lab(rgb.unsqueeze(0))[:, :1]


@pytest.fixture(scope="module")
def fixture():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def stand_in(fixture):
    return stand_in_state(fixture["layout"], fixture["seed"])


@pytest.fixture(scope="module")
def stand_in_file(stand_in, tmp_path_factory):
    path = tmp_path_factory.mktemp("ddcolor") / "ddcolor_stand_in.pth"
    torch.save({"params": stand_in}, path)
    return path


@pytest.fixture(scope="module")
def loaded(fixture, stand_in_file):
    return ddcolor.load(stand_in_file, render_size=fixture["size"])


def test_loaded_stand_in_reproduces_the_reference_output(fixture, loaded):
    size, step = fixture["size"], fixture["step"]
    expected = torch.tensor(fixture["ab"]).reshape(2, -1, size // step)
    scale = expected.abs().max().item()
    assert scale > 5.0  # the stand-in weights give colors, not near-zeros
    assert isinstance(loaded, ddcolor.DDColorColorizer) and not loaded.training
    assert (loaded.variant, loaded.input_size) == ("ddcolor-tiny", size)
    gray = fixture_gray(size)
    with torch.inference_mode():
        network = loaded.net((gray.float() / 255).expand(1, 3, -1, -1))
        ab = loaded(lightness_of(gray))  # its gray RGB is the image again (colorvid's Lab round trip)
    assert ab.shape == (1, 2, size, size) and ab.dtype == torch.float32
    for got in (network, ab):
        assert (got[0, :, ::step, ::step] - expected).abs().max().item() < TOLERANCE * scale
        assert abs(got.mean().item() - fixture["mean"]) < TOLERANCE * scale


def test_any_frame_size_is_stretched_to_the_square_and_back(loaded):
    lightness = torch.linspace(0, 100, 40 * 72).reshape(1, 1, 40, 72)
    zeros = torch.zeros_like(lightness)
    gray = lab_to_rgb(torch.cat((lightness, zeros, zeros), dim=1))
    model = ddcolor.DDColorColorizer(loaded.net, loaded.variant, 32)  # a smaller square: faster
    nearest = ddcolor.DDColorColorizer(loaded.net, loaded.variant, 32, ab_resize="nearest")
    with torch.inference_mode():
        square = loaded.net(F.interpolate(gray, size=(32, 32), mode="bilinear", align_corners=False))
        ab = model(lightness.expand(2, 1, 40, 72))
        ab_nearest = nearest(lightness)
    assert ab.shape == (2, 2, 40, 72) and torch.allclose(ab[0], ab[1], atol=1e-4)
    assert torch.allclose(ab[:1], F.interpolate(square, size=(40, 72), mode="bilinear", align_corners=False), atol=1e-4)
    assert torch.allclose(ab_nearest, F.interpolate(square, size=(40, 72)), atol=1e-4)  # the original's resize


def test_half_runs_the_network_in_bfloat16(loaded, stand_in_file):
    size = 32  # bf16 is slow on CPUs without bf16 units
    model = ddcolor.load(stand_in_file, half=True, render_size=size)
    assert next(model.net.parameters()).dtype == torch.bfloat16
    lightness = lightness_of(fixture_gray(size))
    with torch.inference_mode():
        ab = model(lightness.half())  # the pipeline gives fp16 L when it runs a model in half precision
        full = ddcolor.DDColorColorizer(loaded.net, loaded.variant, size)(lightness)
    assert ab.dtype == torch.float32 and torch.isfinite(ab).all()
    assert (ab - full).abs().max().item() < 0.1 * full.abs().max().item()


def test_matches_names_the_variant_from_the_keys(fixture):
    layout = {key: torch.empty(shape) for key, shape in fixture["layout"]}
    assert ddcolor.matches(layout) == "ddcolor-tiny"
    assert ddcolor.matches({k: v for k, v in layout.items() if k != "mean"}) is None
    assert ddcolor.matches({"conv.weight": torch.empty(1)}) is None
    three_channels = dict(layout, **{"refine_net.0.0.weight_orig": torch.empty(3, 103, 1, 1)})
    assert ddcolor.matches(three_channels) is None


@pytest.mark.parametrize("wrapper", ["params", "params_ema", "model", None])
def test_read_state_unwraps_the_known_wrappers(tmp_path, wrapper):
    state = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    path = tmp_path / "w.pth"
    torch.save(state if wrapper is None else {wrapper: state, "meta": {"iter": 3}}, path)
    got = ddcolor.read_state(path)
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_check_refuses_a_file_without_ddcolor_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"params": {"conv.weight": torch.ones(1)}}, path)
    with pytest.raises(ModelFileError, match="not a DDColor"):
        ddcolor.check(path)


def test_an_extra_or_missing_key_is_refused_by_name(stand_in, tmp_path):
    state = dict(stand_in)
    state["decoder.extra_head.weight"] = torch.zeros(3)
    del state["decoder.color_decoder.decoder_norm.bias"]
    path = tmp_path / "extra.pth"
    torch.save({"params": state}, path)
    ddcolor.check(path)  # the keys it detects by are all there
    with pytest.raises(ModelFileError) as info:
        ddcolor.load(path, render_size=64)
    assert "decoder.extra_head.weight" in str(info.value)
    assert "decoder.color_decoder.decoder_norm.bias" in str(info.value)


class _Unsafe:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pickle_needing_unsafe_globals_is_refused(tmp_path, capsys):
    path = tmp_path / "unsafe.pth"
    torch.save({"params": {"mean": torch.zeros(1)}, "hook": _Unsafe()}, path)
    with pytest.raises(ModelFileError, match="refused"):
        ddcolor.read_state(path)
    with pytest.raises(ModelFileError, match="refused"):
        ddcolor.check(path)
    assert "unpickled code ran" not in capsys.readouterr().out


def test_render_size_must_fit_the_encoder(stand_in_file):
    with pytest.raises(ValueError, match="multiple of 32"):
        ddcolor.load(stand_in_file, render_size=100)
