"""Quality measures (colorvid.metrics), `colorvid evaluate` and `colorvid preview`."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from media import make_clip, synthetic_rgb, temporary_files
from PIL import Image

from colorvid import metrics
from colorvid.color import luma
from colorvid.errors import InputError
from colorvid.evaluate import PSNR_CAP_DB, ClipMeter, evaluate, find_clips, pair_outputs
from colorvid.pipeline import ColorizeOptions, Job, Pipeline

RENDER = 32  # network input short side: the smallest the model takes, for speed


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "ref.mp4"
    make_clip(path, frames=6, audio_tracks=0)
    return path


def image(rgb) -> torch.Tensor:
    """(H, W, 3) values in 0..1 -> (3, H, W) float tensor."""
    return torch.tensor(np.asarray(rgb, dtype=np.float64), dtype=torch.float32).permute(2, 0, 1)


# --- metrics ------------------------------------------------------------------------


def test_js_divergence_by_hand():
    p = torch.tensor([1.0, 0.0])
    q = torch.tensor([0.5, 0.5])
    # M = (0.75, 0.25); KL(p||M) = ln(4/3); KL(q||M) = 0.5 ln(2/3) + 0.5 ln 2
    expected = (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2
    assert float(metrics.js_divergence(p, q)) == pytest.approx(expected, rel=1e-12)
    assert float(metrics.js_divergence(p, q)) == pytest.approx(float(metrics.js_divergence(q, p)))
    assert float(metrics.js_divergence(p, p)) == 0.0
    disjoint = metrics.js_divergence(torch.tensor([0.5, 0.5, 0, 0]), torch.tensor([0, 0, 0.25, 0.75]))
    assert float(disjoint) == pytest.approx(math.log(2), rel=1e-12)


def test_channel_histograms_count_8bit_values():
    rgb = image([[[0, 1, 0.5], [0, 0, 0.5]]])  # one row of two pixels
    hist = metrics.channel_histograms(rgb)
    assert hist.shape == (3, 256)
    assert hist.sum(1).tolist() == [1.0, 1.0, 1.0]
    assert hist[0, 0] == 1.0  # red: both pixels 0
    assert hist[1, 0] == 0.5 and hist[1, 255] == 0.5
    assert hist[2, 128] == 1.0  # 0.5 * 255 = 127.5 rounds to 128
    as_bytes = (rgb * 255).round().to(torch.uint8)  # 8-bit pictures are counted as they are
    assert torch.equal(metrics.channel_histograms(as_bytes), hist)


def test_psnr_by_hand():
    a = torch.zeros(3, 4, 4)
    b = a.clone()
    b[0, 0, 0] = 0.5  # mse = 0.25 / 48
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(48 / 0.25))
    assert metrics.psnr((a * 255).to(torch.uint8), (b * 255).round().to(torch.uint8), peak=255) == pytest.approx(
        10 * math.log10(255**2 * 48 / 128**2))
    assert metrics.psnr(a, a) == math.inf


def test_cdc_of_identical_frames_is_zero():
    frame = image(np.random.default_rng(0).random((8, 8, 3)))
    assert metrics.cdc([metrics.channel_histograms(frame)] * 6) == 0.0


def test_cdc_by_hand():
    black, white = image(np.zeros((4, 4, 3))), image(np.ones((4, 4, 3)))
    hists = [metrics.channel_histograms(f) for f in (black, white) * 3]  # six frames, alternating
    # d=1: every pair disjoint (ln 2); d=2 and d=4: identical (0); equal weights
    assert metrics.cdc(hists) == pytest.approx(math.log(2) / 3, rel=1e-12)
    # two frames: only d=1 has a pair; one frame: nothing to compare
    assert metrics.cdc(hists[:2]) == pytest.approx(math.log(2), rel=1e-12)
    assert metrics.cdc(hists[:1]) is None


def test_colorfulness_by_hand():
    # left half pure red, right half black, in 0..255: rg = 255 | 0, yb = 127.5 | 0
    rgb = np.zeros((2, 4, 3))
    rgb[:, :2, 0] = 1.0
    std = math.hypot(127.5, 63.75)  # population std of rg and yb
    mean = math.hypot(127.5, 63.75)  # their means happen to be the same numbers
    assert metrics.colorfulness(image(rgb)) == pytest.approx(std + 0.3 * mean, rel=1e-9)
    gray = np.repeat(np.linspace(0, 1, 12).reshape(3, 4, 1), 3, axis=2)
    assert metrics.colorfulness(image(gray)) == 0.0
    # no absolute values: a uniform blue picture (yb = -255) scores 0.3 * 255
    blue = np.zeros((2, 2, 3))
    blue[..., 2] = 1.0
    assert metrics.colorfulness(image(blue)) == pytest.approx(0.3 * 255)


def test_luma_and_gray():
    rgb = image([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    assert luma(rgb)[0, 0].tolist() == pytest.approx([0.299, 0.587, 0.114])
    assert luma(rgb, "bt709")[0, 0].tolist() == pytest.approx([0.2126, 0.7152, 0.0722])
    gray = metrics.gray_rgb(rgb)
    assert gray.shape == rgb.shape
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_ssim_of_identical_images_is_one():
    rgb = image(np.random.default_rng(1).random((16, 16, 3)))
    assert metrics.ssim(rgb, rgb) == pytest.approx(1.0)
    assert metrics.ssim(rgb, 1 - rgb) < 0.5


def test_clip_meter_on_a_perfect_output():
    meter = ClipMeter("bt601", ssim_every=2)
    for i in range(5):
        truth = torch.from_numpy(synthetic_rgb(i, 32, 24)).permute(2, 0, 1)  # uint8, as decoded
        meter.add(truth, truth)
    scores = meter.scores()
    assert meter.frames == 5 and meter.ssim_frames == 3
    assert scores["output"].psnr == PSNR_CAP_DB
    assert scores["output"].ssim == pytest.approx(1.0)
    assert scores["output"].colorfulness_ratio == pytest.approx(1.0)
    assert scores["output"].cdc == pytest.approx(scores["truth"].cdc)
    assert scores["output"].luma_psnr is not None and scores["output"].luma_psnr > 60
    assert scores["gray"].colorfulness == pytest.approx(0.0, abs=1e-9)
    assert scores["gray"].psnr is not None and scores["output"].psnr is not None
    assert scores["gray"].psnr < scores["output"].psnr


# --- finding clips and outputs ------------------------------------------------------------


def write_frames(folder, count, width=64, height=48):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(synthetic_rgb(i, width, height)).save(folder / f"frame_{i + 1:03d}.png")


def test_find_clips_and_pair_outputs_by_name(tmp_path):
    refs = tmp_path / "refs"
    write_frames(refs / "shot", 2)
    (refs / "b.mp4").write_bytes(b"")
    (refs / "sub").mkdir()
    (refs / "sub" / "a.mkv").write_bytes(b"")
    (refs / "notes.txt").write_text("not a clip")
    clips = find_clips([refs])
    assert [(c.key, c.images is not None) for c in clips] == [("b", False), ("shot", True), ("sub/a", False)]

    outs = tmp_path / "outs"
    write_frames(outs / "shot", 2)
    (outs / "sub").mkdir(parents=True)
    (outs / "b.mkv").write_bytes(b"")
    (outs / "sub" / "a.mp4").write_bytes(b"")
    paired = pair_outputs(clips, outs)
    assert [p.path for p in paired] == [outs / "b.mkv", outs / "shot", outs / "sub" / "a.mp4"]

    (outs / "b.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="several outputs"):
        pair_outputs(clips, outs)
    (outs / "b.mp4").unlink()
    (outs / "sub" / "a.mp4").unlink()
    with pytest.raises(InputError, match=r"no output named sub/a\.\* \(or frame folder sub/a/\)"):
        pair_outputs(clips, outs)


# --- evaluate --------------------------------------------------------------------------


def test_evaluate_command_json(run, clip, tiny_model):
    status, err = run(["-q", "evaluate", clip, "--model", tiny_model, "--render-size", RENDER, "--batch-size", 4,
                       "--json"])
    assert status == 0, err
    report = json.loads(run.out)
    assert set(report) == {"settings", "clips", "mean"}
    (result,) = report["clips"]
    assert result["frames"] == 6 and result["ssim_frames"] == 6
    assert (result["width"], result["height"], result["matrix"]) == (64, 48, "bt601")
    keys = {"psnr", "ssim", "colorfulness", "colorfulness_ratio", "cdc", "luma_psnr"}
    for source in ("output", "gray", "truth"):
        assert set(result[source]) == keys
        assert set(report["mean"][source]) == keys
    assert result["gray"]["colorfulness"] == pytest.approx(0.0, abs=1e-6)
    assert result["truth"]["colorfulness"] > 30  # the synthetic clip is very colourful
    assert result["output"]["luma_psnr"] >= 40  # the colorizer keeps luma
    assert 0 <= result["output"]["ssim"] <= 1 and result["output"]["psnr"] > 5
    assert report["mean"]["output"] == result["output"]
    assert report["settings"]["render_size"] == RENDER


def test_cdc_shows_a_colorization_that_flickers(tmp_path):
    refs, steady, flickering = tmp_path / "refs", tmp_path / "steady", tmp_path / "flickering"
    write_frames(refs / "shot", 8)
    write_frames(steady / "shot", 8)
    write_frames(flickering / "shot", 8)
    for path in sorted((flickering / "shot").iterdir())[1::2]:  # every other frame: red and blue swapped
        rgb = np.asarray(Image.open(path))
        Image.fromarray(np.ascontiguousarray(rgb[..., ::-1])).save(path)
    (calm,) = evaluate([refs], steady).clips
    (flicker,) = evaluate([refs], flickering).clips
    assert calm.output.cdc == pytest.approx(calm.truth.cdc)  # the same frames as the reference
    assert flicker.output.cdc is not None and flicker.truth.cdc is not None
    assert flicker.output.cdc > 10 * flicker.truth.cdc


def test_evaluate_with_flow_smoothing(run, clip, tiny_model):
    status, err = run(["-q", "evaluate", clip, "--model", tiny_model, "--render-size", RENDER, "--batch-size", 4,
                       "--temporal", "flow", "--json"])
    assert status == 0, err
    report = json.loads(run.out)
    assert (report["settings"]["temporal"], report["settings"]["smooth"]) == ("flow", 0.7)
    assert report["clips"][0]["frames"] == 6 and report["clips"][0]["output"]["luma_psnr"] >= 40


def test_evaluate_table_and_frame_folders(run, tmp_path, clip, tiny_model):
    refs = tmp_path / "refs"
    write_frames(refs / "shot", 3)
    refs.joinpath("clip.mp4").symlink_to(clip)
    status, err = run(["-q", "evaluate", refs, "--model", tiny_model, "--render-size", RENDER, "--max-frames", 4])
    assert status == 0, err
    lines = run.out.splitlines()
    assert lines[0].split()[:4] == ["CLIP", "FRAMES", "SOURCE", "PSNR"]
    assert lines[1].split()[:3] == [str(refs / "clip.mp4"), "4", "colorized"]
    assert lines[4].split()[:3] == [str(refs / "shot"), "3", "colorized"]
    assert lines[7].split()[:5] == ["mean", "of", "2", "7", "colorized"]
    assert lines[8].split()[0] == "gray" and lines[9].split()[0] == "reference"


def test_evaluate_existing_outputs(tmp_path, clip, tiny_model, caplog):
    outs = tmp_path / "outs"
    outs.mkdir()
    options = ColorizeOptions(model=str(tiny_model), render_size=RENDER, codec="ffv1")
    result = Pipeline(options).run_one(Job(clip, outs / "ref.mkv"))
    assert result.status == "ok", result.error

    report = evaluate([clip], outs)
    (scores,) = report.clips
    assert scores.colorized == str(outs / "ref.mkv") and scores.frames == 6
    assert scores.output.luma_psnr is not None and scores.output.luma_psnr >= 40
    assert scores.gray.colorfulness == pytest.approx(0.0, abs=1e-6)
    # scoring the reference against itself: perfect
    self_report = evaluate([clip], clip)
    assert self_report.clips[0].output.psnr == PSNR_CAP_DB
    assert self_report.clips[0].output.colorfulness_ratio == pytest.approx(1.0)

    shorter = tmp_path / "short.mp4"
    make_clip(shorter, frames=4, audio_tracks=0)
    caplog.set_level(logging.WARNING)
    assert evaluate([clip], shorter).clips[0].frames == 4
    assert "has more frames than" in caplog.text


def test_evaluate_errors_are_one_line(run, tmp_path, clip):
    (tmp_path / "empty").mkdir()
    status, err = run(["evaluate", clip, "--colorized", tmp_path / "empty"])
    assert status == 1
    expected = f"{tmp_path / 'empty'}: no output named ref.* (or frame folder ref/) for {clip}"
    assert err.strip() == f"colorvid: error: {expected}"
    small = tmp_path / "small.mp4"
    make_clip(small, width=32, height=24, frames=2, audio_tracks=0)
    status, err = run(["evaluate", clip, "--colorized", small])
    assert status == 1 and "is 32x24, its reference" in err and len(err.strip().splitlines()) == 1


# --- preview ---------------------------------------------------------------------------------


def best_match(tile, width, height, candidates):
    """The synthetic frame index whose picture is closest to ``tile``."""
    errors = [np.abs(tile.astype(float) - synthetic_rgb(i, width, height)).mean() for i in candidates]
    return candidates[int(np.argmin(errors))]


def test_preview_sheet_has_the_rows_and_frames(run, tmp_path, tiny_model):
    source, sheet = tmp_path / "in.mp4", tmp_path / "sheet.png"
    make_clip(source, frames=24, audio_tracks=1)  # 1 s at 24 fps
    status, err = run(["preview", source, "-o", sheet, "--truth", "--model", tiny_model, "--render-size", RENDER])
    assert status == 0, err
    pixels = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    gap = 4
    assert pixels.shape == (3 * 48 + 4 * gap, 6 * 64 + 7 * gap, 3)
    assert temporary_files(tmp_path) == []

    def tile(row, column):
        top, left = gap + row * (48 + gap), gap + column * (64 + gap)
        return pixels[top : top + 48, left : left + 64]

    for column, expected in enumerate((2, 6, 10, 14, 18, 22)):  # the middles of six equal parts
        gray, colorized, truth = tile(0, column), tile(1, column), tile(2, column)
        assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
        assert np.abs(colorized[..., 0] - colorized[..., 1]).mean() > 1  # not gray
        assert best_match(truth, 64, 48, list(range(24))) == expected
        # the gray row is the truth's luma
        luma = truth @ np.array([0.299, 0.587, 0.114])
        assert np.abs(gray[..., 0] - luma).mean() < 3

    status, err = run(["preview", source, "-o", sheet, "--model", tiny_model])
    assert status == 1 and err.strip() == f"colorvid: error: {sheet}: already exists (use --overwrite)"


def test_preview_scales_down_and_falls_back_to_reading_from_the_start(tmp_path, tiny_model, monkeypatch):
    from colorvid import preview
    from colorvid.errors import SeekError

    source = tmp_path / "in.mkv"
    make_clip(source, frames=12, audio_tracks=0)
    options = preview.PreviewOptions(frames=4, max_width=100, overwrite=True,
                                     colorize=ColorizeOptions(model=str(tiny_model), render_size=RENDER))
    sheet = preview.make_preview(source, tmp_path / "a.png", options)
    tile_w, tile_h = preview.tile_size(64, 48, 4, 100)
    assert (tile_w, tile_h) == (20, 15)  # (100 - 5 gaps) / 4 columns, keeping 4:3
    assert (sheet.width, sheet.height, sheet.rows) == (100, 2 * 15 + 3 * 4, 2)
    assert Image.open(tmp_path / "a.png").size == (sheet.width, sheet.height)
    sought = sheet.times

    def cannot_seek(path, targets):
        raise SeekError(f"{path}: cannot seek (test)")

    monkeypatch.setattr(preview, "_seek_frames", cannot_seek)
    assert preview.make_preview(source, tmp_path / "a.png", options).times == pytest.approx(sought)
