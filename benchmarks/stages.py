"""Where a colorize run's time goes, stage by stage, at 480p and 1080p.

    python benchmarks/stages.py                           # 480p (600 frames) and 1080p (150), as throughput.py
    python benchmarks/stages.py --resolutions 480p --seconds 5

The clip goes through ``Pipeline.run_one``, the code ``colorvid colorize``
runs, once with its decode and encode threads replaced by plain calls, so
the stages run one after the other and each is timed with the machine to
itself: decode (reading and decoding, up to the batches of frames), color
conversion (into the work format, luma to Lab lightness, ab to Cb/Cr, the
planes written: what is left of ``colorize_frames`` after the three below),
network, guided upsampling, flow and temporal smoothing (scene cuts, optical
flow, the previous-frame head), encode (x264, into the chunks) and mux (the
chunks and the audio into the output). Each gets its milliseconds per frame,
its share of the sum, and the CPU time the process spent in it (all its
threads): what the stage takes from the cores when the stages overlap, and
a figure a busy machine disturbs less than the elapsed time. Then the same run with its threads, as it
really goes (the stages overlap), and the startup of a fresh process: the
imports (colorvid, torch) and the model load, also spread over the clip's
frames as a whole ``colorvid colorize`` command pays it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import _common
import torch

import colorvid.colorizer
import colorvid.stages
from colorvid import chunks
from colorvid.colorizer import FrameColorizer
from colorvid.pipeline import ColorizeOptions, Job, Pipeline
from colorvid.runtime import LoadedModel

FRAMES = {"480p": 600, "720p": 240, "1080p": 150}  # synthetic clip lengths (24 fps), as throughput.py's
STAGES = ("decode", "color conversion", "network", "guided upsampling", "flow + temporal smoothing", "encode", "mux")
# What a fresh process times: its imports, then the model load (printed as JSON).
STARTUP_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import colorvid.pipeline
imported = time.perf_counter()
from colorvid.runtime import LoadedModel
LoadedModel.load(*json.loads(sys.argv[1]))
print(json.dumps({"import": imported - start, "model load": time.perf_counter() - imported}))
"""


class Clocks:
    """Seconds, and CPU seconds of the whole process, spent in each stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start
            self.cpu_seconds[stage] += time.process_time() - cpu_start

    def wrap(self, stage: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.timing(stage):
                return function(*args, **kwargs)

        return timed

    def timed_iterator(self, stage: str, items: Iterable) -> Iterator:
        iterator = iter(items)
        end = object()
        while True:
            with self.timing(stage):
                item = next(iterator, end)
            if item is end:
                return
            yield item


def sequential_stages(clocks: Clocks) -> tuple[type, type]:
    """Stand-ins for colorvid.stages' Stage and Sink that run in the calling thread, timed."""

    class InlineStage:
        def __init__(self, source: Iterable, name: str):
            self._source = source

        def __enter__(self) -> Iterator:
            return clocks.timed_iterator("decode", self._source)

        def __exit__(self, *exc_info) -> None:
            pass

    class InlineSink:
        def __init__(self, consume: Callable, name: str):
            self._consume = consume

        def __enter__(self) -> InlineSink:
            return self

        def __exit__(self, *exc_info) -> None:
            pass

        def put(self, batch: list) -> None:
            for item in batch:
                self._consume(item)

    return InlineStage, InlineSink


def profile_stages(runtime: LoadedModel, options: ColorizeOptions, source: Path, target: Path) -> tuple[Clocks, int]:
    """(stage clocks, frames) of one colorize run of ``source`` with its stages one after the other."""
    clocks = Clocks()
    pipeline = Pipeline(options, model=runtime)
    model = runtime.model
    assert isinstance(model, torch.nn.Module), "every family's network is a torch module"
    inline_stage, inline_sink = sequential_stages(clocks)
    colorize_frames = FrameColorizer.colorize_frames

    def colorize_timed(self, *args, **kwargs):
        smoother_call = type(self.smoother).__call__
        with mock.patch.object(type(self.smoother), "__call__", clocks.wrap("flow + temporal smoothing",
                                                                            smoother_call)):
            return colorize_frames(self, *args, **kwargs)

    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(colorvid.stages, "Stage", inline_stage))
        patches.enter_context(mock.patch.object(colorvid.stages, "Sink", inline_sink))
        patches.enter_context(mock.patch.object(FrameColorizer, "colorize_frames",
                                                clocks.wrap("color conversion", colorize_timed)))
        patches.enter_context(mock.patch.object(model, "forward", clocks.wrap("network", model.forward)))
        patches.enter_context(mock.patch.object(model, "trunk", clocks.wrap("network", model.trunk)))
        patches.enter_context(mock.patch.object(colorvid.colorizer, "guided_upsample",
                                                clocks.wrap("guided upsampling", colorvid.colorizer.guided_upsample)))
        for method in ("write", "finish"):
            patches.enter_context(mock.patch.object(chunks.ChunkWriter, method,
                                                    clocks.wrap("encode", getattr(chunks.ChunkWriter, method))))
        patches.enter_context(mock.patch.object(chunks, "assemble", clocks.wrap("mux", chunks.assemble)))
        result = pipeline.run_one(Job(source, target))
    if result.status != "ok":
        raise SystemExit(f"colorize failed: {result.error}")
    for totals in (clocks.seconds, clocks.cpu_seconds):  # colorize_frames, less the three stages inside it
        totals["color conversion"] -= sum(totals[s] for s in ("network", "guided upsampling",
                                                              "flow + temporal smoothing"))
    return clocks, result.frames


def pipelined_seconds(runtime: LoadedModel, options: ColorizeOptions, source: Path, target: Path) -> float:
    """Seconds of the same run with its threads (decoding, the network and encoding overlap)."""
    start = time.perf_counter()
    result = Pipeline(options, model=runtime).run_one(Job(source, target))
    if result.status != "ok":
        raise SystemExit(f"colorize failed: {result.error}")
    return time.perf_counter() - start


def startup_seconds(options: ColorizeOptions, repeat: int) -> dict[str, float]:
    """{"import": s, "model load": s} of a fresh process, the fastest of ``repeat``."""
    arguments = json.dumps([options.model, options.device, None, options.render_size])
    runs = []
    for _ in range(repeat):
        output = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, arguments], check=True, capture_output=True,
                                text=True, cwd=_common.REPO).stdout
        runs.append(json.loads(output.splitlines()[-1]))
    return {key: min(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_pipeline_arguments(parser)
    parser.add_argument("--resolutions", default="480p,1080p",
                        help=f"synthetic clips: {', '.join(_common.RESOLUTIONS)}")
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of the synthetic clips (default: 600, 240, 150 frames at 480p, 720p, 1080p)")
    parser.add_argument("--preset", default="medium", help="x264 preset (default medium, as throughput.py)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="fresh processes timed for the startup; the fastest counts")
    parser.add_argument("--workdir", help="keep the clips and outputs here (default: a temporary folder)")
    args = parser.parse_args()

    workdir, _keep = _common.work_folder(args.workdir)
    model = _common.resolve_model(args.model, workdir)
    options = ColorizeOptions(model=model, device=args.device, batch_size=args.batch_size,
                              render_size=args.render_size, overwrite=True, crf=18, preset=args.preset)
    startup = startup_seconds(options, args.repeat)
    runtime = LoadedModel.load(model, args.device, render_size=args.render_size)
    print(f"device: {runtime.device}, batch {args.batch_size}, render size {runtime.render_size}, "
          f"temporal {runtime.temporal}, encoder libx264 {args.preset} crf 18")
    for name in filter(None, args.resolutions.split(",")):
        width, height = _common.RESOLUTIONS[name]
        seconds = args.seconds if args.seconds is not None else FRAMES[name] / _common.FPS
        source = workdir / f"synthetic-{name}-{seconds:g}s.mp4"
        print(f"synthesizing {source.name} ...", flush=True)
        _common.synthesize_clip(source, width, height, seconds)
        target = workdir / f"stages-{source.stem}.mp4"
        clocks, frames = profile_stages(runtime, options, source, target)
        overlapped = pipelined_seconds(runtime, options, source, target)
        total = sum(clocks.seconds.values())
        rows = [("STAGE", "MS/FRAME", "SHARE", "CPU MS/FRAME")]
        rows += [(stage, f"{1000 * s / frames:.1f}", f"{100 * s / total:.0f}%",
                  f"{1000 * clocks.cpu_seconds[stage] / frames:.1f}") for stage, s in clocks.seconds.items()]
        rows.append(("sum, one after the other", f"{1000 * total / frames:.1f}", "100%",
                     f"{1000 * sum(clocks.cpu_seconds.values()) / frames:.1f}"))
        rows.append(("pipelined run (stages overlap)", f"{1000 * overlapped / frames:.1f}", "", ""))
        for stage, s in startup.items():
            rows.append((f"startup: {stage} ({s:.2f} s)", f"{1000 * s / frames:.1f}", "", ""))
        print(f"\n{name} ({width}x{height}, {frames} frames); startup spread over the clip's frames")
        _common.print_table(rows)
        print()


if __name__ == "__main__":
    main()
