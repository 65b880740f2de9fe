"""Prediction on real MNIST digits rendered the ways people actually hand them in.

A small network is trained for three epochs on the bundled fixture (a few seconds on a CPU), so
"the prediction did not change" is a real test of preprocessing, not of a mock.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_hpo.checkpoints import CheckpointError, save_checkpoint
from mnist_hpo.data import load_fixture
from mnist_hpo.errors import DataError
from mnist_hpo.inference import Prediction, predict_images, predict_kaggle_csv, preprocess_image
from mnist_hpo.models import build_model
from mnist_hpo.trainer import TrainConfig, predict_logits, train

CPU = torch.device("cpu")
DIGITS = 10  # the first ten test digits: 7 2 1 0 4 1 4 9 5 9


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches on a small, shared CPU: two intra-op threads fight (a 3-epoch run measured 35 s
    with 2 threads against 3 s with 1), so this module runs single-threaded and then restores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture_data():
    return load_fixture()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixture_data):
    """A real checkpoint: tiny-cnn after 3 quick epochs on 4k fixture images, its epoch chosen on the other 1k (~2 s on one thread)."""
    train_split, _ = fixture_data
    fit, val = train_split.take(slice(0, 4000)), train_split.take(slice(4000, 5000))  # the test split is never looked at
    torch.manual_seed(0)
    model = build_model("tiny-cnn")
    config = TrainConfig(epochs=3, batch_size=50, lr=3e-3, seed=0, rotation=0, translation=0, ema_decay=0)
    result = train(model, fit, config, CPU, val=val)
    assert result.val_accuracy > 0.8
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, result.model, {"name": "tiny-cnn"}, {"val_accuracy": result.val_accuracy})
    return path, result.model


def labels_of(model, images: torch.Tensor) -> list[int]:
    return predict_logits(model, images, CPU).argmax(1).tolist()


def shifted_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Best Pearson correlation over ±1 px shifts: MNIST's own centring rounds the centre of mass,
    so a digit whose centre lies on a half pixel may legitimately land one pixel either way."""
    a = a.astype(np.float64)
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = np.roll(np.roll(b.astype(np.float64), dy, 0), dx, 1)
            best = max(best, float(np.corrcoef(a.ravel(), moved.ravel())[0, 1]))
    return best


# ---------------------------------------------------------------------------------- renderings


def _upscale(digit: np.ndarray, side: int) -> Image.Image:
    return Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)


def plain_png(digit: np.ndarray) -> Image.Image:
    return Image.fromarray(digit)  # white on black, exactly MNIST


def inverted_png(digit: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - digit)  # black ink on white paper


def large_inverted(digit: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - np.asarray(_upscale(digit, 200)))


def off_centre(digit: np.ndarray) -> Image.Image:
    """Dark digit near the top-right corner of a wide white page."""
    page = Image.new("L", (300, 180), 255)
    page.paste(Image.fromarray(255 - np.asarray(_upscale(digit, 84))), (200, 10))
    return page


def rgb_blue_ink(digit: np.ndarray) -> Image.Image:
    """Blue ballpoint on cream paper."""
    t = digit.astype(np.float32)[..., None] / 255.0
    paper, ink = np.array([250, 245, 225], np.float32), np.array([20, 40, 160], np.float32)
    return Image.fromarray((paper * (1 - t) + ink * t).astype(np.uint8), "RGB").resize((112, 112), Image.Resampling.BICUBIC)


def rgba_transparent(digit: np.ndarray) -> Image.Image:
    """Black brush on a transparent canvas: all pixels are black, only alpha carries the digit."""
    big = np.asarray(_upscale(digit, 140))
    rgba = np.zeros((*big.shape, 4), np.uint8)
    rgba[..., 3] = big
    return Image.fromarray(rgba, "RGBA")


def grey_pencil(digit: np.ndarray) -> Image.Image:
    """Faint pencil on grey paper: little contrast, still one digit."""
    return Image.fromarray((200 - np.asarray(_upscale(digit, 56)).astype(np.float32) * 0.4).astype(np.uint8))


def tight_crop(digit: np.ndarray) -> Image.Image:
    """Dark on white, cropped to the ink: strokes run to the edges, and the paper is left in pieces."""
    big = np.asarray(_upscale(digit, 200))
    rows, cols = np.flatnonzero((big > 40).any(axis=1)), np.flatnonzero((big > 40).any(axis=0))
    return Image.fromarray(255 - big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


RENDERINGS = {
    "plain.png": plain_png,
    "inverted.png": inverted_png,
    "large-200.png": large_inverted,
    "off-centre.png": off_centre,
    "rgb.png": rgb_blue_ink,
    "rgba.png": rgba_transparent,
    "pencil.png": grey_pencil,
    "photo.jpg": large_inverted,
    "scan.bmp": inverted_png,
    "tight-crop.png": tight_crop,
}


def save(image: Image.Image, path: Path) -> Path:
    if path.suffix == ".jpg":
        image.convert("RGB").save(path, quality=75)
    else:
        image.save(path)
    return path


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_rendered_digits_come_back_as_mnist(tmp_path, fixture_data, trained, name):
    _, test_split = fixture_data
    _, model = trained
    originals = test_split.images[:DIGITS]
    paths = [save(RENDERINGS[name](d.numpy()), tmp_path / f"{i}-{name}") for i, d in enumerate(originals)]
    processed = torch.stack([preprocess_image(p) for p in paths])

    assert processed.shape == (DIGITS, 28, 28) and processed.dtype == torch.uint8
    assert int(processed.amax()) == 255  # contrast stretched like MNIST
    correlations = [shifted_correlation(o.numpy(), p.numpy()) for o, p in zip(originals, processed)]
    assert min(correlations) > 0.8, correlations
    agree = sum(a == b for a, b in zip(labels_of(model, originals), labels_of(model, processed)))
    assert agree >= 9, f"{name}: only {agree}/10 predictions survive preprocessing"


def test_mnist_layout(tmp_path, fixture_data):
    """Larger side 20 px and centre of mass at (14, 14), wherever the digit was on the page."""
    digit = fixture_data[1].images[0].numpy()
    out = preprocess_image(save(off_centre(digit), tmp_path / "d.png")).numpy().astype(np.float64)
    rows, cols = np.nonzero(out >= 32)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
    r, c = np.indices(out.shape)
    assert abs((r * out).sum() / out.sum() - 14) <= 0.5
    assert abs((c * out).sum() / out.sum() - 14) <= 0.5


def test_tall_thin_digit_keeps_its_aspect_ratio(tmp_path):
    page = np.full((300, 300), 255, np.uint8)
    page[50:250, 140:160] = 0  # a "1": 200 tall, 20 wide
    out = preprocess_image(save(Image.fromarray(page), tmp_path / "one.png")).numpy()
    rows, cols = np.nonzero(out >= 128)
    assert np.ptp(rows) + 1 == 20
    assert np.ptp(cols) + 1 <= 3


def test_sixteen_bit_greyscale(tmp_path, fixture_data):
    digit = fixture_data[1].images[1].numpy()
    path = tmp_path / "deep.png"
    Image.fromarray(digit.astype(np.uint16) * 257).save(path)
    assert shifted_correlation(digit, preprocess_image(path).numpy()) > 0.8


# ------------------------------------------------------------------------------------- predicting


def test_predict_images(tmp_path, fixture_data, trained):
    ckpt, model = trained
    originals = fixture_data[1].images[:DIGITS]
    paths = [save(inverted_png(d.numpy()), tmp_path / f"{i}.png") for i, d in enumerate(originals)]
    predictions = predict_images(ckpt, paths)

    assert [p.path for p in predictions] == paths
    assert all(isinstance(p, Prediction) and isinstance(p.label, int) for p in predictions)
    expected = labels_of(model, torch.stack([preprocess_image(p) for p in paths]))
    assert [p.label for p in predictions] == expected
    # each probability is the softmax of its image's chosen class
    logits = predict_logits(model, torch.stack([preprocess_image(p) for p in paths]), CPU)
    probabilities = torch.softmax(logits, 1)
    assert [p.probability for p in predictions] == pytest.approx(probabilities.max(1).values.tolist(), rel=1e-5)
    assert [p.probability for p in predictions] == pytest.approx(
        [probabilities[i, p.label].item() for i, p in enumerate(predictions)], rel=1e-5
    )
    assert predict_images(ckpt, []) == []


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_text_file_named_png(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("not a picture\n")
    with pytest.raises(DataError) as exc:
        preprocess_image(path)
    assert "not an image" in one_line_naming(exc, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(DataError) as exc:
        preprocess_image(path)
    assert "not found" in one_line_naming(exc, path)


def test_folder_instead_of_image(tmp_path):
    with pytest.raises(DataError) as exc:
        preprocess_image(tmp_path)
    one_line_naming(exc, tmp_path)


def test_truncated_png(tmp_path, fixture_data):
    buf = io.BytesIO()
    _upscale(fixture_data[1].images[0].numpy(), 200).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as exc:
        preprocess_image(path)
    one_line_naming(exc, path)


@pytest.mark.parametrize("colour", [255, 0, 128])
def test_blank_image(tmp_path, colour):
    path = save(Image.new("RGB", (64, 48), (colour,) * 3), tmp_path / "blank.png")
    with pytest.raises(DataError) as exc:
        preprocess_image(path)
    assert f"no digit found in {path}" in one_line_naming(exc, path)


def test_predict_images_reports_the_bad_file(tmp_path, fixture_data, trained):
    ckpt, _ = trained
    good = save(plain_png(fixture_data[1].images[0].numpy()), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as exc:
        predict_images(ckpt, [good, bad])
    one_line_naming(exc, bad)


# ----------------------------------------------------------------------------------------- Kaggle


def write_test_csv(path: Path, images: torch.Tensor) -> Path:
    rows = [",".join(f"pixel{i}" for i in range(784))]
    rows += [",".join(map(str, img.flatten().tolist())) for img in images]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_kaggle_submission(tmp_path, fixture_data, trained):
    ckpt, model = trained
    images = fixture_data[1].images[100:150]
    csv_path = write_test_csv(tmp_path / "test.csv", images)
    out = tmp_path / "sub" / "submission.csv"

    assert predict_kaggle_csv(ckpt, csv_path, out) == 50
    lines = out.read_text().splitlines()
    assert lines[0] == "ImageId,Label"
    rows = [tuple(map(int, line.split(","))) for line in lines[1:]]
    assert [r[0] for r in rows] == list(range(1, 51))
    assert [r[1] for r in rows] == labels_of(model, images)
    assert sorted(os.listdir(out.parent)) == ["submission.csv"]  # no temporary files left


def test_kaggle_bad_row_writes_nothing(tmp_path, fixture_data, trained):
    ckpt, _ = trained
    csv_path = write_test_csv(tmp_path / "test.csv", fixture_data[1].images[:5])
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # the third image (line 4) loses a pixel
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "submission.csv"
    with pytest.raises(DataError) as exc:
        predict_kaggle_csv(ckpt, csv_path, out)
    assert "line 4" in one_line_naming(exc, csv_path)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["test.csv"]


def test_kaggle_failure_keeps_the_old_submission(tmp_path, fixture_data, trained):
    ckpt, _ = trained
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")  # a train.csv header
    out = tmp_path / "submission.csv"
    out.write_text("ImageId,Label\n1,3\n")
    with pytest.raises(DataError):
        predict_kaggle_csv(ckpt, csv_path, out)
    assert out.read_text() == "ImageId,Label\n1,3\n"


def test_kaggle_refuses_to_overwrite_its_input(tmp_path, fixture_data, trained):
    ckpt, _ = trained
    csv_path = write_test_csv(tmp_path / "test.csv", fixture_data[1].images[:3])
    before = csv_path.read_bytes()
    with pytest.raises(DataError):
        predict_kaggle_csv(ckpt, csv_path, csv_path)
    assert csv_path.read_bytes() == before


# ------------------------------------------------------------------------------------ checkpoints


def test_corrupt_checkpoint(tmp_path, fixture_data):
    ckpt = tmp_path / "random.pt"
    ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    image = save(plain_png(fixture_data[1].images[0].numpy()), tmp_path / "d.png")
    with pytest.raises(CheckpointError) as exc:
        predict_images(ckpt, [image])
    one_line_naming(exc, ckpt)


def test_foreign_torch_file(tmp_path, fixture_data):
    ckpt = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, ckpt)
    csv_path = write_test_csv(tmp_path / "test.csv", fixture_data[1].images[:3])
    with pytest.raises(CheckpointError) as exc:
        predict_kaggle_csv(ckpt, csv_path, tmp_path / "submission.csv")
    assert "not an mnist-hpo checkpoint" in one_line_naming(exc, ckpt)
    assert not (tmp_path / "submission.csv").exists()


def test_truncated_checkpoint(tmp_path, fixture_data, trained):
    ckpt, _ = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:2000])
    image = save(plain_png(fixture_data[1].images[0].numpy()), tmp_path / "d.png")
    with pytest.raises(CheckpointError) as exc:
        predict_images(cut, [image])
    one_line_naming(exc, cut)


def test_missing_checkpoint(tmp_path, fixture_data):
    image = save(plain_png(fixture_data[1].images[0].numpy()), tmp_path / "d.png")
    with pytest.raises(CheckpointError) as exc:
        predict_images(tmp_path / "none.pt", [image])
    one_line_naming(exc, tmp_path / "none.pt")
