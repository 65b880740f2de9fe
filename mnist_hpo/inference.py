"""Predicting digits with any export (pt, safetensors, onnx, pt2): image files, or a Kaggle test.csv to a submission.

A photo or a scan of a digit does not look like MNIST, and a network trained on MNIST only knows
MNIST. ``preprocess_image`` therefore first finds the ink on the paper, whatever the light, a shadow
or the table beside the paper does, then repeats what LeCun et al. did to build the data set: white
ink on black, the digit scaled (antialiased, aspect ratio kept) to fit a 20×20 box, then placed in a
28×28 field so that its centre of mass is at the centre. Every problem is a ``UserError`` with a
one-line message naming the file and saying what to do; an answer not to trust says so (``doubt``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnist_hpo.data import IMAGE_SIDE, read_kaggle_csv, write_kaggle_submission
from mnist_hpo.errors import DataError
from mnist_hpo.exports import ExportedModel, open_export

__all__ = [
    "CONFIDENT",
    "NoDigitError",
    "Prediction",
    "classify",
    "predict_images",
    "predict_kaggle_csv",
    "predict_pixels",
    "preprocess_image",
]

#: MNIST digits fill a 20×20 box inside the 28×28 image (LeCun et al.).
DIGIT_BOX = 20
#: The centre of mass of an MNIST digit sits at pixel index 14 on both axes (measured on the fixture: 13.99, 14.00).
CENTRE = IMAGE_SIDE // 2
#: A pixel is ink for the bounding box when it is at least this bright after contrast stretching (0-255).
INK_THRESHOLD = 32
#: Fainter pixels are paper grain or JPEG ringing; they are set to background.
NOISE_FLOOR = 12
#: Less contrast than this between paper and the darkest/brightest stroke means there is no digit.
MIN_CONTRAST = 24
#: Photos are analysed at most this many pixels on their longer side (area-averaged); the digit ends up 20 px anyway.
WORK_SIDE = 1024
#: Blobs of ink smaller than this share of the largest are specks: paper grain, a table's texture, dust.
SPECK = 0.02
#: A prediction whose softmax probability is under this is reported as uncertain rather than as an answer.
CONFIDENT = 0.8
#: Files larger than this many pixels are refused before decoding (a 60 MP photo is plenty).
MAX_PIXELS = 64_000_000


class NoDigitError(DataError):
    """The image was read, but holds nothing that looks like a digit (blank, too faint, or specks only)."""


@dataclass(frozen=True)
class Prediction:
    """One image's most likely digit, the softmax probability the network gives it, and any reason to doubt it.

    ``doubt`` is empty for an answer to trust. Otherwise it says why not: the network is not sure
    (``probability`` under ``CONFIDENT``), or no digit was found in the image (``label`` None).
    """

    path: Path | str  # the image file, or "image N" for an image given in memory
    label: int | None
    probability: float
    doubt: str = ""

    @property
    def uncertain(self) -> bool:
        """True when the answer should not be trusted as it is (``doubt`` says why)."""
        return bool(self.doubt)


# ------------------------------------------------------------------------------------ preprocessing


def _open_greyscale(path: Path) -> np.ndarray:
    """Decode any PIL-readable image to float32 grey levels 0-255, transparency composited on white.

    Compositing on white matters: a PNG drawn with a black brush on a transparent canvas stores
    black ink on transparent black, which would otherwise come out as an all-black image.
    """
    if not path.exists():
        raise DataError(f"image {path} not found; check the path")
    if path.is_dir():
        raise DataError(f"image {path} is a folder; pass image files (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"image {path} is {img.width}×{img.height} pixels, too large; crop it around the digit first")
            img = ImageOps.exif_transpose(img)  # phone photos are stored sideways with a rotation tag
            img.load()
            return to_grey_array(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image PIL can read; pass a PNG, JPEG, BMP, GIF or TIFF file") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(f"cannot read image {path} ({reason}); re-save it as PNG or JPEG") from None


def to_grey_array(img: Image.Image) -> np.ndarray:
    """Any PIL image as float32 grey levels 0-255, transparency composited on white (see ``_open_greyscale``)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit and float greyscale
        grey = np.asarray(img, dtype=np.float32)
        if grey.size and grey.max() > 255:
            grey = grey * (255.0 / 65535.0)
        return np.clip(grey, 0, 255)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.float32)


def _ink(grey: np.ndarray) -> np.ndarray:
    """Ink strength 0-255 on a 0 background, whichever way round the digit was drawn.

    A photo is more than a digit on paper: the light is uneven, a shadow falls across it, the table
    shows along an edge. So the ink is measured against the paper as it is lit where the stroke is
    (``_background``), not against one paper level, and a strip or shadow along an edge stays
    background. The result is stretched so the strongest stroke is 255, as in MNIST, which undoes
    grey paper and faint pencil.
    """
    grey = _smoothed(_working_size(grey))
    if grey.size == 0 or float(grey.max() - grey.min()) < MIN_CONTRAST:
        return np.zeros_like(grey)
    paper = _dark_on_light(grey)
    background = _background(paper)
    ink = _digit_only(np.clip(background - paper, 0, None), on_paper=_paper(background))
    strongest = float(ink.max())
    if strongest < MIN_CONTRAST:
        return np.zeros_like(ink)
    ink = ink * (255.0 / strongest)
    ink[ink < NOISE_FLOOR] = 0
    return ink


def _working_size(grey: np.ndarray) -> np.ndarray:
    """Large photos are area-averaged down to ``WORK_SIDE``: the digit ends up 20 px high anyway."""
    h, w = grey.shape
    if max(h, w) <= WORK_SIDE:
        return grey
    scale = WORK_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32)).resize(size, Image.Resampling.BOX), np.float32)


def _smoothed(grey: np.ndarray) -> np.ndarray:
    """Sensor noise blurred away at the photo's own scale (a 400 px photo: σ = 1 px); small images are left alone."""
    sigma = max(grey.shape) / 400
    return ndimage.gaussian_filter(grey, sigma) if sigma >= 0.5 else grey


def _dark_on_light(grey: np.ndarray) -> np.ndarray:
    """The image turned, if need be, so that the ink is dark on light paper.

    Pen on paper, unless the picture is clearly the other way round (MNIST itself, chalk on a
    board): with Otsu's threshold splitting it into dark and light, most of its border is dark and
    so is its largest connected region. Either test alone goes wrong: the border (the old rule) when
    a table covers two sides, the largest region when a tight crop cuts the paper into pieces.
    """
    light = grey >= _otsu_threshold(grey)
    border = np.concatenate([light[0], light[-1], light[1:-1, 0], light[1:-1, -1]])
    if border.mean() >= 0.5 or _largest_region(light) >= _largest_region(~light):
        return grey
    return 255.0 - grey


def _otsu_threshold(grey: np.ndarray) -> float:
    counts, edges = np.histogram(grey, bins=256, range=(0.0, 256.0))
    levels = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    mass = np.cumsum(counts * levels)
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below - mass * below[-1]) ** 2 / (below * above)
    return float(levels[int(np.nanargmax(np.where(above > 0, between, np.nan)))] + 0.5)


def _largest_region(mask: np.ndarray) -> int:
    labels, count = ndimage.label(mask)
    return int(np.bincount(labels.ravel())[1:].max()) if count else 0


def _background(paper: np.ndarray) -> np.ndarray:
    """The paper without its ink: a grey closing with a square half as wide as the image.

    The closing fills every dark thing narrower than the square (strokes) and keeps whatever is
    wider or only changes slowly: uneven light, a shadow, the table beside the paper. The image is
    first padded with its edge values, so that a strip along an edge runs on outside the image and
    the square fits into it: an edge strip of any width stays background.
    """
    side = max(3, max(paper.shape) // 2)
    padded = np.pad(paper, side, mode="edge")
    closed = ndimage.grey_closing(padded, size=(side, side))
    return closed[side:-side, side:-side]


def _paper(background: np.ndarray) -> np.ndarray:
    """Where the paper is: the largest part of the background that no sharp step crosses.

    The edge of a table is such a step; light and shadow change gently across the paper.
    """
    step = ndimage.grey_dilation(background, size=(3, 3)) - ndimage.grey_erosion(background, size=(3, 3))
    labels, count = ndimage.label(step < MIN_CONTRAST)
    if count == 0:
        return np.ones(background.shape, bool)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    return ndimage.binary_dilation(labels == areas.argmax(), iterations=3)


def _digit_only(ink: np.ndarray, on_paper: np.ndarray) -> np.ndarray:
    """The ink without what is not the digit: blobs that lie mostly off the paper (a table's grain), and specks.

    A speck (paper grain, dust) is a blob under ``SPECK`` of the largest's area. Blobs touching the
    image's edge stay: a tight crop's strokes run to it.
    """
    labels, count = ndimage.label(ink >= ink.max() * (INK_THRESHOLD / 255), structure=np.ones((3, 3)))
    if count == 0 or ink.max() <= 0:
        return ink
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    off_paper = np.bincount(labels.ravel(), weights=~on_paper.ravel(), minlength=count + 1)
    drop = (areas < SPECK * areas[1:].max()) | (off_paper > areas / 2)
    drop[0] = False
    if not drop.any():
        return ink
    return np.where(ndimage.binary_dilation(drop[labels], iterations=2), 0.0, ink)


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Paste with clipping: a digit whose centre of mass is far off its box may overhang the field, as in MNIST."""
    h, w = patch.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if r0 < r1 and c0 < c1:
        canvas[r0:r1, c0:c1] = patch[r0 - top : r1 - top, c0 - left : c1 - left]


def normalise_digit(grey: np.ndarray, name: str | Path = "image") -> torch.Tensor:
    """The MNIST recipe on a greyscale array (0-255, any size): see ``preprocess_image``."""
    ink = _ink(np.asarray(grey, dtype=np.float32))
    rows = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        raise NoDigitError(f"no digit found in {name}: the image is blank or has too little contrast; pass a photo or scan of one digit")
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = digit.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    # Lanczos on a float image: antialiased when shrinking, sharp when enlarging; ringing is clipped.
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32)).resize(size, Image.Resampling.LANCZOS), dtype=np.float32
    )
    resized = np.clip(resized, 0, 255)
    if resized.sum() <= 0:
        raise NoDigitError(f"no digit found in {name}: the strokes vanish at 28×28; pass a larger or bolder digit")
    cy, cx = _centre_of_mass(resized)
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    _paste(canvas, resized, round(CENTRE - cy), round(CENTRE - cx))
    return torch.from_numpy(np.rint(canvas).astype(np.uint8))


def preprocess_image(path: Path) -> torch.Tensor:
    """Turn an image file of one digit into an MNIST-like uint8 28×28 tensor (ink 255, background 0).

    Steps: greyscale (transparency on white), the ink measured against the paper as lit around it
    (a shadow or the table along an edge stays background; see ``_ink``), inverted if dark on light,
    crop to the ink's bounding box, scale its larger side to 20 px keeping the aspect ratio, and place
    it so its centre of mass is at pixel (14, 14). Raises ``DataError`` naming the file when it
    cannot be read, ``NoDigitError`` (a ``DataError``) when it holds no digit.
    """
    path = Path(path)
    return normalise_digit(_open_greyscale(path), path)


# -------------------------------------------------------------------------------------- prediction


def classify(model: ExportedModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (int64) and their softmax probabilities (float32) for uint8 N×28×28 images, whatever the format."""
    probabilities = torch.softmax(model.logits(images), dim=1)
    best, labels = probabilities.max(dim=1)
    return labels, best


def predict_pixels(
    model_file: Path, images: torch.Tensor | np.ndarray, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and probabilities for uint8 N×28×28 images (0-255, as MNIST stores them), from any export."""
    # A copy: an array from PIL (np.asarray(image)) is read-only, which torch.as_tensor warns about.
    pixels = torch.tensor(images) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or tuple(pixels.shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"images must be uint8 N×28×28 pixels (0-255), got {pixels.dtype} {tuple(pixels.shape)}")
    return classify(open_export(Path(model_file), device), pixels)


def predict_images(checkpoint: Path, images: Sequence[Path], device: str | torch.device = "cpu") -> list[Prediction]:
    """Predict the digit in each image file, in the order given, with any export (pt, safetensors, onnx, pt2).

    The model is opened first, so a bad model file is reported before any image is decoded;
    then every image is preprocessed before inference, so one unreadable file fails the whole call
    with its name rather than printing half the answers. An image that reads but holds no digit,
    and an answer under ``CONFIDENT``, come back with their ``doubt`` instead.
    """
    paths = [Path(p) for p in images]
    model = open_export(Path(checkpoint), device)
    return predict_prepared(model, paths, [_prepared(p) for p in paths])


def predict_prepared(model: ExportedModel, names: Sequence[Path | str], prepared: Sequence[torch.Tensor | str]) -> list[Prediction]:
    """One batch through ``model``: each item is MNIST pixels (``normalise_digit``) or why it holds no digit."""
    digits = [x for x in prepared if isinstance(x, torch.Tensor)]
    labels, probabilities = classify(model, torch.stack(digits)) if digits else (torch.empty(0), torch.empty(0))
    answers = iter(zip(labels.tolist(), probabilities.tolist()))
    predictions = []
    for name, digit in zip(names, prepared):
        if isinstance(digit, str):
            predictions.append(Prediction(name, None, 0.0, digit))
            continue
        label, probability = next(answers)
        doubt = "" if probability >= CONFIDENT else f"the network is not sure (under {CONFIDENT:.2f}); crop the photo to the one digit"
        predictions.append(Prediction(name, int(label), float(probability), doubt))
    return predictions


def _prepared(path: Path) -> torch.Tensor | str:
    """The image as MNIST pixels, or why it holds no digit; a file that cannot be read raises."""
    try:
        return preprocess_image(path)
    except NoDigitError as exc:
        return str(exc).replace(f" in {path}", "", 1)


def predict_kaggle_csv(checkpoint: Path, csv_path: Path, out: Path, device: str | torch.device = "cpu") -> int:
    """Write a Kaggle Digit Recognizer submission for ``csv_path`` (test.csv) to ``out``; return the row count.

    Kaggle's test.csv images are already MNIST-style 28×28, so they go to the network as they are.
    ``out`` is written atomically (temporary file, then rename): on any failure it is left as it was.
    """
    checkpoint, csv_path, out = Path(checkpoint), Path(csv_path), Path(out)
    if out.is_dir():
        raise DataError(f"submission path {out} is a folder; pass a file name such as {out / 'submission.csv'}")
    if out.exists() and csv_path.exists() and os.path.samefile(out, csv_path):
        raise DataError(f"submission path {out} is the input {csv_path}; writing it would destroy test.csv, choose another --out")
    model = open_export(checkpoint, device)
    split = read_kaggle_csv(csv_path, labelled=False)
    labels, _ = classify(model, split.images)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_kaggle_submission(out, labels)
    except OSError as exc:
        raise DataError(f"cannot write submission {out} ({exc.strerror or exc}); choose a writable --out") from None
    return len(split)
