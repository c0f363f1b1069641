"""Reading published PyTorch weights files (``.pth``/``.bin`` pickles) without running their code.

Published colorizers ship their weights as pickles, which can run code when
read. :func:`read_state_dict` reads them with ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers and refuses anything else,
and unwraps the state dict from the wrappers the published files use.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping

import torch

from colorvid.errors import ModelFileError

# Keys under which training tools store the model's state dict: BasicSR ("params", "params_ema"),
# fastai's Learner.save ("model").
STATE_WRAPPERS = ("params", "params_ema", "model")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The named tensors of a weights file: a bare state dict, or one inside a known wrapper.

    A state dict saved from a DataParallel wrapper loses its ``module.`` prefixes.

    Raises:
        ModelFileError: not a torch pickle, one that needs globals ``weights_only`` refuses
            (anything that could run code when read), or no state dict of named tensors.
    """
    try:
        loaded = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"refused as a weights-only torch file ({_unpickler_complaint(exc)})") from None
    except Exception as exc:  # a damaged or foreign file fails in many ways (KeyError for an unknown opcode, ...)
        raise ModelFileError(f"not a torch weights file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(loaded, Mapping):
        for key in STATE_WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ModelFileError("the file holds no state dict")
    state = dict(loaded)
    not_tensors = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelFileError(f"the state dict has entries that are not named tensors, e.g. {not_tensors[0]!r}")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _unpickler_complaint(exc: Exception) -> str:
    """What torch's weights_only unpickler refused, in one line."""
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if unsafe:
        return f"unpickling it would call {unsafe.group(1)}: GLOBAL {unsafe.group(1)}, not just read tensors"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip().split(". Please use")[0]
    return lines[0] if lines else type(exc).__name__
