"""`colorvid colorize` end to end, as a user runs it, on clips the tests make."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import av.codec
import numpy as np
import pytest
from media import (
    audio_packets,
    decoded_planes,
    make_audio_only,
    make_clip,
    mean_chroma_offset,
    read_video_pts,
    stream_summary,
    subtitle_texts,
    synthetic_rgb,
    temporary_files,
    truncate,
    y_psnr,
)
from PIL import Image


def test_gray_film_becomes_colored_keeping_luma_timing_and_audio(tmp_path, tinted_model, run):
    source = tmp_path / "film.mp4"
    make_clip(source, width=96, height=64, frames=16, color=False, audio_tracks=1)
    out = tmp_path / "film-color.mp4"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model])
    assert status == 0, err
    assert mean_chroma_offset(source) < 1.0
    assert mean_chroma_offset(out) > 10.0  # visibly colored
    assert y_psnr(source, out) >= 45.0
    assert read_video_pts(out) == read_video_pts(source)
    assert audio_packets(out) == audio_packets(source)
    assert temporary_files(tmp_path) == []


def test_colored_input_is_colorized_from_its_luma(tmp_path, tinted_model, run):
    source = tmp_path / "color.mkv"
    make_clip(source, frames=6, color=True, audio_tracks=0)
    out = tmp_path / "out.mkv"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model])[0] == 0
    with av.open(str(out)) as container:
        yuv = next(container.decode(video=0)).reformat(format="yuv444p").to_ndarray().astype(np.float64)
    # the tint is the same everywhere in the frame: the source's own colors are gone
    assert yuv[1].std() < 6 and yuv[2].std() < 6
    assert y_psnr(source, out) >= 45.0


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_variable_frame_rate_keeps_every_timestamp(tmp_path, tinted_model, run, ext):
    source = tmp_path / f"vfr{ext}"
    pts = make_clip(source, frames=12, vfr=True)
    out = tmp_path / f"out{ext}"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model, "--batch-size", "5"])[0] == 0
    assert read_video_pts(out) == pts


def test_odd_size_rotation_tracks_and_subtitles_survive(tmp_path, tinted_model, run):
    source = tmp_path / "phone.mp4"
    make_clip(source, width=65, height=49, frames=8, rotation=90, audio_tracks=2, subtitles=True, pix_fmt="yuv444p")
    out = tmp_path / "phone-color.mp4"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model, "--smooth", "0.5"])[0] == 0
    before, after = stream_summary(source), stream_summary(out)
    video = [s for s in after["streams"] if s["type"] == "video"][0]
    assert (video["width"], video["height"], video["rotation"]) == (65, 49, 90)
    assert [s["language"] for s in after["streams"] if s["type"] == "audio"] == ["eng", "fra"]
    assert audio_packets(out) == audio_packets(source)
    assert subtitle_texts(out) == subtitle_texts(source)
    assert after["metadata"].get("title") == before["metadata"].get("title")


def test_webm_output_from_mp4_transcodes_audio(tmp_path, tinted_model, run):
    source = tmp_path / "in.mp4"
    pts = make_clip(source, frames=6)
    out = tmp_path / "out.webm"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model])[0] == 0
    summary = stream_summary(out)
    assert [s["codec"] for s in summary["streams"]] == ["vp9", "opus"]
    assert len(read_video_pts(out)) == len(pts)


def test_lossless_ffv1_keeps_luma_exactly(tmp_path, tinted_model, run):
    source = tmp_path / "in.mkv"
    make_clip(source, frames=4, color=False, audio_tracks=0)
    out = tmp_path / "archive.mkv"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model, "--codec", "ffv1"])[0] == 0
    assert y_psnr(source, out) == math.inf


def test_still_image(tmp_path, tinted_model, run):
    gray = (np.linspace(0, 255, 64 * 48).reshape(48, 64)).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "photo.jpg")
    status, err = run(["colorize", tmp_path / "photo.jpg", "-o", tmp_path / "photo.png", "--model", tinted_model])
    assert status == 0, err
    out = np.asarray(Image.open(tmp_path / "photo.png").convert("RGB")).astype(int)
    assert out.shape == (48, 64, 3)
    assert (out[..., 0] - out[..., 2]).mean() > 10  # warm tint


def gray_photo(path) -> None:
    Image.fromarray(synthetic_rgb(0, 64, 48, color=False)).save(path)


@pytest.mark.parametrize(
    "leftover",
    [".photo.colorvid-tmp-0123abcd.png", ".photo.colorvid-tmp.png"],
    ids=["current-naming", "old-naming"],
)
def test_folder_run_skips_what_a_killed_run_left(tmp_path, tinted_model, run, leftover):
    photos = tmp_path / "photos"
    photos.mkdir()
    gray_photo(photos / "photo.png")
    # a run killed while saving leaves the first half of a picture under a temporary name
    picture = (photos / "photo.png").read_bytes()
    (photos / leftover).write_bytes(picture[: len(picture) // 2])
    out, report = tmp_path / "colored", tmp_path / "report.jsonl"
    status, err = run(["colorize", photos, "-o", out, "--model", tinted_model, "--report", report])
    assert status == 0, err
    assert [Path(json.loads(line)["input"]).name for line in report.read_text().splitlines()] == ["photo.png"]
    assert os.listdir(out) == ["photo.png"]


def test_image_run_interrupted_while_saving_leaves_nothing(tmp_path, tinted_model, run, monkeypatch):
    gray_photo(tmp_path / "photo.jpg")
    saved = []
    real_save = Image.Image.save

    def save_then_interrupt(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        saved.append(Path(fp))
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    status, err = run(["colorize", tmp_path / "photo.jpg", "-o", tmp_path / "photo.png", "--model", tinted_model])
    assert status == 130 and "interrupted" in err
    assert [p.parent for p in saved] == [tmp_path]  # the picture was written beside the output, then stopped
    assert os.listdir(tmp_path) == ["photo.jpg"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not a video"), ""),
        (lambda p: make_audio_only(p), "video"),
    ],
    ids=["missing", "not-video", "audio-only"],
)
def test_bad_input_fails_in_one_line_naming_the_file(tmp_path, tinted_model, run, make, message):
    source = tmp_path / "bad.mp4"
    make(source)
    out = tmp_path / "out.mp4"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model])
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.mp4" in lines[0] and message in lines[0].lower()
    assert "Traceback" not in err
    assert not out.exists() and temporary_files(tmp_path) == []


def test_truncated_input_keeps_what_decodes(tmp_path, tinted_model, run):
    source = tmp_path / "cut.mkv"
    make_clip(source, frames=24, audio_tracks=0, codec="mjpeg", pix_fmt="yuv420p")
    truncate(source, keep=0.5)
    out = tmp_path / "out.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model])
    assert status == 0, err
    assert 0 < len(read_video_pts(out)) < 24


@pytest.mark.parametrize(
    "target,extra,message",
    [
        ("out.xyz", [], "extension"),
        ("film.mp4", [], "input"),  # the output is the input
        ("exists.mp4", [], "exists"),
        ("missing-folder/sub/out.mp4", [], ""),
    ],
)
def test_bad_output_fails_cleanly(tmp_path, tinted_model, run, target, extra, message):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=4, audio_tracks=0)
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    blocker = tmp_path / "missing-folder"
    blocker.write_text("a file where a folder should be")
    status, err = run(["colorize", str(source), "-o", str(tmp_path / target), "--model", tinted_model, *extra])
    assert status == 1
    assert message in err.lower() and "Traceback" not in err
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"
    assert temporary_files(tmp_path) == []


def test_usage_errors_exit_2(tmp_path, run):
    status, _ = run(["colorize", "x.mp4", "-o", str(tmp_path / "y.mp4"), "--smooth", "3"])
    assert status == 2


@pytest.mark.parametrize("extra", [["--temporal", "wobble"], ["--temporal", "none", "--smooth", "0.5"],
                                   ["--temporal", "flow", "--smooth", "0"]])
def test_contradicting_temporal_options_exit_2(tmp_path, run, extra):
    status, err = run(["colorize", "x.mp4", "-o", str(tmp_path / "y.mp4"), *extra])
    assert status == 2 and "--temporal" in err


def test_flow_smoothing_keeps_luma_and_timestamps(tmp_path, tinted_model, run, monkeypatch):
    from colorvid.smoothing import MotionSmoother

    calls = []
    original = MotionSmoother.__call__

    def spy(self, ab, lightness, features=None):
        calls.append((self.strength, len(ab)))
        return original(self, ab, lightness, features)

    monkeypatch.setattr(MotionSmoother, "__call__", spy)
    source = tmp_path / "film.mkv"
    pts = make_clip(source, width=96, height=64, frames=12, vfr=True, color=False, audio_tracks=0)
    out = tmp_path / "film-color.mkv"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, "--temporal", "flow", "--batch-size", "5"]
    status, err = run(args)
    assert status == 0, err
    assert calls == [(0.7, 5), (0.7, 5), (0.7, 2)]  # the default strength, every batch
    assert mean_chroma_offset(out) > 10.0
    assert y_psnr(source, out) >= 45.0
    assert read_video_pts(out) == pts


def test_interrupt_leaves_no_partial_output(tmp_path, tinted_model, run, monkeypatch):
    from colorvid.colorizer import FrameColorizer

    source = tmp_path / "film.mp4"
    make_clip(source, frames=20, audio_tracks=1)
    calls = {"n": 0}
    original = FrameColorizer.colorize_frames

    def interrupt_on_second_batch(self, frames, work_format, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, frames, work_format, *args, **kwargs)

    monkeypatch.setattr(FrameColorizer, "colorize_frames", interrupt_on_second_batch)
    out = tmp_path / "out.mp4"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model, "--batch-size", "4"])
    assert status == 130
    assert not out.exists() and temporary_files(tmp_path) == []


def test_folder_batch_goes_on_after_a_failure_and_reports_it(tmp_path, tinted_model, run):
    films = tmp_path / "films"
    films.mkdir()
    make_clip(films / "a.mp4", frames=4, audio_tracks=0)
    make_clip(films / "b.mkv", frames=4, audio_tracks=0)
    (films / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "colored"
    status, err = run(["colorize", str(films), "-o", str(out), "--model", tinted_model])
    assert status == 1
    assert "broken.mp4" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv"]
    # a re-run skips what is done and still reports the broken file
    status, err = run(["colorize", str(films), "-o", str(out), "--model", tinted_model, "--skip-existing"])
    assert status == 1 and "broken.mp4" in err


def test_console_script_runs_as_a_module(tmp_path, tinted_model):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=3, audio_tracks=0)
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "colorvid", "-q", "colorize", str(source), "-o", str(out), "--model", tinted_model],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_video_pts(out)) == 3


@pytest.mark.parametrize(
    "codec,ext,pix_fmt",
    [
        ("libx265", ".mkv", "yuv420p"),
        ("libvpx-vp9", ".webm", "yuv420p"),
        ("libsvtav1", ".mkv", "yuv420p"),
        ("mpeg2video", ".ts", "yuv420p"),
        ("mpeg4", ".avi", "yuv420p"),
        ("mjpeg", ".avi", "yuv420p"),  # make_clip uses the full-range yuvj420p for MJPEG
        ("prores_ks", ".mov", "yuv422p10le"),
        ("ffv1", ".mkv", "yuv420p"),
    ],
)
def test_common_source_codecs_are_colorized(tmp_path, tinted_model, run, codec, ext, pix_fmt):
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        pytest.skip(f"this FFmpeg build cannot encode {codec} to make the test clip")
    source = tmp_path / f"in{ext}"
    pts = make_clip(source, width=64, height=48, frames=5, codec=codec, pix_fmt=pix_fmt, audio_tracks=0, color=False)
    out = tmp_path / "out.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model])
    assert status == 0, err
    assert len(read_video_pts(out)) == len(pts)
    assert mean_chroma_offset(out) > 10.0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["--no-half", "--half"], ids=["fp32", "fp16"])
def test_cuda_colors_as_the_cpu_does_keeping_luma_and_timing(tmp_path, tinted_model, run, precision):
    source = tmp_path / "film.mkv"
    pts = make_clip(source, width=96, height=64, frames=12, vfr=True, color=False, audio_tracks=1)
    common = ["colorize", source, "--model", tinted_model, "--codec", "ffv1", "--batch-size", "5"]
    on_cuda, on_cpu = tmp_path / "cuda.mkv", tmp_path / "cpu.mkv"
    status, err = run([*common, "-o", on_cuda, "--device", "cuda", precision])
    assert status == 0, err
    assert mean_chroma_offset(on_cuda) > 10.0  # visibly colored
    assert y_psnr(source, on_cuda) == math.inf  # a lossless output: the input's luma, bit for bit
    assert read_video_pts(on_cuda) == pts
    assert audio_packets(on_cuda) == audio_packets(source)

    status, err = run([*common, "-o", on_cpu, "--device", "cpu"])
    assert status == 0, err
    chroma_difference = [np.abs(a[1:] - b[1:]).mean() for a, b in zip(decoded_planes(on_cuda), decoded_planes(on_cpu))]
    assert len(chroma_difference) == len(pts) and max(chroma_difference) < 1.0  # the CPU's colors, within rounding


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["--no-half", "--half"], ids=["fp32", "fp16"])
def test_cuda_runs_the_default_models_previous_frame_head(tmp_path, run, precision):
    """The shipped model on CUDA, in each precision, with its default temporal mode ("model"):
    the previous-frame head runs in the network's dtype, and the colors are the CPU's."""
    source = tmp_path / "film.mkv"
    pts = make_clip(source, width=128, height=96, frames=12, color=False, audio_tracks=1)
    common = ["colorize", source, "--codec", "ffv1", "--batch-size", "4", "--temporal", "model"]
    on_cuda, on_cpu = tmp_path / "cuda.mkv", tmp_path / "cpu.mkv"
    status, err = run([*common, "-o", on_cuda, "--device", "cuda", precision])
    assert status == 0, err
    assert read_video_pts(on_cuda) == pts and y_psnr(source, on_cuda) == math.inf
    status, err = run([*common, "-o", on_cpu, "--device", "cpu"])
    assert status == 0, err
    chroma_difference = [np.abs(a[1:] - b[1:]).mean() for a, b in zip(decoded_planes(on_cuda), decoded_planes(on_cpu))]
    print(f"{precision}: mean |chroma difference| per frame, CUDA vs CPU: max {max(chroma_difference):.3f}")
    assert max(chroma_difference) < 1.5  # 8-bit chroma codes: rounding and half precision, not another color
