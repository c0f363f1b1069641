"""Keyframe-guided colorization: a colorist's colors carried through their shot.

The guide itself (colorvid.propagation.KeyframeGuide) is tested on synthetic
lightness at the model's output size, where what it does can be measured exactly;
the keyframe folders (KeyframeSet), ``colorize --keyframes`` and
``evaluate --keyframes-from-truth`` on small clips, as a user runs them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from media import (
    KEY_AB,
    after_a_chunk,
    audio_packets,
    chunks_recorded,
    decoded_planes,
    leftovers,
    make_clip,
    raise_interrupt,
    read_video_pts,
    stop_on_call,
    temporary_files,
    y_psnr,
)
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from colorvid import evaluate as evaluate_module
from colorvid import pipeline
from colorvid.color import lab_to_rgb
from colorvid.colorizer import FrameColorizer
from colorvid.errors import InputError
from colorvid.evaluate import EvaluateOptions, evaluate
from colorvid.keyframes import KeyframeSet
from colorvid.pipeline import ColorizeOptions
from colorvid.propagation import KeyframeGuide, KeyframeLookahead
from colorvid.smoothing import detect_cuts

H, W = 32, 48  # the guide works at the model's output size (about 64 x 112): this is of that order
TINT = (30.0, -20.0)  # a keyframe's flat ab: purple
SMALL = ["--render-size", "64"]  # the network's input size: what costs time


# --- the guide on synthetic lightness ----------------------------------------------------


def texture(height: int, width: int, seed: int, low: float = 30.0, high: float = 80.0) -> torch.Tensor:
    """A smooth random lightness pattern (1, 1, height, width), in low..high (Lab L)."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.rand(1, 1, height // 4, width // 4, generator=generator)
    smooth = F.interpolate(cells, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    return low + (high - low) * smooth


def flat_ab(ab: tuple[float, float], height: int = H, width: int = W) -> torch.Tensor:
    return torch.tensor(ab).view(1, 2, 1, 1).expand(1, 2, height, width).clone()


def keyframe(lightness: torch.Tensor, ab: torch.Tensor, in_gamut: bool = True) -> torch.Tensor:
    """A colorist's keyframe: RGB (3, H, W) 0..1 with this L (1, 1, H, W) and ab (1, 2, H, W)
    (``in_gamut``: checked to be exactly that, no channel clipped)."""
    rgb = lab_to_rgb(torch.cat((lightness, ab), 1))[0].clamp(0, 1)
    assert not in_gamut or (0.0 < float(rgb.min()) and float(rgb.max()) < 1.0), "the keyframe is out of gamut"
    return rgb


def guided(
    frames: list[torch.Tensor],
    keys: dict[int, torch.Tensor],
    automatic: torch.Tensor | list[torch.Tensor],
    batch: int = 8,
    backwards: bool = True,
) -> list[torch.Tensor]:
    """Run a KeyframeGuide over ``frames`` (L, each (1, 1, h, w)) as the colorizer does: in batches,
    with the cut detector's flags and (``backwards``) a KeyframeLookahead; ``keys`` maps a frame's
    index in ``frames`` to its keyframe, ``automatic`` is every frame's automatic ab (one for all,
    or a list). Returns the guided ab."""
    guide = KeyframeGuide()
    # the lookahead's frames are the L themselves: it reads them as the colorizer gets them
    lookahead = KeyframeLookahead(((frame, keys.get(i)) for i, frame in enumerate(frames)),
                                  lambda batch, size: torch.cat(batch)) if backwards else None
    previous = None
    out: list[torch.Tensor] = []
    for start in range(0, len(frames), batch):
        lightness = torch.cat(frames[start : start + batch])
        if isinstance(automatic, torch.Tensor):
            ab = automatic.expand(len(lightness), -1, -1, -1).clone()
        else:
            ab = torch.cat(automatic[start : start + batch])
        cuts = detect_cuts(lightness, previous)
        previous = lightness[-1:]
        batch_keys = {i - start: key for i, key in keys.items() if start <= i < start + len(lightness)}
        ahead = None
        if lookahead is not None:
            ahead = [a.carried for a in lookahead.take(len(lightness), (lightness.shape[-2], lightness.shape[-1]))]
        guided_ab, keyed = guide(ab, lightness, cuts, batch_keys, ahead=ahead)
        changed = [not torch.equal(g, a) for g, a in zip(guided_ab, ab)]
        assert all(k for k, c in zip(keyed.tolist(), changed) if c), "every frame that changed is said to be keyed"
        out.extend(guided_ab.split(1))
    return out


def test_keyframe_colors_last_through_a_static_shot_and_stop_at_the_cut():
    scene = texture(H, W, seed=1)
    grain = torch.Generator().manual_seed(5)
    shot = [scene + torch.randn(scene.shape, generator=grain) for _ in range(31)]  # film grain, 1 L unit
    other_shot = texture(H, W, seed=2, low=75.0, high=95.0)  # a bright scene: a cut
    frames = [*shot, other_shot, other_shot + 0.5]
    automatic = torch.zeros(1, 2, H, W)
    out = guided(frames, {0: keyframe(scene, flat_ab(TINT))}, automatic)

    for index in (0, 10, 30):  # the keyframe's colors at its frame and 30 frames later
        mean = out[index].mean((0, 2, 3)).tolist()
        assert mean == pytest.approx(TINT, abs=2.0), f"frame {index}: mean ab {mean}"
        near = float(((out[index] - flat_ab(TINT)).norm(dim=1) < 8.0).float().mean())
        assert near > 0.95, f"frame {index}: only {near:.0%} of the picture has the keyframe's colors"
    for index in (31, 32):  # after the cut, the automatic colors, untouched
        assert torch.equal(out[index], automatic), f"frame {index}"


def test_keyframe_colors_move_with_the_picture():
    # the scene moves right by 2 and down by 1 pixel a frame (a camera pan): crop a larger texture
    height, width = 48, 72
    scene = texture(height + 48, width + 64, seed=3, high=70.0)

    def frame(t: int) -> torch.Tensor:
        top, left = 40 - t, 50 - 2 * t
        return scene[..., top : top + height, left : left + width].clone()

    patch_ab = torch.zeros(1, 2, height, width)
    patch_ab[..., 10:22, 10:22] = torch.tensor([40.0, 30.0]).view(1, 2, 1, 1)  # a red patch, the rest gray
    out = guided([frame(t) for t in range(21)], {0: keyframe(frame(0), patch_ab)}, torch.zeros(1, 2, height, width))

    last = out[20][0]
    moved = last[:, 10 + 20 : 22 + 20, 10 + 40 : 22 + 40].mean((1, 2))
    old = last[:, 10:22, 10:22].mean((1, 2))
    assert moved.tolist() == pytest.approx([40.0, 30.0], abs=6.0), "the color follows the patch"
    assert float(old.norm()) < 5.0, f"and leaves the place it was, not a ghost of {old.tolist()} there"


def test_keyframe_colors_go_back_to_the_start_of_its_shot_and_not_across_the_cut():
    first_shot = texture(H, W, seed=2, low=75.0, high=95.0)
    scene = texture(H, W, seed=1)
    grain = torch.Generator().manual_seed(5)
    shot = [scene + torch.randn(scene.shape, generator=grain) for _ in range(25)]
    frames = [first_shot, first_shot + 0.5, *shot]  # a cut at 2; the keyframe at 22, 20 frames into the shot
    automatic = torch.zeros(1, 2, H, W)
    out = guided(frames, {22: keyframe(scene, flat_ab(TINT))}, automatic, batch=4)
    for index in (2, 12, 21, 22, 26):  # the shot's first frame, on to the end
        mean = out[index].mean((0, 2, 3)).tolist()
        assert mean == pytest.approx(TINT, abs=2.0), f"frame {index}: mean ab {mean}"
    for index in (0, 1):  # before the cut, the automatic colors, untouched
        assert torch.equal(out[index], automatic), f"frame {index}"
    forwards_only = guided(frames, {22: keyframe(scene, flat_ab(TINT))}, automatic, batch=4, backwards=False)
    assert torch.equal(forwards_only[12], automatic), "without the lookahead, nothing before the keyframe"


def test_frames_between_two_keyframes_take_both_by_distance():
    scene = texture(H, W, seed=1)
    frames = [scene.clone() for _ in range(21)]
    first, second = (30.0, -20.0), (-20.0, 30.0)
    keys = {0: keyframe(scene, flat_ab(first)), 20: keyframe(scene, flat_ab(second))}
    out = guided(frames, keys, torch.zeros(1, 2, H, W))
    means = [ab.mean((0, 2, 3)) for ab in out]
    assert means[0].tolist() == pytest.approx(first, abs=1.0)
    assert means[20].tolist() == pytest.approx(second, abs=1.0)
    assert means[10].tolist() == pytest.approx([5.0, 5.0], abs=2.0), "halfway, half of each"
    # from one keyframe's colors to the other's, steadily: no jump where one hands over
    a_channel = [float(m[0]) for m in means]
    steps = [b - a for a, b in zip(a_channel, a_channel[1:])]
    assert all(-4.0 < step < 0.0 for step in steps), steps


def test_lookahead_reads_only_as_far_as_it_must():
    scene = texture(H, W, seed=1)
    read: list[int] = []

    def frames():
        for i in range(40):
            read.append(i)
            yield scene, (keyframe(scene, flat_ab(TINT)) if i == 30 else None)

    lookahead = KeyframeLookahead(frames(), lambda batch, size: torch.cat(batch), max_frames=10)
    taken = [a.carried for a in lookahead.take(8, (H, W))]
    assert taken == [None] * 8, "frames more than max_frames before the keyframe take nothing from it"
    assert len(read) <= 8 + 10 + 16, f"read {len(read)} frames ahead to decide 8"
    taken = [a.carried for a in lookahead.take(22, (H, W))]
    assert taken[:12] == [None] * 12 and all(c is not None for c in taken[12:]), "the last 10 before it do"
    assert [c.distance for c in taken[12:] if c is not None] == list(range(10, 0, -1))


def test_keyframe_of_other_content_leaves_the_automatic_colors():
    scene = texture(H, W, seed=1)
    other = texture(H, W, seed=2)  # the same kind of picture, of something else: a keyframe of another shot
    automatic = flat_ab((-10.0, 15.0))
    out = guided([scene] * 4, {0: keyframe(other, flat_ab(TINT))}, automatic)
    tint_distance = float(torch.tensor(TINT).sub(torch.tensor([-10.0, 15.0])).norm())  # 50 ab units
    for index, ab in enumerate(out):
        moved = float((ab - automatic).norm(dim=1).mean())
        assert moved < 5.0, f"frame {index}: the wrong keyframe moved the colors {moved:.1f} of {tint_distance:.0f}"


def test_guided_colors_do_not_depend_on_the_batch_size():
    scene = texture(H + 40, W + 40, seed=4)
    pan = [scene[..., 20 - t // 2 : 20 - t // 2 + H, 20 - t : 20 - t + W].clone() for t in range(12)]
    second_shot = texture(H, W, seed=6, low=70.0, high=95.0)
    frames = [*pan, *[second_shot] * 5]  # a cut at 12
    patch_ab = torch.zeros(1, 2, H, W)
    patch_ab[..., 8:20, 14:30] = torch.tensor([35.0, 20.0]).view(1, 2, 1, 1)
    keys = {2: keyframe(pan[2], patch_ab, in_gamut=False), 7: keyframe(pan[7], flat_ab(TINT), in_gamut=False),
            14: keyframe(second_shot, patch_ab, in_gamut=False)}
    generator = torch.Generator().manual_seed(7)
    automatic = [torch.randn(1, 2, H, W, generator=generator) * 5 for _ in frames]
    one = guided(frames, keys, automatic, batch=1)
    assert float((one[5] - automatic[5]).abs().max()) > 10, "the keyframes do change the colors"
    for batch in (3, 8):  # keyframes and the cut at every place in a batch
        other = guided(frames, keys, automatic, batch=batch)
        for index, (a, b) in enumerate(zip(one, other)):
            assert torch.allclose(a, b, atol=1e-3), f"batch {batch}, frame {index}: {float((a - b).abs().max())}"


# --- keyframe folders -------------------------------------------------------------------


def save_image(path: Path, value: int = 128) -> None:
    Image.fromarray(np.full((48, 64, 3), value, np.uint8)).save(path)


def load_keyframes(folder: Path, film: Path) -> KeyframeSet:
    """A KeyframeSet with every image read, as a run reads them."""
    keyframes = KeyframeSet.from_folder(folder, film)
    for number in keyframes.files:
        keyframes.image(number)
    return keyframes


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """A variable-frame-rate clip of 12 frames: its frames' timestamps are irregular."""
    path = tmp_path_factory.mktemp("film") / "film.mkv"
    make_clip(path, frames=12, vfr=True, audio_tracks=0)
    return path


def video_pts(path: Path) -> list[int]:
    """Every frame's pts (in its stream's time base), from the decoded times."""
    with av.open(str(path)) as container:
        time_base = container.streams.video[0].time_base
    assert time_base is not None
    return [int(t / time_base) for t in read_video_pts(path)]


def test_keyframes_numbered_by_the_manifest(tmp_path, film):
    save_image(tmp_path / "frame_000003.png")
    manifest = {"frames": [{"file": "frame_000003.png", "pts": 1234}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    keyframes = KeyframeSet.from_folder(tmp_path, film)
    assert len(keyframes) == 1
    assert keyframes.at(1234) == 3
    assert keyframes.at(video_pts(film)[2]) is None  # the manifest's timestamp, not the count's


def test_keyframes_numbered_by_counting_the_film_frames(tmp_path, film):
    for number in (1, 5, 12):
        save_image(tmp_path / f"frame_{number:06d}.png")
    keyframes = KeyframeSet.from_folder(tmp_path, film)
    shown = [keyframes.at(pts) for pts in video_pts(film)]  # the keyframe at each frame of the film, if any
    assert shown == [n if n in (1, 5, 12) else None for n in range(1, 13)]


@pytest.mark.parametrize(
    "names,blamed",
    [
        ([], ""),  # the folder itself
        (["frame_000002.png", "frame_000002.jpg"], "frame_000002.png"),
        (["frame_000013.png"], "frame_000013.png"),  # the film has 12 frames
        (["frame_000001.png!"], "frame_000001.png"),  # a text file with an image's name
    ],
    ids=["empty", "two-images-of-a-frame", "beyond-the-film", "not-an-image"],
)
def test_bad_keyframe_folders_fail_in_one_line_naming_the_file(tmp_path, film, names, blamed):
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a keyframe")
    for name in names:
        if name.endswith("!"):
            (folder / name[:-1]).write_text("not a picture")
        else:
            save_image(folder / name)
    with pytest.raises(InputError) as failure:
        load_keyframes(folder, film)
    message = str(failure.value)
    assert "\n" not in message
    assert str(folder / blamed) in message
    if len(names) == 2:
        assert "frame_000002.jpg" in message  # and the other image of that frame


def test_keyframes_digest_follows_the_images(tmp_path, film):
    save_image(tmp_path / "frame_000002.png", 100)
    first = KeyframeSet.from_folder(tmp_path, film).digest()
    assert KeyframeSet.from_folder(tmp_path, film).digest() == first
    save_image(tmp_path / "frame_000002.png", 101)  # the colorist touched up the picture
    assert KeyframeSet.from_folder(tmp_path, film).digest() != first


# --- colorize --keyframes -------------------------------------------------------------

# What colorvid.pipeline.load_for loads a model from (the rest of the options do not change it).
LOAD_FIELDS = ("model", "device", "half", "render_size", "temporal", "smooth", "keyframes_model")


@pytest.fixture(scope="module")
def loaded_models() -> dict:
    return {}


@pytest.fixture
def load_once(monkeypatch, loaded_models):
    """Runs (CLI or Python) in this module load each model and settings once: loading takes seconds."""
    real = pipeline.load_for

    def load_for(options: ColorizeOptions):
        key = tuple(getattr(options, name, None) for name in LOAD_FIELDS)
        if key not in loaded_models:
            loaded_models[key] = real(options)
        return loaded_models[key]

    monkeypatch.setattr(pipeline, "load_for", load_for)
    monkeypatch.setattr(evaluate_module, "load_for", load_for)


def write_keyframe(source: Path, folder: Path, index: int = 0, ab: tuple[float, float] = KEY_AB) -> np.ndarray:
    """Paint frame ``index`` of a gray clip as a colorist would (its lightness, a flat ``ab``) into
    ``folder``/frame_NNNNNN.png; returns the picture (H, W, 3) uint8."""
    with av.open(str(source)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                gray = frame.to_ndarray(format="rgb24")
                break
    lab = rgb2lab(gray)
    lab[..., 1], lab[..., 2] = ab
    painted = (lab2rgb(lab) * 255).round().clip(0, 255).astype(np.uint8)
    folder.mkdir(exist_ok=True)
    Image.fromarray(painted).save(folder / f"frame_{index + 1:06d}.png")
    return painted


def chroma_offset(planes: np.ndarray) -> np.ndarray:
    """Mean (Cb, Cr) of a frame's Y'CbCr planes, from neutral."""
    return planes[1:].reshape(2, -1).mean(1) - 128.0


def picture_chroma(rgb: np.ndarray) -> np.ndarray:
    """Mean (Cb, Cr) of an RGB picture (H, W, 3) uint8, from neutral: where a colorist's colors are."""
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p").to_ndarray()
    return chroma_offset(yuv.astype(float))


def assert_keyframe_colors(out: Path, automatic: Path, painted: np.ndarray, indices: tuple[int, ...]) -> None:
    """At these frames ``out`` is ten times nearer the painted keyframe's mean colors than ``automatic``."""
    target = picture_chroma(painted)
    with_keys, without = decoded_planes(out), decoded_planes(automatic)
    for index in indices:
        near = np.linalg.norm(chroma_offset(with_keys[index]) - target)
        far = np.linalg.norm(chroma_offset(without[index]) - target)
        assert near < 0.1 * far, f"frame {index}: {near:.1f} from the keyframe's colors, {far:.1f} without it"


@pytest.mark.parametrize(
    ("key_index", "checked"),
    [(0, (0, 8, 15)), (10, (0, 5, 10, 15))],
    ids=["carried-forwards-from-the-first-frame", "carried-both-ways-from-frame-11"],
)
def test_colorize_carries_a_keyframe_through_its_shot(tmp_path, tinted_model, run, load_once, key_index, checked):
    source = tmp_path / "film.mkv"
    make_clip(source, width=96, height=64, frames=16, color=False, audio_tracks=1)
    keys = tmp_path / "keys"
    painted = write_keyframe(source, keys, index=key_index)
    common = ["--model", tinted_model, "--codec", "ffv1", *SMALL]
    automatic, out = tmp_path / "automatic.mkv", tmp_path / "out.mkv"
    assert run(["colorize", source, "-o", automatic, *common])[0] == 0
    status, err = run(["colorize", source, "-o", out, "--keyframes", keys, *common])
    assert status == 0, err

    assert read_video_pts(out) == read_video_pts(source)
    assert y_psnr(source, out) == math.inf
    assert audio_packets(out) == audio_packets(source)
    assert temporary_files(tmp_path) == [] and leftovers(tmp_path) == []
    assert_keyframe_colors(out, automatic, painted, checked)


@pytest.mark.parametrize(("key_index", "fit"), [(0, False), (12, False), (12, True)],
                         ids=["keyframe-in-the-first-part", "keyframe-in-the-second-part", "fitted-to-it"])
def test_parts_have_the_keyframe_colors_of_the_whole_run(tmp_path, tinted_model, run, load_once, key_index, fit):
    source = tmp_path / "film.mkv"
    make_clip(source, frames=16, color=False, audio_tracks=0)
    keys = tmp_path / "keys"
    write_keyframe(source, keys, key_index)
    # smoothing remembers 5 frames at 0.3: only the keyframe warmup reaches back to frame 1 from frame 9
    common = ["--model", tinted_model, "--codec", "ffv1", "--temporal", "flow", "--smooth", "0.3", "--keyframes",
              keys, *SMALL, *(["--keyframes-fit"] if fit else [])]
    whole = tmp_path / "whole.mkv"
    assert run(["colorize", source, "-o", whole, *common])[0] == 0
    out = tmp_path / "out.mkv"
    for part in ("0.33-", "0-0.33"):  # frames 9-16, then 1-8
        status, err = run(["colorize", source, "-o", out, "--range", part, *common])
        assert status == 0, err
    status, err = run(["join", *sorted(tmp_path.glob("out.mkv.part*")), "-o", out])
    assert status == 0, err

    assert read_video_pts(out) == read_video_pts(whole)
    joined, expected = decoded_planes(out), decoded_planes(whole)
    assert chroma_offset(expected[14])[0] > 5, "the keyframe's blue still shows late in the whole run"
    assert chroma_offset(expected[1])[0] > 5, "and early"
    for index, (a, b) in enumerate(zip(joined, expected)):
        assert int(np.abs(a - b).max()) <= 1, f"frame {index} differs from the whole run"


def two_shots(index: int, width: int, height: int) -> np.ndarray:
    """Frames 0-9 a dark gradient, 10-19 a bright one: a cut at frame 10."""
    ramp = np.linspace(0, 1, width)[None, :, None]
    low, high = (20, 90) if index < 10 else (150, 230)
    return np.broadcast_to(low + (high - low) * ramp, (height, width, 3)).astype(np.uint8).copy()


@pytest.mark.parametrize("every,expected_keys", [(None, 2), ("0.2", 4)], ids=["shots", "every-0.2s"])
def test_keyframes_model_colors_each_shot_start_and_more_in_long_shots(tmp_path, tinted_model, key_model, run,
                                                                        load_once, monkeypatch, every, expected_keys):
    source = tmp_path / "film.mkv"
    make_clip(source, width=96, height=64, frames=20, color=False, audio_tracks=1, picture=two_shots)
    keyed: list[int] = []
    real = FrameColorizer._key_model_colors

    def counted(self, *args, **kwargs):
        keyed.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FrameColorizer, "_key_model_colors", counted)
    out = tmp_path / "out.mkv"
    args = ["colorize", source, "-o", out, "--model", tinted_model, "--keyframes-model", key_model, "--codec", "ffv1",
            *SMALL]
    status, err = run([*args, *(["--keyframes-every", every] if every else [])])
    assert status == 0, err
    # 24 fps: each 10-frame shot is 0.42 s long, so 0.2 s adds a keyframe at its 5th frame
    assert len(keyed) == expected_keys, "the key model runs on the keyframes only"
    assert read_video_pts(out) == read_video_pts(source)
    assert y_psnr(source, out) == math.inf
    assert audio_packets(out) == audio_packets(source)
    key_rgb = lab_to_rgb(torch.tensor([[[[50.0]], [[KEY_AB[0]]], [[KEY_AB[1]]]]]))
    target = picture_chroma((key_rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                            .repeat(2, 0).repeat(2, 1))
    for index, planes in enumerate(decoded_planes(out)):  # the key model's cyan-blue in both shots, not orange
        offset = chroma_offset(planes)
        assert np.sign(offset).tolist() == np.sign(target).tolist(), f"frame {index}: (Cb, Cr) offset {offset}"


def test_evaluate_with_a_keyframes_model(tmp_path, tinted_model, key_model, run, load_once):
    reference = tmp_path / "ref.mkv"
    make_clip(reference, width=96, height=64, frames=20, color=True, audio_tracks=0, picture=two_shots)
    args = ["evaluate", reference, "--model", tinted_model, *SMALL, "--json"]
    assert run(args)[0] == 0
    plain = json.loads(run.out)
    status, err = run([*args, "--keyframes-model", key_model, "--keyframes-every", "0.2"])
    assert status == 0, err
    keyed = json.loads(run.out)
    assert keyed["settings"]["keyframes_every"] == 0.2
    assert keyed["clips"][0]["frames"] == 20
    # the key model's cyan-blue instead of the main model's orange: other colors, the luma kept
    assert keyed["clips"][0]["output"]["psnr"] != plain["clips"][0]["output"]["psnr"]
    assert keyed["clips"][0]["output"]["luma_psnr"] > 40.0


# --- --keyframes-fit --------------------------------------------------------------------


def test_keyframes_fit_gives_shots_without_a_keyframe_the_keyframes_palette(tmp_path, run):
    source = tmp_path / "film.mkv"
    make_clip(source, width=96, height=64, frames=20, color=False, audio_tracks=1, picture=two_shots)
    keys = tmp_path / "keys"
    painted = write_keyframe(source, keys, index=0)  # cyan-blue; the second shot (frames 10-19) has no keyframe
    common = ["--keyframes", keys, "--codec", "ffv1", "--device", "cpu"]  # the default model: its palette is learned
    plain, fitted = tmp_path / "plain.mkv", tmp_path / "fitted.mkv"
    status, err = run(["colorize", source, "-o", plain, *common])
    assert status == 0, err
    status, err = run(["colorize", source, "-o", fitted, *common, "--keyframes-fit", "-v"])
    assert status == 0, err
    assert "read-out fitted to 1 keyframe" in err

    assert read_video_pts(fitted) == read_video_pts(source)
    assert y_psnr(source, fitted) == math.inf
    assert audio_packets(fitted) == audio_packets(source)
    assert temporary_files(tmp_path) == [] and leftovers(tmp_path) == []
    target = picture_chroma(painted)
    with_fit, without = decoded_planes(fitted), decoded_planes(plain)
    for index in (12, 19):  # the shot without a keyframe: the automatic colors are near gray there
        near = np.linalg.norm(chroma_offset(with_fit[index]) - target)
        far = np.linalg.norm(chroma_offset(without[index]) - target)
        assert near < 0.7 * far, f"frame {index}: {near:.1f} from the keyframe's colors, {far:.1f} without the fit"
        assert np.sign(chroma_offset(with_fit[index])).tolist() == np.sign(target).tolist()
    for index in (0, 5):  # the keyframe's own shot keeps its carried colors
        assert np.linalg.norm(chroma_offset(with_fit[index]) - target) < 3.0


def test_keyframes_fit_is_part_of_a_resumable_runs_settings(tmp_path, tinted_model, run, load_once, monkeypatch):
    source = tmp_path / "film.mkv"
    make_clip(source, frames=24, color=False, audio_tracks=1)
    keys = tmp_path / "keys"
    write_keyframe(source, keys, index=0)
    args = ["--model", tinted_model, "--keyframes", keys, "--codec", "ffv1", "--batch-size", "4",
            "--chunk-seconds", "0.25", *SMALL]
    whole, plain, out = tmp_path / "whole.mkv", tmp_path / "plain.mkv", tmp_path / "out.mkv"
    assert run(["colorize", source, "-o", whole, *args, "--keyframes-fit"])[0] == 0
    assert run(["colorize", source, "-o", plain, *args])[0] == 0
    fitted = decoded_planes(whole)
    assert any(np.abs(a - b).max() > 2 for a, b in zip(fitted, decoded_planes(plain))), "the fit changes the colors"

    work = tmp_path / ".out.mkv.colorvid-work"
    stop_on_call(monkeypatch, 5, after_a_chunk(work, raise_interrupt))  # 16 frames colorized
    assert run(["colorize", source, "-o", out, *args, "--keyframes-fit"])[0] == 130
    assert chunks_recorded(work)
    stop_on_call(monkeypatch, 0, raise_interrupt)  # (never: calls count from 1)
    status, err = run(["colorize", source, "-o", out, *args, "--resume"])
    assert status == 1 and "keyframes_fit" in err, err
    status, err = run(["colorize", source, "-o", out, *args, "--keyframes-fit", "--resume"])
    assert status == 0, err
    # the resumed frames are fitted as the first ones were: within a rounding (float sums of
    # the fit may differ in their last bits from one run to the next)
    resumed = decoded_planes(out)
    assert len(resumed) == len(fitted) == 24
    assert max(int(np.abs(a - b).max()) for a, b in zip(fitted, resumed)) <= 1
    assert audio_packets(out) == audio_packets(source)


def test_evaluate_with_keyframes_fit_scores_the_shot_without_a_keyframe_higher(tmp_path, run):
    reference = tmp_path / "ref.mkv"
    make_clip(reference, width=96, height=64, frames=20, color=True, audio_tracks=0, picture=blue_two_shots)
    args = ["evaluate", reference, "--keyframes-from-truth", "first", "--device", "cpu", "--json"]
    assert run(args)[0] == 0
    plain = json.loads(run.out)
    status, err = run([*args, "--keyframes-fit"])
    assert status == 0, err
    fitted = json.loads(run.out)
    assert fitted["settings"]["keyframes_fit"] is True and fitted["clips"][0]["frames"] == 20
    gain = fitted["clips"][0]["output"]["psnr"] - plain["clips"][0]["output"]["psnr"]
    assert gain > 1.0, f"PSNR {gain:+.2f} dB with the fit"
    assert fitted["clips"][0]["output"]["luma_psnr"] > 40.0


def blue_two_shots(index: int, width: int, height: int) -> np.ndarray:
    """two_shots in one cyan-blue (KEY_AB), as a film whose shots share a palette."""
    gray = two_shots(index, width, height)
    lab = rgb2lab(gray)
    lab[..., 1], lab[..., 2] = KEY_AB
    return (lab2rgb(lab) * 255).round().clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("args", [
    ["colorize", "a.mp4", "-o", "b.mp4", "--keyframes-fit"],
    ["evaluate", "a.mp4", "--keyframes-fit"],
    ["evaluate", "a.mp4", "--keyframes-fit", "--keyframes-from-truth", "shots"],
], ids=["colorize-without-keyframes", "evaluate-without-keyframes", "evaluate-with-shots"])
def test_keyframes_fit_needs_keyframes_known_before_the_run(tmp_path, run, args):
    status, err = run([tmp_path / a if a.endswith(".mp4") else a for a in args])
    assert status == 2 and "--keyframes" in err


def test_keyframes_fit_refuses_a_published_model(tmp_path):
    from colorvid.errors import ColorizeError
    from colorvid.runtime import LoadedModel

    class PublishedFile:  # what ModelFile.load gives for a DDColor or DeOldify file: not a colorvid network
        sha256 = "0" * 64

        def load(self, *args, **kwargs):
            return torch.nn.Identity()

    loaded = LoadedModel(cast(Any, torch.nn.Identity()), torch.device("cpu"), False, "ddcolor-tiny", 512, "flow",
                         0.7, cast(Any, PublishedFile()))
    with pytest.raises(ColorizeError, match="--keyframes-fit: ddcolor-tiny is not a colorvid model"):
        loaded.fitted([torch.rand(3, 32, 32)])


def test_keyframes_every_needs_a_keyframes_model(tmp_path, run):
    status, err = run(["colorize", tmp_path / "a.mp4", "-o", tmp_path / "b.mp4", "--keyframes-every", "2"])
    assert status == 2 and "--keyframes-model" in err


def test_keyframes_take_one_film(tmp_path, run):
    keys = tmp_path / "keys"
    keys.mkdir()
    save_image(keys / "frame_000001.png")
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(b"")
    second.write_bytes(b"")
    status, err = run(["colorize", first, second, "-o", tmp_path / "out", "--keyframes", keys])
    assert status == 2 and "--keyframes" in err
    status, err = run(["colorize", tmp_path, "-o", tmp_path / "out", "--keyframes", keys])  # a folder of films
    assert status == 2 and "--keyframes" in err


def test_missing_keyframes_folder_fails_in_one_line(tmp_path, tinted_model, run, load_once):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=4, audio_tracks=0)
    out = tmp_path / "out.mp4"
    status, err = run(["colorize", source, "-o", out, "--keyframes", tmp_path / "no-keys", "--model", tinted_model,
                       *SMALL])
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no-keys" in lines[0] and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == [] and temporary_files(tmp_path) == []


def test_unreadable_keyframe_fails_the_run_cleanly(tmp_path, tinted_model, run, load_once):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=10, audio_tracks=0)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "frame_000005.png").write_text("not a picture")
    out = tmp_path / "out.mp4"
    status, err = run(["colorize", source, "-o", out, "--keyframes", keys, "--model", tinted_model, *SMALL])
    assert status == 1
    errors = [line for line in err.strip().splitlines() if "error" in line]
    assert len(errors) == 1 and "frame_000005.png" in errors[0] and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == [] and temporary_files(tmp_path) == []


# --- evaluate --keyframes-from-truth ----------------------------------------------------


def test_evaluate_with_the_first_true_frame_scores_higher(tmp_path, tinted_model, load_once):
    reference = tmp_path / "ref.mp4"
    make_clip(reference, frames=8, color=True, audio_tracks=0)
    colorize = ColorizeOptions(model=str(tinted_model), render_size=64)  # as the CLI runs': loaded once
    (plain,) = evaluate([reference], options=EvaluateOptions(colorize=colorize)).clips
    guided_eval = evaluate([reference], options=EvaluateOptions(colorize=colorize, keyframes_from_truth="first"))
    (keyed,) = guided_eval.clips
    assert guided_eval.settings["keyframes_from_truth"] == "first"
    assert plain.output.psnr is not None and keyed.output.psnr is not None
    assert keyed.output.psnr > plain.output.psnr + 3.0, (keyed.output.psnr, plain.output.psnr)


@pytest.mark.parametrize("spec", ["shots", "3"])
def test_evaluate_takes_keyframes_from_shots_or_every_n_frames(tmp_path, tinted_model, run, load_once, spec):
    reference = tmp_path / "ref.mp4"
    make_clip(reference, frames=6, color=True, audio_tracks=0)
    status, err = run(["evaluate", reference, "--keyframes-from-truth", spec, "--model", tinted_model, *SMALL,
                       "--json"])
    assert status == 0, err
    result = json.loads(run.out)
    assert result["settings"]["keyframes_from_truth"] == spec
    assert result["clips"][0]["frames"] == 6


@pytest.mark.parametrize("spec", ["0", "x", "-2"])
def test_evaluate_rejects_other_keyframe_choices(tmp_path, run, spec):
    status, err = run(["evaluate", tmp_path / "ref.mp4", "--keyframes-from-truth", spec])
    assert status == 2 and "keyframes-from-truth" in err


def numbered(index: int, width: int, height: int) -> np.ndarray:
    """A flat gray whose level is 20 + 16 * index: each frame tells which it is."""
    return np.full((height, width, 3), 20 + 16 * index, dtype=np.uint8)


@pytest.mark.parametrize(("spec", "max_keyframes", "expected"), [
    ("first", 48, [0]),
    ("3", 48, [0, 3, 6, 9]),
    ("1", 2, [0, 4, 8]),  # kept to about twice the fit's share: every 2nd, then every 4th frame
], ids=["first", "every-3rd", "thinned"])
def test_evaluate_fits_to_the_true_frames_it_shows(tmp_path, monkeypatch, spec, max_keyframes, expected):
    from colorvid.evaluate import _fit_keyframes, find_clips
    from colorvid.models import effnet_unet

    reference = tmp_path / "ref.mkv"
    make_clip(reference, frames=12, color=True, audio_tracks=0, codec="ffv1", pix_fmt="yuv444p", picture=numbered)
    monkeypatch.setattr(effnet_unet, "FIT_MAX_KEYFRAMES", max_keyframes)
    (clip,) = find_clips([reference])
    images = _fit_keyframes(clip, spec, None, None)
    levels = [round((float(image.float().mean()) - 20) / 16) for image in images]
    assert levels == expected
