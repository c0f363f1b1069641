"""frames extract / stitch: the library functions and the `colorvid frames` commands."""

from __future__ import annotations

import json
import logging
import os

import av
import numpy as np
import pytest
from media import (
    SUBTITLE_TEXTS,
    assert_one_line_error,
    audio_packets,
    image_files,
    interrupt_image_writes,
    make_clip,
    read_video_pts,
    stream_summary,
    subtitle_texts,
)
from PIL import Image

from colorvid.errors import InputError, OutputError
from colorvid.frames import MANIFEST_NAME, extract_frames, read_manifest, stitch_frames
from colorvid.io import EncodeOptions


def test_round_trip_keeps_frames_timing_audio_and_subtitles(tmp_path):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    times = make_clip(source, vfr=True, frames=10, audio_tracks=2, subtitles=True, rotation=90)
    assert extract_frames(source, frames) == 10
    assert image_files(frames) == [f"frame_{i:06d}.png" for i in range(1, 11)]

    manifest = json.loads((frames / MANIFEST_NAME).read_text())
    assert manifest["source"] == str(source)
    assert manifest["frame_count"] == 10
    video = manifest["video"]
    assert (video["width"], video["height"], video["rotation"], video["time_base"]) == (64, 48, 90, "1/90000")
    assert [e["pts"] * 90000 ** -1 for e in manifest["frames"]] == pytest.approx([float(t) for t in times])

    assert stitch_frames(frames, target) == 10
    assert read_video_pts(target) == times
    assert audio_packets(target) == audio_packets(source)
    assert subtitle_texts(target) == [list(SUBTITLE_TEXTS)]
    assert stream_summary(target)["streams"][0]["rotation"] == 90


def test_extracted_images_are_the_frames_in_rgb(tmp_path):
    source, frames = tmp_path / "in.mp4", tmp_path / "frames"
    make_clip(source, frames=2, audio_tracks=0)
    extract_frames(source, frames)
    with av.open(str(source)) as container:
        first = next(container.decode(video=0))
        expected = first.reformat(format="rgb24", src_colorspace="itu601", src_color_range="MPEG").to_ndarray()
    image = np.asarray(Image.open(frames / "frame_000001.png"))
    assert image.shape == (48, 64, 3)
    assert np.array_equal(image, expected)


def test_stitch_uses_the_edited_images(tmp_path):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    make_clip(source, frames=3, audio_tracks=0)
    extract_frames(source, frames)
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    for name in image_files(frames):  # another tool "colorizes" every frame red
        Image.fromarray(red).save(frames / name)
    stitch_frames(frames, target)
    with av.open(str(target)) as container:
        for frame in container.decode(video=0):
            rgb = frame.reformat(format="rgb24", src_colorspace="itu601", src_color_range="MPEG").to_ndarray()
            assert np.abs(rgb.reshape(-1, 3).mean(axis=0) - (220, 0, 0)).max() < 6


@pytest.mark.parametrize("image_format", ["jpg", "tiff"])
def test_other_image_formats_round_trip(tmp_path, image_format):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mkv"
    make_clip(source, frames=4, audio_tracks=1)
    extract_frames(source, frames, image_format)
    assert image_files(frames)[0] == f"frame_000001.{image_format}"
    stitch_frames(frames, target)
    assert len(read_video_pts(target)) == 4
    assert len(audio_packets(target)) == 1


def test_deep_video_extracts_16_bit_png(tmp_path):
    source, frames = tmp_path / "in10.mp4", tmp_path / "frames"
    make_clip(source, frames=2, audio_tracks=0, pix_fmt="yuv420p10le")
    extract_frames(source, frames)
    with av.open(str(frames / "frame_000001.png")) as container:
        assert next(container.decode(video=0)).format.name == "rgb48be"


def test_missing_frame_fails_naming_it_and_writes_nothing(tmp_path):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    make_clip(source, frames=4)
    extract_frames(source, frames)
    os.remove(frames / "frame_000003.png")
    with pytest.raises(InputError, match="frame_000003.png: frame missing"):
        stitch_frames(frames, target)
    assert sorted(os.listdir(tmp_path)) == ["frames", "in.mp4"]


def test_frame_of_another_size_fails_naming_it_and_writes_nothing(tmp_path):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    make_clip(source, frames=4)
    extract_frames(source, frames)
    Image.new("RGB", (32, 24)).save(frames / "frame_000004.png")
    with pytest.raises(InputError, match="frame_000004.png: image is 32x24, the video is 64x48"):
        stitch_frames(frames, target)
    assert sorted(os.listdir(tmp_path)) == ["frames", "in.mp4"]


def test_audio_from_another_file(tmp_path):
    source, other = tmp_path / "in.mp4", tmp_path / "music.mkv"
    frames, target = tmp_path / "frames", tmp_path / "out.mp4"
    make_clip(source, frames=6, audio_tracks=0)
    make_clip(other, frames=6, audio_tracks=2)
    extract_frames(source, frames)
    stitch_frames(frames, target, audio_from=other)
    assert [s["language"] for s in stream_summary(target)["streams"] if s["type"] == "audio"] == ["eng", "fra"]
    assert [[p[1:] for p in t] for t in audio_packets(target)] == [[p[1:] for p in t] for t in audio_packets(other)]


def test_moved_source_gives_a_silent_video_with_a_warning(tmp_path, caplog):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    make_clip(source, frames=3, audio_tracks=1)
    extract_frames(source, frames)
    os.remove(source)
    with caplog.at_level(logging.WARNING):
        stitch_frames(frames, target)
    assert [s["type"] for s in stream_summary(target)["streams"]] == ["video"]
    assert any("no audio" in r.getMessage() for r in caplog.records)


def test_extract_refuses_a_folder_with_frames_unless_overwrite(tmp_path):
    long_clip, short_clip, frames = tmp_path / "long.mp4", tmp_path / "short.mp4", tmp_path / "frames"
    make_clip(long_clip, frames=6, audio_tracks=0)
    make_clip(short_clip, frames=3, audio_tracks=0)
    extract_frames(long_clip, frames)
    with pytest.raises(OutputError, match="already holds extracted frames"):
        extract_frames(short_clip, frames)
    extract_frames(short_clip, frames, overwrite=True)
    assert image_files(frames) == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    assert read_manifest(frames)["frame_count"] == 3


def test_interrupted_extraction_leaves_no_frames(tmp_path, monkeypatch):
    source, frames = tmp_path / "in.mp4", tmp_path / "frames"
    make_clip(source, frames=6, audio_tracks=0)
    interrupt_image_writes(monkeypatch, after="frame_000004.png")
    with pytest.raises(KeyboardInterrupt):
        extract_frames(source, frames)
    assert os.listdir(frames) == []


def test_stitch_without_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=MANIFEST_NAME):
        stitch_frames(tmp_path, tmp_path / "out.mp4")


def test_stitch_honours_encode_options(tmp_path):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mkv"
    make_clip(source, frames=3, audio_tracks=0)
    extract_frames(source, frames)
    stitch_frames(frames, target, EncodeOptions(codec="ffv1", pix_fmt="yuv444p"))
    video = stream_summary(target)["streams"][0]
    assert (video["codec"], video["pix_fmt"]) == ("ffv1", "yuv444p")


# --- command line ---------------------------------------------------------------


def test_cli_extract_then_stitch(tmp_path, run):
    source, frames, target = tmp_path / "in.mp4", tmp_path / "frames", tmp_path / "out.mp4"
    times = make_clip(source, vfr=True, frames=8)
    status, err = run(["frames", "extract", source, frames, "--format", "png"])
    assert status == 0, err
    status, err = run(["frames", "stitch", frames, "-o", target, "--preset", "ultrafast"])
    assert status == 0, err
    assert read_video_pts(target) == times
    assert audio_packets(target) == audio_packets(source)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["frames", "extract", "{tmp}/missing.mp4", "{tmp}/frames"], "missing.mp4"),
        (["frames", "stitch", "{tmp}/frames", "-o", "{tmp}/out.xyz"], "out.xyz"),
        (["frames", "stitch", "{tmp}", "-o", "{tmp}/out.mp4"], MANIFEST_NAME),
        (["frames", "stitch", "{tmp}/frames", "-o", "{tmp}/out.mp4", "--preset", "warp"], "out.mp4"),
    ],
)
def test_cli_errors_are_one_line_naming_the_file(tmp_path, run, args, named):
    source = tmp_path / "in.mp4"
    make_clip(source, frames=2, audio_tracks=0)
    extract_frames(source, tmp_path / "frames")
    status, err = run([a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(status, err, named)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["frames", "stitch", "somewhere"],  # no -o
        ["frames", "extract", "in.mp4", "out", "--format", "gif"],
        ["frames", "extract", "in.mp4"],
    ],
)
def test_cli_usage_errors_exit_2(run, args):
    status, _ = run(args)
    assert status == 2
