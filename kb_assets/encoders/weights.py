"""A checkpoint folder's weights file, read as a plain state dict without running anything from it: safetensors,
or a .bin unpickled with `weights_only=True`, which refuses anything but tensors and plain containers, so a pickle
that would run code on load is rejected instead of executed. Shared by the native families (DNABERT-2, Caduceus)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kb_assets.errors import InputError

SAFETENSORS_WEIGHTS_FILE = "model.safetensors"
BIN_WEIGHTS_FILE = "pytorch_model.bin"


def weights_file(folder: Path, usual: str) -> Path:
    """model.safetensors when present, else pytorch_model.bin; `usual` is the file the family's public checkpoints
    ship, named in the error when neither is there."""
    for name in (SAFETENSORS_WEIGHTS_FILE, BIN_WEIGHTS_FILE):
        if (folder / name).is_file():
            return folder / name
    raise InputError(folder, None, f"neither {SAFETENSORS_WEIGHTS_FILE} nor {BIN_WEIGHTS_FILE} found",
                     f"copy the checkpoint's {usual} into the folder")


def read_state_dict(file: Path, get_real_checkpoint: str) -> dict[str, torch.Tensor]:
    """The file's state dict as saved (every key, heads included); `get_real_checkpoint` is the fix named when the
    file is damaged."""
    if file.suffix == ".safetensors":
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise InputError(file, None, f"not a readable safetensors file ({err})", get_real_checkpoint) from err
    else:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # weights_only=True raises this both for a pickle of arbitrary objects and for a non-pickle file.
            raise InputError(file, None, "not loaded: it holds objects other than plain tensors (unpickling them "
                             "could run code) or is not a PyTorch weights file at all",
                             "save the weights as a plain state dict (torch.save(model.state_dict(), path)) "
                             "or as model.safetensors") from err
        except (RuntimeError, EOFError, OSError) as err:
            raise InputError(file, None, f"could not be read as PyTorch weights ({err})", get_real_checkpoint) from err
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise InputError(file, None, "is not a state dict (a flat mapping of weight names to tensors)",
                         "save the weights with torch.save(model.state_dict(), path)")
    return state
