"""End-to-end speed of each model family at its default render size: frames/s at 480p.

    python benchmarks/model_families.py                       # every family, 16 frames, CPU (or CUDA)
    python benchmarks/model_families.py --frames 96 --device cuda --precision both
    python benchmarks/model_families.py --models colorvid-base,ddcolor-tiny --weights-dir /tmp/w

The published models (DDColor tiny and large, DeOldify artistic, stable and
video) are measured with random weights of their real size and layout
(tests/published_weights.py writes them into ``--weights-dir``, where later
runs reuse them): the speed of a network does not depend on its weights'
values. colorvid-base is the shipped model. Each run colorizes a synthetic
480p clip of ``--frames`` frames with the pipeline's defaults (libx264 medium,
CRF 18, flow smoothing for the published families); loading the model is
timed apart. The figures for a CPU are what the README's model table quotes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common
import torch

sys.path.insert(0, str(_common.REPO / "tests"))

from published_weights import DEFAULT_WRAPPER, WRAPPERS, random_state, save_published  # noqa: E402  # pyright: ignore[reportMissingImports]

from colorvid.pipeline import ColorizeOptions, Job, Pipeline  # noqa: E402

# model -> (stand-in kind, render size); None: a registry model measured as it is shipped
MODELS = {
    "colorvid-base": (None, None),
    "ddcolor-tiny": ("ddcolor-tiny", None),
    "ddcolor-large": ("ddcolor-large", None),
    "deoldify-artistic": ("deoldify-artistic", None),
    "deoldify-stable": ("deoldify-stable", None),
    "deoldify-video": ("deoldify-stable", 21),  # the stable layout at the video model's render factor
}


def weights_file(kind: str, folder: Path) -> Path:
    path = folder / f"random-{kind}.pth"
    if not path.exists():
        print(f"writing {path.name} (random weights, real size) ...", flush=True)
        partial = path.with_suffix(".part")
        save_published(random_state(kind), partial, WRAPPERS[DEFAULT_WRAPPER[kind]])
        partial.rename(path)
    return path


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--frames", type=int, default=16, help="length of the 480p clip")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=("default", "fp32", "half", "both"), default="default",
                        help="default: half on CUDA only, as colorize")
    parser.add_argument("--weights-dir", help="where the random-weight files are kept (default: the work folder)")
    parser.add_argument("--workdir", help="keep the clip and outputs here (default: a temporary folder)")
    args = parser.parse_args()

    workdir, _keep = _common.work_folder(args.workdir)
    weights_dir = Path(args.weights_dir) if args.weights_dir else workdir
    weights_dir.mkdir(parents=True, exist_ok=True)
    width, height = _common.RESOLUTIONS["480p"]
    clip = workdir / f"synthetic-480p-{args.frames}f.mp4"
    frames = _common.synthesize_clip(clip, width, height, args.frames / _common.FPS)
    halves = {"default": [None], "fp32": [False], "half": [True], "both": [False, True]}[args.precision]

    rows = [("MODEL", "DEVICE", "PRECISION", "RENDER SIZE", "LOAD S", "FRAMES", "FPS 480P")]
    for name in filter(None, args.models.split(",")):
        kind, render_size = MODELS[name]
        model = name if kind is None else str(weights_file(kind, weights_dir))
        for half in halves:
            start = time.perf_counter()
            pipeline = Pipeline(ColorizeOptions(model=model, device=args.device, batch_size=args.batch_size,
                                                render_size=render_size, half=half, overwrite=True,
                                                codec="libx264", crf=18, preset="medium", pix_fmt="yuv420p"))
            runtime = pipeline.runtime
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            result = pipeline.run_one(Job(clip, workdir / f"out-{name}.mp4"))
            seconds = time.perf_counter() - start
            if result.status != "ok":
                raise SystemExit(f"{name}: colorize failed: {result.error}")
            network = runtime.model
            assert isinstance(network, torch.nn.Module)
            precision = str(next(network.parameters()).dtype).removeprefix("torch.") if runtime.half else "float32"
            rows.append((name, str(runtime.device), precision, str(runtime.render_size), f"{loaded:.1f}",
                         str(result.frames), f"{result.frames / seconds:.2f}"))
            print(f"  {name} {precision}: {result.frames} frames in {seconds:.1f} s (load {loaded:.1f} s)", flush=True)
    assert frames > 0
    _common.print_table(rows)


if __name__ == "__main__":
    main()
