"""Model-only speed: frames/s of the network alone, as the pipeline runs it.

    python benchmarks/model_speed.py
    python benchmarks/model_speed.py --seconds 3 --device cuda

The model is loaded as the pipeline loads it (Conv+BN fused, channels_last, frozen on the CPU)
and run under torch.inference_mode on random lightness batches: 256x256 and
the 16:9 inference size (256x448, what a 720p or 1080p film is resized to).
Each size is warmed up, then timed for at least ``--seconds``. The target is
at least 40 frames/s; the ratio to it is printed next to each figure.
"""

from __future__ import annotations

import argparse
import time

import _common
import torch

from colorvid.runtime import select_device
from colorvid.weights import open_model

TARGET_FPS = 40.0
WARMUP = 2


def measure(model, device: torch.device, dtype: torch.dtype, batch: int, height: int, width: int,
            seconds: float) -> tuple[float, int]:
    """(frames/s, batches timed)."""
    generator = torch.Generator().manual_seed(0)
    lightness = (torch.rand(batch, 1, height, width, generator=generator) * 100).to(device, dtype)
    lightness = lightness.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(WARMUP):
            model(lightness)
        sync()
        runs = 0
        start = time.perf_counter()
        while True:
            model(lightness)
            runs += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and runs >= 3:
                break
    return batch * runs / elapsed, runs


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name or file (default: the registry default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="half precision (CUDA)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timed duration per size")
    args = parser.parse_args()

    workdir, _keep = _common.work_folder(None)
    model_name = _common.resolve_model(args.model, workdir)
    device = select_device(args.device)
    model = open_model(model_name, device, args.half, optimize=True)
    dtype = model.input_dtype
    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    precision = "fp16" if args.half else "fp32"
    graph = "frozen" if device.type == "cpu" and not args.half else "eager"
    print(f"device: {device}{threads}, {precision}, fused, channels_last, {graph}, inference_mode")

    sizes = [("256x256", (256, 256)), ("16:9 (720p/1080p)", model.inference_size(720, 1280))]
    rows = [("INPUT", "SIZE", "BATCH", "FRAMES/S", "MS/FRAME", "VS TARGET 40")]
    for label, (height, width) in sizes:
        fps, runs = measure(model, device, dtype, args.batch_size, height, width, args.seconds)
        rows.append((label, f"{height}x{width}", str(args.batch_size), f"{fps:.1f}", f"{1000 / fps:.1f}",
                     f"{fps / TARGET_FPS:.2f}x {'ok' if fps >= TARGET_FPS else 'MISSED'}"))
        print(f"  {label}: {runs} batches", flush=True)
    _common.print_table(rows)


if __name__ == "__main__":
    main()
