"""Film archives: resumable runs, parallel segments, batch reports and hostile input.

Every clip is made here, tiny (64x48 unless the size is the point), so each
test takes a few seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import av.stream
import numpy as np
import pytest
from media import (
    after_a_chunk,
    audio_packets,
    decoded_planes,
    leftovers,
    make_clip,
    make_damaged_clip,
    mean_chroma_offset,
    raise_interrupt,
    read_video_pts,
    stop_on_call,
    subtitle_texts,
    synthetic_rgb,
    temporary_files,
    truncate,
)

from colorvid.smoothing import memory_frames

CHUNK = ["--chunk-seconds", "0.25"]  # 6 frames at 24 fps: several chunks in a 1-2 s clip
SMALL = ["--render-size", "64"]  # the network's input size: what costs time


def max_difference(a, b) -> int:
    first, second = decoded_planes(a), decoded_planes(b)
    assert len(first) == len(second)
    return max(int(np.abs(x - y).max()) for x, y in zip(first, second))


# --- resume ----------------------------------------------------------------------


# smoothing 0.5 remembers 8 frames, fewer than are done when the run stops; 0.8 remembers 25,
# more than there are before the resumed frames (so every one of them is redone)
@pytest.mark.parametrize("smooth", ["0.5", "0.8"])
def test_interrupted_run_resumes_to_the_same_film(tmp_path, tiny_model, run, monkeypatch, smooth):
    source = tmp_path / "film.mkv"
    make_clip(source, frames=36, color=False, audio_tracks=1, subtitles=True)
    args = ["--model", tiny_model, "--smooth", smooth, "--codec", "ffv1", "--batch-size", "4", *CHUNK, *SMALL]
    whole = tmp_path / "whole.mkv"
    assert run(["colorize", str(source), "-o", str(whole), *args])[0] == 0

    out = tmp_path / "out.mkv"
    work = tmp_path / ".out.mkv.colorvid-work"
    stop_on_call(monkeypatch, 6, after_a_chunk(work, raise_interrupt))  # 20 frames colorized
    status, err = run(["colorize", str(source), "-o", str(out), *args])
    assert status == 130 and "interrupted" in err
    chunks = [c["frames"] for c in json.loads((work / "state.json").read_text())["chunks"]]
    assert chunks in ([6], [6, 6], [6, 6, 6])  # (the encoder thread may lag behind)
    assert not out.exists() and temporary_files(tmp_path) == []
    assert temporary_files(work) == []

    # without --resume the work is not thrown away
    status, err = run(["colorize", str(source), "-o", str(out), *args])
    assert status == 1 and "--resume" in err
    # nor continued with other settings
    status, err = run(["colorize", str(source), "-o", str(out), *args, "--smooth", "0.7", "--resume"])
    assert status == 1 and "smooth" in err

    counter = stop_on_call(monkeypatch, 0, raise_interrupt)
    status, err = run(["colorize", str(source), "-o", str(out), *args, "--resume"])
    assert status == 0, err
    # the frames left, plus those before them (as many as the smoother remembers) that put it in the same state
    done = sum(chunks)
    assert counter["frames"] == 36 - done + min(done, memory_frames("model", float(smooth)))
    assert not work.exists() and temporary_files(tmp_path) == []
    assert read_video_pts(out) == read_video_pts(source)
    assert audio_packets(out) == audio_packets(source)
    assert subtitle_texts(out) == subtitle_texts(source)
    assert max_difference(out, whole) <= 1  # lossless: only what the smoother has all but forgotten differs


def test_sigkill_midway_then_resume(tmp_path, tinted_model, run):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=30, audio_tracks=1)
    out = tmp_path / "out.mp4"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, "--batch-size", "4", *CHUNK, *SMALL]
    work = tmp_path / ".out.mp4.colorvid-work"
    # a child process that kills itself with SIGKILL in the middle of its 5th batch, once the encoder
    # thread (which may lag behind on a busy machine) has recorded a finished chunk
    script = textwrap.dedent("""
        import os, signal, sys
        import pytest
        from media import after_a_chunk, stop_on_call
        from colorvid import cli
        kill = after_a_chunk(os.environ["WORK"], lambda: os.kill(os.getpid(), signal.SIGKILL))
        stop_on_call(pytest.MonkeyPatch(), 5, kill)
        sys.argv = ["colorvid", *sys.argv[1:]]
        cli.main()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), WORK=str(work))
    child = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not out.exists()
    assert json.loads((work / "state.json").read_text())["chunks"]

    status, err = run([*args, "--resume"])
    assert status == 0, err
    assert not work.exists() and temporary_files(tmp_path) == []
    assert read_video_pts(out) == read_video_pts(source)
    assert audio_packets(out) == audio_packets(source)


def test_sigterm_stops_like_ctrl_c(tmp_path, tinted_model, run, monkeypatch):
    own_handler = signal.getsignal(signal.SIGTERM)
    source = tmp_path / "film.mp4"
    make_clip(source, frames=24, audio_tracks=0)
    out = tmp_path / "out.mp4"
    stop_on_call(monkeypatch, 5, after_a_chunk(tmp_path / ".out.mp4.colorvid-work",
                                               lambda: os.kill(os.getpid(), signal.SIGTERM)))
    report = tmp_path / "report.jsonl"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, "--batch-size", "4", *CHUNK, *SMALL,
            "--report", str(report)]
    status, err = run(args)
    assert status == 143 and "terminated" in err
    assert not out.exists() and temporary_files(tmp_path) == []
    assert (tmp_path / ".out.mp4.colorvid-work" / "state.json").exists()
    assert json.loads(report.read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == own_handler  # the test process's own handler is back


# --- parallel segments ----------------------------------------------------------


def test_segments_joined_make_the_whole_film(tmp_path, tiny_model, run):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=30, vfr=True, color=False, audio_tracks=2, subtitles=True)
    args = ["--model", tiny_model, "--temporal", "flow", "--codec", "ffv1", *CHUNK, *SMALL]
    whole = tmp_path / "whole.mkv"
    assert run(["colorize", str(source), "-o", str(whole), *args])[0] == 0

    out = tmp_path / "out.mkv"
    for index in (3, 1, 2):  # any order, as a job array runs them
        status, err = run(["colorize", str(source), "-o", str(out), "--segment", f"{index}/3", *args])
        assert status == 0, err
    parts = sorted(tmp_path.glob("out.mkv.part*of3"))
    frames = [sum(c["frames"] for c in json.loads((p / "state.json").read_text())["chunks"]) for p in parts]
    assert len(frames) == 3 and sum(frames) == 30 and min(frames) > 0
    assert not out.exists()

    status, err = run(["join", *map(str, parts[:2]), "-o", str(out)])
    assert status == 1 and "missing" in err
    status, err = run(["join", *map(str, parts), "-o", str(out)])
    assert status == 0, err
    assert read_video_pts(out) == read_video_pts(whole)  # (Matroska starts the video after the AAC priming)
    assert audio_packets(out) == audio_packets(whole)
    assert [[p[1:] for p in track] for track in audio_packets(out)] == [
        [p[1:] for p in track] for track in audio_packets(source)]  # every audio packet copied
    assert subtitle_texts(out) == subtitle_texts(source)
    assert max_difference(out, whole) <= 1  # no seam where the parts meet
    assert not list(tmp_path.glob("out.mkv.part*"))  # joined parts are removed


def test_time_ranges_join_and_must_not_overlap(tmp_path, tinted_model, run):
    source = tmp_path / "film.mp4"
    pts = make_clip(source, frames=24, audio_tracks=1)
    out = tmp_path / "out.mp4"
    common = ["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL]
    for text in ("0-0.5", "0.5-", "0.4-", "0-0.3"):
        assert run([*common, "--range", text])[0] == 0
    first, second, third, also_first = (
        tmp_path / f"out.mp4.part{label}" for label in ("0-0.5", "0.5-end", "0.4-end", "0-0.3"))
    status, err = run(["join", str(first), str(third), "-o", str(out), "--keep-parts"])
    assert status == 1 and "overlaps" in err
    status, err = run(["join", str(first), str(also_first), "-o", str(out), "--keep-parts"])  # both start the film
    assert status == 1 and "overlaps" in err, err
    status, err = run(["join", str(second), str(first), "-o", str(out), "--source", str(source)])
    assert status == 0, err
    assert read_video_pts(out) == pts
    assert audio_packets(out) == audio_packets(source)


# --- batch report --------------------------------------------------------------


def test_report_has_a_line_per_file_and_reruns_are_safe(tmp_path, tinted_model, run):
    films = tmp_path / "films"
    films.mkdir()
    make_clip(films / "a.mp4", frames=4, audio_tracks=0)
    (films / "broken.mp4").write_bytes(b"\x00" * 100)
    out, report = tmp_path / "colored", tmp_path / "report.jsonl"
    args = ["colorize", str(films), "-o", str(out), "--model", tinted_model, *SMALL, "--report", str(report),
            "--skip-existing", "--resume"]
    assert run(args)[0] == 1
    assert run(args)[0] == 1  # the broken file still fails
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(os.path.basename(e["input"]), e["status"]) for e in lines] == [
        ("a.mp4", "ok"), ("broken.mp4", "failed"), ("a.mp4", "skipped"), ("broken.mp4", "failed")]
    assert lines[0]["frames"] == 4 and lines[0]["error"] is None and lines[0]["seconds"] > 0
    assert "broken.mp4" in lines[1]["error"]
    assert set(lines[0]) == {"input", "output", "status", "frames", "seconds", "error"}
    os.remove(films / "broken.mp4")
    assert run(args)[0] == 0


# --- hostile input ---------------------------------------------------------------


def test_damaged_packets_are_skipped_keeping_the_other_frames_timing(tmp_path, tinted_model, run):
    source = tmp_path / "damaged.mkv"
    make_damaged_clip(source, frames=16, damaged=(5, 6, 11))
    out = tmp_path / "out.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model, *CHUNK, *SMALL])
    assert status == 0, err
    decodable = [Fraction(round(Fraction(i * 1000, 24)), 1000) for i in range(16) if i not in (5, 6, 11)]
    assert read_video_pts(out) == decodable
    assert "damaged video packet at 0.208 s" in err  # frame 5 = 5/24 s


def test_truncated_transport_stream_keeps_what_decodes(tmp_path, tinted_model, run):
    source = tmp_path / "cut.ts"
    make_clip(source, frames=36, audio_tracks=1, title=None)
    truncate(source, keep=0.6)
    out = tmp_path / "out.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL, *CHUNK])
    assert status == 0, err
    assert 0 < len(read_video_pts(out)) < 36
    assert leftovers(tmp_path) == []


def make_interlaced(path, frames: int = 8) -> None:
    """H.264 coded as interlaced, each frame's two fields from different moments (combing on motion)."""
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, width=64, height=48, pix_fmt="yuv420p",
                                options={"preset": "ultrafast", "flags": "+ildct+ilme"})
        stream.codec_context.time_base = Fraction(1, 25)
        for index in range(frames):
            picture = synthetic_rgb(4 * index, 64, 48)
            picture[1::2] = synthetic_rgb(4 * index + 2, 64, 48)[1::2]
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def combing(path) -> float:
    """Mean distance of each luma line from the mean of its neighbours."""
    values = []
    for planes in decoded_planes(path):
        y = planes[0].astype(float)
        values.append(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean())
    return float(np.mean(values))


def test_deinterlace_keeps_every_frame_and_marks_output_progressive(tmp_path, tinted_model, run):
    source = tmp_path / "interlaced.mp4"
    make_interlaced(source)
    with av.open(str(source)) as container:
        assert next(container.decode(video=0)).interlaced_frame
    plain, clean = tmp_path / "plain.mkv", tmp_path / "clean.mkv"
    status, err = run(["colorize", str(source), "-o", str(plain), "--model", tinted_model, *SMALL])
    assert status == 0 and "--deinterlace" in err
    args = ["colorize", str(source), "-o", str(clean), "--model", tinted_model, *SMALL, "--deinterlace"]
    assert run(args)[0] == 0
    assert read_video_pts(clean) == read_video_pts(source)
    assert combing(clean) < 0.5 * combing(plain)
    with av.open(str(clean)) as container:
        assert container.streams.video[0].codec_context.field_order == 1  # AV_FIELD_PROGRESSIVE


def test_ten_bit_input_gives_ten_bit_output(tmp_path, tinted_model, run):
    source = tmp_path / "deep.mkv"
    make_clip(source, frames=6, color=False, audio_tracks=0, pix_fmt="yuv420p10le")
    out = tmp_path / "out.mkv"
    assert run(["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL])[0] == 0
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "yuv420p10le"
    planes = ten_bit_planes(frame)
    assert np.hypot(planes[1] - 512, planes[2] - 512).mean() > 40  # colored (in 10-bit code values)
    with av.open(str(source)) as container:
        luma_in = ten_bit_planes(next(container.decode(video=0)))[0]
    assert np.abs(luma_in - planes[0]).mean() < 4  # luma kept at 10 bits (through a lossy encoder)


def ten_bit_planes(frame) -> list[np.ndarray]:
    """Y, Cb, Cr code values of a yuv420p10le frame."""
    planes = []
    for plane in frame.planes:
        data = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        planes.append(data[:, : plane.width].astype(float))
    return planes


@pytest.mark.parametrize("size,frames", [((16, 16), 3), ((64, 48), 1)], ids=["16x16", "one-frame"])
def test_tiny_and_single_frame_videos(tmp_path, tinted_model, run, size, frames):
    source = tmp_path / "in.mp4"
    pts = make_clip(source, width=size[0], height=size[1], frames=frames, audio_tracks=1)
    out = tmp_path / "out.mp4"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL, "--smooth", "0.5"]
    status, err = run(args)
    assert status == 0, err
    assert read_video_pts(out) == pts
    assert mean_chroma_offset(out) > 10


def test_4k_frame(tmp_path, tinted_model, run):
    source = tmp_path / "uhd.mkv"
    make_clip(source, width=3840, height=2160, frames=1, audio_tracks=0, codec="ffv1")
    out = tmp_path / "out.mp4"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL, "--preset", "ultrafast"]
    status, err = run(args)
    assert status == 0, err
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (3840, 2160)


def make_raw_h264(path, frames: int) -> None:
    """An H.264 elementary stream: no container, so no duration, frame count or timestamps."""
    with av.open(os.fspath(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=24, width=64, height=48, pix_fmt="yuv420p",
                                options={"preset": "ultrafast"})
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_rgb(index, 64, 48), format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def test_raw_h264_without_duration_colorizes_and_splits(tmp_path, tinted_model, run):
    source = tmp_path / "raw.h264"
    make_raw_h264(source, frames=20)
    with av.open(str(source)) as container:
        assert not container.duration and not container.streams.video[0].frames
    common = ["colorize", str(source), "--model", tinted_model, *CHUNK, *SMALL]
    whole = tmp_path / "whole.mp4"
    status, err = run([*common, "-o", str(whole)])
    assert status == 0, err
    assert len(read_video_pts(whole)) == 20
    out = tmp_path / "out.mp4"
    for index in (1, 2):  # no index to seek in: the second part decodes from the start
        assert run([*common, "-o", str(out), "--segment", f"{index}/2"])[0] == 0
    assert run(["join", *map(str, sorted(tmp_path.glob("out.mp4.part*"))), "-o", str(out)])[0] == 0
    assert read_video_pts(out) == read_video_pts(whole)


def test_paths_with_spaces_and_non_ascii(tmp_path, tinted_model, run, monkeypatch):
    folder = tmp_path / "Archiv — Filme ü"
    folder.mkdir()
    source = folder / "Ça tourne 映画.mp4"
    pts = make_clip(source, frames=18, audio_tracks=1)
    out = folder / "farbig é 色.mp4"
    args = ["colorize", str(source), "-o", str(out), "--model", tinted_model, "--batch-size", "4", *CHUNK, *SMALL]
    stop_on_call(monkeypatch, 3, raise_interrupt)
    assert run(args)[0] == 130
    stop_on_call(monkeypatch, 0, raise_interrupt)
    status, err = run([*args, "--resume"])
    assert status == 0, err
    assert read_video_pts(out) == pts
    assert sorted(os.listdir(folder)) == sorted([source.name, out.name])


def test_unwritable_output_folder_fails_cleanly(tmp_path, tinted_model, run, monkeypatch):
    source = tmp_path / "film.mp4"
    make_clip(source, frames=4, audio_tracks=0)
    target_dir = tmp_path / "out"
    target_dir.mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if os.fspath(path).startswith(os.fspath(target_dir)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    args = ["colorize", str(source), "-o", str(target_dir / "out.mp4"), "--model", tinted_model, *SMALL]
    status, err = run(args)
    assert status == 1 and "not writable" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert os.listdir(target_dir) == []


@pytest.mark.parametrize("where", ["chunk", "final"])
def test_disk_full_midway_leaves_nothing_behind(tmp_path, tinted_model, run, monkeypatch, where):
    from colorvid import chunks
    from colorvid.io import VideoWriter

    source = tmp_path / "film.mp4"
    make_clip(source, frames=24, audio_tracks=1)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    calls = {"n": 0}

    def full_after_some(original):
        def write(*args):
            calls["n"] += 1
            if calls["n"] > 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args)
        return write

    if where == "chunk":
        monkeypatch.setattr(chunks, "_write_record", full_after_some(chunks._write_record))
    else:
        monkeypatch.setattr(VideoWriter, "_mux", full_after_some(VideoWriter._mux))
    out = tmp_path / "out.mp4"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model, *CHUNK, *SMALL])
    assert status == 1 and "disk full" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["film.mp4"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


# --- other streams ----------------------------------------------------------------


def make_multi_angle(path, frames: int = 6) -> None:
    """An .mp4 with the main picture, a smaller second angle and a cover art picture."""
    with av.open(os.fspath(path), "w") as out:
        streams = []
        for width, height in ((64, 48), (32, 24)):
            stream = out.add_stream("libx264", rate=24, width=width, height=height, pix_fmt="yuv420p",
                                    options={"preset": "ultrafast"})
            stream.codec_context.time_base = Fraction(1, 24)
            streams.append(stream)
        art = out.add_stream("mjpeg", width=32, height=32, pix_fmt="yuvj420p")
        art.codec_context.time_base = Fraction(1, 1)
        art.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        out.mux(art.encode(picture) + art.encode())
        for index in range(frames):
            for stream in streams:
                frame = av.VideoFrame.from_ndarray(synthetic_rgb(index, stream.width, stream.height), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.pts = index
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode())


def video_streams(path) -> list[tuple[str, int, bool]]:
    """(codec, width, is cover art) of every video stream."""
    with av.open(os.fspath(path)) as container:
        return [(s.codec_context.name, s.codec_context.width, bool(s.disposition & av.stream.Disposition.attached_pic))
                for s in container.streams.video]


@pytest.mark.parametrize("ext,kept", [(".mp4", 3), (".webm", 1)])
def test_second_angle_and_cover_art_are_copied_where_possible(tmp_path, tinted_model, run, ext, kept):
    source = tmp_path / "multi.mp4"
    make_multi_angle(source)
    out = tmp_path / f"out{ext}"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", tinted_model, *SMALL])
    assert status == 0, err
    streams = video_streams(out)
    assert len(streams) == kept
    if kept == 3:
        assert streams[1:] == video_streams(source)[1:]
        assert "not carried over" not in err
    else:
        assert err.count("not carried over") == 2
