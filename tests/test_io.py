"""colorvid.io: what a user would notice in the output file, and clear errors."""

from __future__ import annotations

import errno
import json
import logging
import os
from fractions import Fraction

import av
import av.codec.context
import numpy as np
import pytest
from media import (
    LANGUAGES,
    SUBTITLE_TEXTS,
    audio_packets,
    make_audio_only,
    make_clip,
    make_damaged_clip,
    read_video_pts,
    stream_summary,
    subtitle_texts,
    temporary_files,
    truncate,
)

from colorvid.errors import InputError, OutputError
from colorvid.io import EncodeOptions, VideoInfo, VideoReader, VideoWriter, check_output, probe


def transcode(source, target, options=EncodeOptions(), passthrough=True):
    """Decode ``source`` and encode every frame into ``target``, as the pipeline does."""
    info = probe(source)
    with VideoReader(source) as reader, VideoWriter(
        target, info, options, passthrough_source=source if passthrough else None
    ) as writer:
        for frame in reader:
            writer.write(frame)
    return writer


def relative(times):
    return [t - times[0] for t in times]


# --- probe --------------------------------------------------------------------


def test_probe_describes_the_video(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, width=64, height=48, frames=12, fps=24)
    info = probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.frame_count == 12
    assert info.frame_rate == 24
    assert info.duration == pytest.approx(0.5, abs=0.05)
    assert info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert info.matrix == "bt601" and not info.full_range  # untagged and small
    assert info.rotation == 0 and info.start_time == 0
    assert info.container_metadata["title"] == "colorvid test clip"
    assert info.stream_metadata["language"] == "eng"


def test_probe_reads_rotation_and_default_hd_matrix(tmp_path):
    clip = tmp_path / "portrait.mp4"
    make_clip(clip, width=32, height=720, frames=2, rotation=90, audio_tracks=0)
    info = probe(clip)
    assert info.rotation == 90
    assert info.matrix == "bt709"  # untagged, 720 lines


def test_video_info_survives_json(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, vfr=True, rotation=270, audio_tracks=0)
    info = probe(clip)
    assert VideoInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@pytest.mark.parametrize("kind", ["missing", "folder", "text", "audio-only", "truncated-mp4"])
def test_unreadable_inputs_are_input_errors_naming_the_file(tmp_path, kind):
    path = tmp_path / "input.mp4"
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not a video\n")
    elif kind == "audio-only":
        path = tmp_path / "input.m4a"
        make_audio_only(path)
    elif kind == "truncated-mp4":  # the index (moov) is at the end: nothing is readable
        make_clip(path, frames=12)
        truncate(path, 0.5)
    with pytest.raises(InputError) as error:
        probe(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    if kind == "audio-only":
        assert "no video stream" in message


# --- reader -------------------------------------------------------------------


def test_reader_yields_every_frame_with_its_pts(tmp_path):
    clip = tmp_path / "vfr.mp4"
    times = make_clip(clip, vfr=True, frames=10)
    with VideoReader(clip) as reader:
        frames = []
        for frame in reader:
            assert frame.pts is not None and frame.time_base is not None  # the reader fills in missing ones
            frames.append((frame.pts * frame.time_base, frame.format.name))
        stream = reader._stream
        assert stream is not None and stream.thread_type != av.codec.context.ThreadType.NONE
    assert [t for t, _ in frames] == times
    assert reader.frames_read == 10


def test_reader_skips_damaged_packets_with_a_warning(tmp_path, caplog):
    clip = tmp_path / "damaged.mkv"
    make_damaged_clip(clip, frames=12, damaged=(4, 5))
    with caplog.at_level(logging.WARNING), VideoReader(clip) as reader:
        count = sum(1 for _ in reader)
    assert count == 10
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 2 and "0.167 s" in warnings[0]


def test_reader_gives_up_after_too_many_failures(tmp_path):
    clip = tmp_path / "damaged.mkv"
    make_damaged_clip(clip, frames=8, damaged=(1, 2, 3, 4, 5))
    with pytest.raises(InputError, match="in a row") as error, VideoReader(clip, max_consecutive_errors=3) as reader:
        list(reader)
    assert str(clip) in str(error.value)


def test_reader_without_any_decodable_frame_is_an_input_error(tmp_path):
    clip = tmp_path / "garbage.mkv"
    make_damaged_clip(clip, frames=4, damaged=(0, 1, 2, 3))
    with pytest.raises(InputError, match="no video frame"), VideoReader(clip) as reader:
        list(reader)


def test_truncated_file_yields_what_it_can_and_warns(tmp_path, caplog):
    clip = tmp_path / "cut.mkv"
    make_clip(clip, frames=24, fps=6, audio_tracks=0)  # 4 s
    truncate(clip, 0.5)
    with caplog.at_level(logging.WARNING), VideoReader(clip) as reader:
        count = sum(1 for _ in reader)
    assert 0 < count < 24
    assert any("truncated" in r.getMessage() for r in caplog.records)


# --- writer: what survives ----------------------------------------------------


def test_round_trip_keeps_frames_timing_audio_and_metadata(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, frames=12, audio_tracks=1)
    transcode(source, target)
    assert read_video_pts(target) == read_video_pts(source)
    assert audio_packets(target) == audio_packets(source)  # copied bit for bit
    summary = stream_summary(target)
    assert summary["metadata"]["title"] == "colorvid test clip"
    video = summary["streams"][0]
    assert (video["type"], video["width"], video["height"], video["language"]) == ("video", 64, 48, "eng")
    assert video["colorspace"] == 6 and video["color_range"] == 1  # tagged: bt601, limited range
    assert temporary_files(tmp_path) == []


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate_survives(tmp_path, ext):
    source, target = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    times = make_clip(source, vfr=True, frames=16, audio_tracks=0)
    assert len(set(np.diff([float(t) for t in times]).round(4))) > 2  # really irregular
    transcode(source, target)
    assert read_video_pts(target) == times


def test_odd_size_keeps_its_size(tmp_path):
    source, target = tmp_path / "odd.mp4", tmp_path / "out.mp4"
    make_clip(source, width=65, height=49, pix_fmt="yuv444p", audio_tracks=0)
    writer = transcode(source, target)
    assert writer.pix_fmt == "yuv444p"
    video = stream_summary(target)["streams"][0]
    assert (video["width"], video["height"]) == (65, 49)
    assert len(read_video_pts(target)) == 12


def test_odd_size_with_420_for_x264_is_refused_before_encoding(tmp_path):
    source = tmp_path / "odd.mp4"
    make_clip(source, width=65, height=49, pix_fmt="yuv444p", audio_tracks=0)
    with pytest.raises(OutputError, match="yuv444p"):
        VideoWriter(tmp_path / "out.mp4", probe(source), EncodeOptions(pix_fmt="yuv420p"))
    assert os.listdir(tmp_path) == ["odd.mp4"]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_rotation_is_kept(tmp_path, ext):
    source, target = tmp_path / "in.mp4", tmp_path / f"out{ext}"
    make_clip(source, rotation=90, audio_tracks=0)
    transcode(source, target)
    assert stream_summary(target)["streams"][0]["rotation"] == 90
    assert probe(target).rotation == 90


def test_two_audio_tracks_and_subtitles_are_carried_over(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, audio_tracks=2, subtitles=True)
    transcode(source, target)
    streams = stream_summary(target)["streams"]
    audio = [s for s in streams if s["type"] == "audio"]
    assert [s["language"] for s in audio] == list(LANGUAGES[:2])
    assert [s["channels"] for s in audio] == [2, 1]
    assert audio_packets(target) == audio_packets(source)
    assert subtitle_texts(target) == [list(SUBTITLE_TEXTS)]
    assert [s["language"] for s in streams if s["type"] == "subtitle"] == ["eng"]


def test_mp4_to_mkv_converts_subtitles_and_copies_audio(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mkv"
    make_clip(source, audio_tracks=2, subtitles=True)
    transcode(source, target)
    streams = stream_summary(target)["streams"]
    assert [s["codec"] for s in streams] == ["h264", "aac", "aac", "subrip"]
    assert subtitle_texts(target) == [list(SUBTITLE_TEXTS)]
    # Same packets; Matroska keeps milliseconds, so compare the bytes.
    assert [[p[1:] for p in track] for track in audio_packets(target)] == [
        [p[1:] for p in track] for track in audio_packets(source)
    ]
    target_times, source_times = relative(read_video_pts(target)), relative(read_video_pts(source))
    assert len(target_times) == len(source_times)
    assert max(abs(a - b) for a, b in zip(target_times, source_times)) <= Fraction(1, 1000)


def test_webm_transcodes_audio_to_opus_and_subtitles_to_webvtt(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.webm"
    make_clip(source, audio_tracks=1, subtitles=True)
    transcode(source, target)
    streams = stream_summary(target)["streams"]
    assert [(s["codec"], s["language"]) for s in streams] == [("vp9", "eng"), ("opus", "eng"), ("webvtt", "eng")]
    assert subtitle_texts(target) == [list(SUBTITLE_TEXTS)]
    assert len(read_video_pts(target)) == 12


@pytest.mark.parametrize("ext", [".mov", ".avi", ".ts", ".mpg"])
def test_other_containers_play_with_audio(tmp_path, ext):
    source, target = tmp_path / "in.mp4", tmp_path / f"out{ext}"
    make_clip(source, audio_tracks=1)
    transcode(source, target)
    assert relative(read_video_pts(target)) == relative(read_video_pts(source))
    assert [s["type"] for s in stream_summary(target)["streams"]] == ["video", "audio"]
    assert len(audio_packets(target)[0]) > 0


def test_mjpeg_output_is_full_range_and_looks_the_same(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.avi"
    make_clip(source, frames=2, audio_tracks=0)  # limited range
    writer = transcode(source, target)
    assert (writer.pix_fmt, writer.full_range) == ("yuvj420p", True)

    def first_rgb(path, color_range):
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.reformat(format="rgb24", src_colorspace="itu601", src_color_range=color_range).to_ndarray()

    difference = first_rgb(target, "JPEG").astype(int) - first_rgb(source, "MPEG")
    assert abs(difference.mean()) < 2 and np.abs(difference).mean() < 6


def test_lossless_ffv1_in_mkv(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mkv"
    make_clip(source, audio_tracks=0)
    transcode(source, target, EncodeOptions(codec="ffv1"))
    assert stream_summary(target)["streams"][0]["codec"] == "ffv1"
    with av.open(str(source)) as a, av.open(str(target)) as b:
        for fa, fb in zip(a.decode(video=0), b.decode(video=0)):
            assert np.array_equal(fa.to_ndarray(), fb.to_ndarray())


def test_mkv_attachments_are_copied_and_dropped_with_a_warning_elsewhere(tmp_path, caplog):
    source = tmp_path / "in.mkv"
    make_clip(source, audio_tracks=0, font_attachment=True)
    transcode(source, tmp_path / "out.mkv")
    with av.open(str(tmp_path / "out.mkv")) as container:
        (attachment,) = container.streams.attachments
        assert attachment.metadata["filename"] == "font.ttf"
    with caplog.at_level(logging.WARNING):
        transcode(source, tmp_path / "out.mp4")
    assert any("attachment stream #1 dropped" in r.getMessage() for r in caplog.records)


def test_video_without_audio(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, audio_tracks=0)
    transcode(source, target)
    assert [s["type"] for s in stream_summary(target)["streams"]] == ["video"]


def test_rgb_frames_are_converted_with_the_video_matrix(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, width=32, height=720, frames=2, audio_tracks=0)  # bt709 by size
    info = probe(source)
    color = np.array([200, 60, 40], np.uint8)
    with VideoWriter(target, info) as writer:
        for pts in (0, 512):
            frame = av.VideoFrame.from_ndarray(np.broadcast_to(color, (720, 32, 3)).copy(), format="rgb24")
            frame.pts, frame.time_base = pts, info.time_base
            writer.write(frame)
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0))
        rgb = frame.reformat(format="rgb24", src_colorspace="itu709", src_color_range="MPEG").to_ndarray()
    assert np.abs(rgb.reshape(-1, 3).mean(axis=0) - color).max() < 4


def test_timestamps_that_do_not_increase_are_bumped_with_a_warning(tmp_path, caplog):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, frames=4, audio_tracks=0)
    info = probe(source)
    with caplog.at_level(logging.WARNING), VideoReader(source) as reader, VideoWriter(target, info) as writer:
        for frame in reader:
            frame.pts = 0
            writer.write(frame)
    assert len(read_video_pts(target)) == 4
    assert any("did not increase" in r.getMessage() for r in caplog.records)


# --- writer: safety -------------------------------------------------------------


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_no_file_is_left_after_an_exception(tmp_path, interruption):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source)
    with pytest.raises(interruption):
        with VideoReader(source) as reader, VideoWriter(target, probe(source), passthrough_source=source) as writer:
            for index, frame in enumerate(reader):
                writer.write(frame)
                if index == 5:
                    raise interruption()
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, audio_tracks=0)
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists") as error:
        transcode(source, target)
    assert str(target) in str(error.value)
    assert target.read_bytes() == b"keep me"
    transcode(source, target, EncodeOptions(overwrite=True))
    assert len(read_video_pts(target)) == 12
    assert temporary_files(tmp_path) == []


def test_output_equal_to_input_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "in.mp4"
    make_clip(source, audio_tracks=0)
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="is the input"):
        transcode(source, "./in.mp4", EncodeOptions(overwrite=True))
    os.symlink(source, tmp_path / "link.mp4")
    with pytest.raises(OutputError, match="is the input"):
        check_output(tmp_path / "link.mp4", True, source)
    assert source.read_bytes() == before


@pytest.mark.parametrize("name", ["out.xyz", "out"])
def test_unknown_extension_is_refused_up_front(tmp_path, name):
    with pytest.raises(OutputError, match="unknown output extension") as error:
        check_output(tmp_path / name)
    assert name in str(error.value)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("out.webm", {"codec": "libx264"}, "cannot be used for .webm"),
        ("out.mp4", {"pix_fmt": "yuv422p10le", "codec": "libvpx-vp9"}, "cannot encode"),
        ("missing/out.mp4", {}, "does not exist"),
    ],
)
def test_impossible_outputs_are_refused_up_front(tmp_path, name, options, message):
    with pytest.raises(OutputError, match=message):
        check_output(tmp_path / name, **options)


def test_disk_full_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, audio_tracks=0)

    def full(self, packets):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VideoWriter, "_mux", full)
    with pytest.raises(OutputError, match="disk full") as error:
        transcode(source, target)
    assert str(target) in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_writing_no_frames_is_an_error(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, audio_tracks=0)
    with pytest.raises(OutputError, match="no frames"):
        with VideoWriter(target, probe(source)):
            pass
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_frames_keep_time_base_when_written_in_another_one(tmp_path):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(source, frames=3, audio_tracks=0)
    info = probe(source)
    with VideoWriter(target, info) as writer:
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = index * 1000, Fraction(1, 24000)
            writer.write(frame)
    assert read_video_pts(target) == [Fraction(0), Fraction(1, 24), Fraction(2, 24)]
