"""keyframes extract: one frame per shot (and more in long shots), as images with a manifest."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import av
import numpy as np
import pytest
from media import assert_one_line_error, image_files, interrupt_image_writes, make_clip, make_shots, shot_starts
from PIL import Image

from colorvid.errors import InputError, OutputError
from colorvid.frames import MANIFEST_NAME, extract_frames, read_manifest, stitch_frames
from colorvid.keyframes import extract_keyframes


def decoded(path) -> list[av.VideoFrame]:
    """Every frame of a (small) clip, decoded."""
    with av.open(os.fspath(path)) as container:
        return list(container.decode(video=0))


def rgb(frame: av.VideoFrame) -> np.ndarray:
    """A test clip's frame as the image writer converts it (BT.601, limited range)."""
    return frame.reformat(format="rgb24", src_colorspace="itu601", src_color_range="MPEG").to_ndarray()


def test_one_keyframe_per_shot_at_its_first_frame(tmp_path):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    shots = (8, 10, 7)
    make_shots(source, shots)
    found = extract_keyframes(source, keys)

    starts = shot_starts(shots)  # [0, 8, 18]
    names = [f"frame_{i + 1:06d}.png" for i in starts]
    assert [k.index for k in found] == starts
    assert [k.shot for k in found] == [0, 1, 2]
    assert image_files(keys) == names

    manifest = read_manifest(keys)
    assert manifest["kind"] == "keyframes"
    assert manifest["frame_count"] == sum(shots)
    assert manifest["image_format"] == "png"
    assert manifest["source"] == str(source)
    frames = decoded(source)
    assert manifest["frames"] == [k.to_dict() for k in found]
    assert [e["file"] for e in manifest["frames"]] == names
    assert [e["index"] for e in manifest["frames"]] == starts
    assert [e["pts"] for e in manifest["frames"]] == [frames[i].pts for i in starts]
    assert [e["time"] for e in manifest["frames"]] == pytest.approx([float(frames[i].time) for i in starts])


def test_a_single_shot_gives_one_keyframe(tmp_path):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_clip(source, frames=24, audio_tracks=0)  # moving shapes, no cut
    assert [(k.file, k.index, k.shot) for k in extract_keyframes(source, keys)] == [("frame_000001.png", 0, 0)]


@pytest.mark.parametrize(
    ("shots", "every", "expected"),
    [
        ((6, 30), 0.5, [0, 6, 18, 30]),  # 24 fps: 0.5 s is 12 frames, counted from the shot's first frame
        ((30, 6), 0.5, [0, 12, 24, 30]),  # the cut comes before the next 0.5 s is up
        ((8, 10), 10.0, [0, 8]),  # shots shorter than --every: one keyframe each
    ],
)
def test_every_adds_keyframes_in_long_shots(tmp_path, shots, every, expected):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_shots(source, shots, audio_tracks=0)
    found = extract_keyframes(source, keys, every=every)
    assert [k.index for k in found] == expected
    assert image_files(keys) == [f"frame_{i + 1:06d}.png" for i in expected]
    assert [k.shot for k in found] == [int(i >= shots[0]) for i in expected]


def test_every_follows_the_timestamps_of_variable_frame_rate_video(tmp_path):
    source, keys = tmp_path / "vfr.mkv", tmp_path / "keys"
    times = make_clip(source, frames=40, vfr=True, audio_tracks=0)
    expected, last = [0], times[0]
    for index, time in enumerate(times):
        if time - last >= Fraction(3, 10):
            expected.append(index)
            last = time
    found = extract_keyframes(source, keys, every=0.3)
    assert [k.index for k in found] == expected
    assert len(expected) > 5  # several keyframes, at irregular frame steps
    assert [k.time for k in found] == pytest.approx([float(times[i] - times[0]) for i in expected])


def test_images_are_the_frames(tmp_path):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_shots(source, (5, 5), audio_tracks=0)
    extract_keyframes(source, keys)
    frames = decoded(source)
    for index in (0, 5):
        image = np.asarray(Image.open(keys / f"frame_{index + 1:06d}.png"))
        assert image.shape == (48, 64, 3)
        assert np.array_equal(image, rgb(frames[index]))


def test_deep_video_finds_the_same_shots(tmp_path):
    source, keys = tmp_path / "film10.mp4", tmp_path / "keys"
    make_shots(source, (5, 6, 5), audio_tracks=0, pix_fmt="yuv420p10le")
    assert [k.index for k in extract_keyframes(source, keys)] == [0, 5, 11]
    with av.open(str(keys / "frame_000006.png")) as container:
        assert next(container.decode(video=0)).format.name == "rgb48be"


def test_other_image_format(tmp_path):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_shots(source, (4, 4), audio_tracks=0)
    extract_keyframes(source, keys, image_format="tiff")
    assert image_files(keys) == ["frame_000001.tiff", "frame_000005.tiff"]
    assert read_manifest(keys)["image_format"] == "tiff"


def test_refuses_a_folder_with_a_manifest_unless_overwrite(tmp_path):
    source, other, keys = tmp_path / "film.mp4", tmp_path / "other.mp4", tmp_path / "keys"
    make_shots(source, (4, 4, 4), audio_tracks=0)
    make_clip(other, frames=6, audio_tracks=0)
    extract_frames(other, keys)  # every frame of another video
    with pytest.raises(OutputError, match="already holds extracted frames"):
        extract_keyframes(source, keys)
    assert len(image_files(keys)) == 6  # left alone

    extract_keyframes(source, keys, overwrite=True)  # the other video's frames go
    assert image_files(keys) == ["frame_000001.png", "frame_000005.png", "frame_000009.png"]
    with pytest.raises(OutputError, match="already holds extracted frames"):
        extract_keyframes(source, keys, every=0.1)
    extract_keyframes(source, keys, every=0.1, overwrite=True)
    assert read_manifest(keys)["frame_count"] == 12


def test_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_shots(source, (4, 4, 4), audio_tracks=0)
    interrupt_image_writes(monkeypatch, after="frame_000005.png")
    with pytest.raises(KeyboardInterrupt):
        extract_keyframes(source, keys)
    assert os.listdir(keys) == []


def test_frames_stitch_refuses_a_keyframes_folder(tmp_path):
    source, keys, target = tmp_path / "film.mp4", tmp_path / "keys", tmp_path / "out.mp4"
    make_shots(source, (4, 4), audio_tracks=0)
    extract_keyframes(source, keys)
    with pytest.raises(InputError, match="holds keyframes, not every frame"):
        stitch_frames(keys, target)
    assert not target.exists()


def test_bad_arguments_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="every"):
        extract_keyframes(tmp_path / "film.mp4", tmp_path / "keys", every=0)
    with pytest.raises(ValueError, match="image_format"):
        extract_keyframes(tmp_path / "film.mp4", tmp_path / "keys", image_format="gif")


# --- command line ---------------------------------------------------------------


def test_cli_extract_prints_the_summary(tmp_path, run):
    source, keys = tmp_path / "film.mp4", tmp_path / "keys"
    make_shots(source, (6, 30))
    status, err = run(["keyframes", "extract", source, keys, "--every", "0.5", "--format", "png"])
    assert status == 0, err
    assert err.strip().splitlines() == [f"colorvid: {keys}: 4 keyframes (2 shots) of {source}"]
    assert image_files(keys) == ["frame_000001.png", "frame_000007.png", "frame_000019.png", "frame_000031.png"]
    assert json.loads((keys / MANIFEST_NAME).read_text())["kind"] == "keyframes"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["keyframes", "extract", "{tmp}/missing.mp4", "{tmp}/keys"], "missing.mp4"),
        (["keyframes", "extract", "{tmp}/film.mp4", "{tmp}/keys"], "already holds"),  # no --overwrite
        (["frames", "stitch", "{tmp}/keys", "-o", "{tmp}/out.mp4"], "holds keyframes"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, run, args, named):
    make_shots(tmp_path / "film.mp4", (3, 3), audio_tracks=0)
    extract_keyframes(tmp_path / "film.mp4", tmp_path / "keys")
    status, err = run([a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(status, err, named)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["keyframes", "extract", "in.mp4", "out", "--every", "0"],
        ["keyframes", "extract", "in.mp4", "out", "--every", "-1"],
        ["keyframes", "extract", "in.mp4", "out", "--format", "gif"],
        ["keyframes", "extract", "in.mp4"],
    ],
)
def test_cli_usage_errors_exit_2(run, args):
    status, _ = run(args)
    assert status == 2
