"""``mnist_hpo.inference``: digits in files, PIL images, arrays and tensors of any size, as `mnist-hpo predict` reads them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from mnist_hpo.errors import DataError
from mnist_hpo.exports import ExportedModel, open_export
from mnist_hpo.inference import NoDigitError, Prediction, normalise_digit, predict_prepared, preprocess_image, to_grey_array
from mnist_hpo.trainer import predict_logits, resolve_device

#: One image: a file, a PIL image, or pixels (H×W grey, H×W×3 or H×W×4 colour; uint8 0-255 or floats 0-1).
ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


def predict(model: str | Path | torch.nn.Module, images: ImageLike | Sequence[ImageLike], *, device: str = "cpu") -> list[Prediction]:
    """The digit in each image, with its probability and any reason to doubt it, in the order given.

    ``model`` is any file mnist-hpo exports (pt, safetensors, onnx, pt2, or a ``train`` checkpoint), or a
    network from ``best_model()`` or ``train()``. ``images`` is one image or a list; an array or tensor
    of N×H×W is N grey images. Every image gets `mnist-hpo predict`'s preprocessing (the ink found on the
    paper, inverted if dark on light, cropped, scaled to 20 px and centred by mass at 28×28), so a
    photo and an MNIST digit alike work. An image without a digit comes back with ``label`` None.
    """
    network = _network(model, device)
    items = _as_list(images)
    names = [str(item) if isinstance(item, (str, Path)) else f"image {index}" for index, item in enumerate(items)]
    return predict_prepared(network, names, [_prepared(item, name) for item, name in zip(items, names)])


def _network(model: str | Path | torch.nn.Module, device: str) -> ExportedModel:
    if isinstance(model, torch.nn.Module):
        target = resolve_device(device)
        network = model.to(target).eval()
        return ExportedModel("module", {}, lambda pixels: predict_logits(network, pixels, target))
    return open_export(Path(model), device)


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        pixels = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4)):
            return [pixels]
        if pixels.ndim == 4 and pixels.shape[1] == 1:  # N×1×H×W, as a torchvision batch
            pixels = pixels[:, 0]
        if pixels.ndim != 3:
            raise DataError(f"images of shape {tuple(pixels.shape)}: pass H×W, H×W×3, N×H×W or N×1×H×W pixels, or a list of images")
        return list(pixels)
    return list(images)


def _prepared(item: ImageLike, name: str) -> torch.Tensor | str:
    """MNIST pixels for one image, or why it holds no digit."""
    try:
        if isinstance(item, (str, Path)):
            return preprocess_image(Path(item))
        return normalise_digit(_grey(item, name), name)
    except NoDigitError as exc:
        return str(exc).replace(f" in {name}", "", 1)


def _grey(item: ImageLike, name: str) -> np.ndarray:
    """Grey levels 0-255 of a PIL image or an array (uint8 0-255, or floats 0-1), colour and transparency as for files."""
    if isinstance(item, Image.Image):
        return to_grey_array(item)
    pixels = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if pixels.dtype == bool or not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise DataError(f"{name} has {pixels.dtype} pixels; pass uint8 0-255 or floats 0-1")
    if np.issubdtype(pixels.dtype, np.floating):
        pixels = np.nan_to_num(pixels.astype(np.float32))
        if pixels.size and pixels.max() <= 1.0:  # floats 0-1, as torchvision's ToTensor gives
            pixels = pixels * 255.0
    if pixels.ndim == 3:
        return to_grey_array(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    if pixels.ndim != 2:
        raise DataError(f"{name} has shape {tuple(pixels.shape)}; pass H×W grey or H×W×3 colour pixels")
    return np.clip(pixels.astype(np.float32), 0, 255)
