"""End-to-end colorize throughput against a plain decode + encode of the same file.

    python benchmarks/throughput.py                       # 10 s synthetic clips at 480p, 720p, 1080p
    python benchmarks/throughput.py --seconds 2 --resolutions 480p
    python benchmarks/throughput.py --input film.mp4 --input other.mkv

For each clip, in one run: the frames/s of a decode + encode with the same
encoder settings as the colorize run (libx264 preset medium, CRF 18, yuv420p,
audio carried over; decoding in its own thread, as the pipeline does) is the
ceiling no colorizer can beat; then the frames/s of ``Pipeline.run_one``.
Their ratio is what is compared with the targets: the machine's speed
cancels out of it, which matters on a noisy machine. ``--repeat N`` keeps the
best of N runs of each. ``--keyframes`` adds a row per clip for a run with one
keyframe (the clip's first frame, tinted) carried through it (``--keyframes``
of colorize; target: 10 frames/s at 480p).
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import _common

from colorvid.io import EncodeOptions, VideoReader, VideoWriter, probe
from colorvid.pipeline import ColorizeOptions, Job, Pipeline


class _Encoding(TypedDict):
    codec: str
    crf: int
    preset: str
    pix_fmt: str


TARGETS = {"480p": 0.5, "1080p": 0.75}  # colorize fps / decode+encode fps
KEYFRAME_FPS_TARGET = 10.0  # frames/s at 480p with a keyframe carried through the clip
ENCODE = _Encoding(codec="libx264", crf=18, preset="medium", pix_fmt="yuv420p")


def decode_encode(source: Path, target: Path) -> tuple[int, float]:
    """(frames, seconds) of decoding ``source`` and encoding it again, decoding in a thread."""
    start = time.perf_counter()
    info = probe(source)
    frames: queue.Queue = queue.Queue(maxsize=16)
    failure: list[BaseException] = []

    def decode() -> None:
        try:
            with VideoReader(source) as reader:
                for frame in reader:
                    frames.put(frame)
        except BaseException as exc:  # re-raised below
            failure.append(exc)
        finally:
            frames.put(None)

    thread = threading.Thread(target=decode, daemon=True)
    thread.start()
    count = 0
    with VideoWriter(target, info, EncodeOptions(overwrite=True, **ENCODE), passthrough_source=source) as writer:
        while (frame := frames.get()) is not None:
            writer.write(frame)
            count += 1
    thread.join()
    if failure:
        raise failure[0]
    return count, time.perf_counter() - start


def colorize(pipeline: Pipeline, source: Path, target: Path) -> tuple[int, float]:
    start = time.perf_counter()
    result = pipeline.run_one(Job(source, target))
    if result.status != "ok":
        raise SystemExit(f"colorize failed: {result.error}")
    return result.frames, time.perf_counter() - start


def best_of(repeat: int, run) -> tuple[int, float]:
    runs = [run() for _ in range(repeat)]
    return min(runs, key=lambda r: r[1])


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_pipeline_arguments(parser)
    parser.add_argument("--input", action="append", default=[], help="measure this file (repeatable)")
    parser.add_argument("--resolutions", default="480p,720p,1080p",
                        help=f"synthetic clips: {', '.join(_common.RESOLUTIONS)}")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clips")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest counts")
    parser.add_argument("--workdir", help="keep the clips and outputs here (default: a temporary folder)")
    parser.add_argument("--keyframes", action="store_true",
                        help="also colorize each clip with its first frame as a (tinted) keyframe")
    args = parser.parse_args()

    workdir, _keep = _common.work_folder(args.workdir)
    model = _common.resolve_model(args.model, workdir)
    clips = []
    for name in filter(None, args.resolutions.split(",") if not args.input else []):
        width, height = _common.RESOLUTIONS[name]
        path = workdir / f"synthetic-{name}-{args.seconds:g}s.mp4"
        print(f"synthesizing {path.name} ...", flush=True)
        _common.synthesize_clip(path, width, height, args.seconds)
        clips.append((name, path))
    clips += [(Path(p).name, Path(p)) for p in args.input]

    options = ColorizeOptions(model=model, device=args.device, batch_size=args.batch_size,
                              render_size=args.render_size, overwrite=True, **ENCODE)
    pipeline = Pipeline(options)
    print(f"device: {pipeline.runtime.device}, batch {args.batch_size}, render size {pipeline.runtime.render_size}, "
          f"encoder libx264 medium crf 18 yuv420p, best of {args.repeat}")

    rows = [("CLIP", "SIZE", "FRAMES", "DECODE+ENCODE FPS", "COLORIZE FPS", "RATIO", "TARGET")]
    for name, path in clips:
        info = probe(path)
        frames, plain = best_of(args.repeat, lambda: decode_encode(path, workdir / f"plain-{path.stem}.mp4"))
        colored, seconds = best_of(args.repeat, lambda: colorize(pipeline, path, workdir / f"color-{path.stem}.mp4"))
        ratio = (colored / seconds) / (frames / plain)
        target = TARGETS.get(name)
        verdict = "" if target is None else (f">= {target}x {'ok' if ratio >= target else 'MISSED'}")
        rows.append((name, f"{info.width}x{info.height}", str(frames), f"{frames / plain:.1f}",
                     f"{colored / seconds:.2f}", f"{ratio:.3f}x", verdict))
        print(f"  {name}: decode+encode {frames} frames in {plain:.1f} s, colorize {colored} in {seconds:.1f} s",
              flush=True)
        if args.keyframes:
            keyed = Pipeline(replace(options, keyframes=tinted_keyframe(path, workdir / f"keys-{path.stem}")))
            colored, seconds = best_of(args.repeat, lambda: colorize(keyed, path, workdir / f"keyed-{path.stem}.mp4"))
            fps = colored / seconds
            verdict = f">= {KEYFRAME_FPS_TARGET:g} fps {'ok' if fps >= KEYFRAME_FPS_TARGET else 'MISSED'}"
            rows.append((f"{name} + keyframe", f"{info.width}x{info.height}", str(frames), f"{frames / plain:.1f}",
                         f"{fps:.2f}", f"{fps / (frames / plain):.3f}x", verdict if name == "480p" else ""))
    _common.print_table(rows)


def tinted_keyframe(clip: Path, folder: Path) -> Path:
    """A keyframe folder for ``clip``: its first frame with a flat tint (luma kept)."""
    import numpy as np
    import torch
    from PIL import Image

    from colorvid.color import lab_to_rgb, rgb_to_lab

    folder.mkdir(parents=True, exist_ok=True)
    with VideoReader(clip) as reader:
        first = next(iter(reader)).to_ndarray(format="rgb24")
    lab = rgb_to_lab(torch.from_numpy(first).permute(2, 0, 1)[None].float() / 255.0)
    lab[:, 1], lab[:, 2] = 20.0, -30.0
    rgb = (lab_to_rgb(lab)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(folder / "frame_000001.png")
    return folder


if __name__ == "__main__":
    main()
