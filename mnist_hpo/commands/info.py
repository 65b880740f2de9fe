"""The small commands: `data fetch`, `data samples`, `models`, `summary`, `space show`."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from mnist_hpo.console import console
from mnist_hpo.errors import UserError


def fetch_data(root: Path | None) -> Path:
    from mnist_hpo import data

    root = data.fetch(root, log=console.print)
    console.print(f"MNIST is ready in {root} (torchvision.datasets.MNIST(root={str(root)!r}) reads it)")
    return root


#: Where `data samples` takes its digits from (--data), and how it names that split.
SAMPLE_SOURCES = {
    "mnist": "the MNIST test split",
    "fixture": "the bundled subset's test split (the first 1,000 MNIST test digits)",
}


def write_samples(out: Path, count: int, source: str) -> list[Path]:
    """Write the first ``count`` test digits as PNG files, the same as a Kaggle test.csv, and their labels.

    Real files to try `predict` on, from the test split: no training or search here ever sees it, so a
    network's answers on them mean something. The file names carry the true labels, to check by eye;
    labels.csv has them in a submission's format (ImageId,Label), to compare with one.
    """
    if count < 1:
        raise UserError(f"--count {count} must be at least 1")
    if source not in SAMPLE_SOURCES:
        raise UserError(f"--data {source!r} is not a source of test digits; use mnist or fixture")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the sample digits")
    from PIL import Image

    from mnist_hpo import data

    test = data.load_mnist(log=console.print)[1] if source == "mnist" else data.load_fixture()[1]
    if count > len(test):
        raise UserError(f"--count {count} is more than the {len(test):,} images of {SAMPLE_SOURCES[source]}")
    images, labels = test.images[:count], test.labels[:count].tolist()
    pngs = [out / f"test-{i:05d}-label-{label}.png" for i, label in enumerate(labels)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, image in zip(pngs, images):
            Image.fromarray(image.numpy()).save(path)
        data.write_kaggle_test_csv(out / "test.csv", images)
        data.write_kaggle_submission(out / "labels.csv", labels)
    except OSError as exc:
        raise UserError(f"cannot write the samples to {out} ({exc.strerror or exc}); choose a writable --out") from None
    console.print(f"wrote the first {count:,} digits of {SAMPLE_SOURCES[source]} to {out} (test digits: never trained on)")
    console.print(f"  {pngs[0].name}{' ... ' + pngs[-1].name if count > 1 else ''}: 28×28 PNG, white on black as MNIST stores them")
    console.print("  test.csv: the same images as a Kaggle Digit Recognizer test.csv; labels.csv: their labels (ImageId,Label)")
    console.print(f"try: mnist-hpo predict --checkpoint best.onnx {pngs[0]}")
    return [*pngs, out / "test.csv", out / "labels.csv"]


def list_models() -> None:
    from mnist_hpo.models import build_model, count_parameters, model_names, mult_adds

    table = Table("model", "parameters", "mult-adds / image")
    for name in model_names():
        model = build_model(name)
        table.add_row(name, f"{count_parameters(model):,}", f"{mult_adds(model):,}")
    console.print(table)


def show_summary(name: str) -> None:
    from mnist_hpo.models import build_model, summary_table

    console.print(summary_table(build_model(name)))


def show_space(profile_name: str | None, space_file: Path | None) -> None:
    """Print the effective space: the profile's narrowing plus the space file, if any."""
    from mnist_hpo.tuning import SearchRequest, resolve_profile
    from mnist_hpo.tuning.space import Space, load_space_file

    profile = resolve_profile(SearchRequest(profile=profile_name))
    console.print(f"profile {profile.name}: {profile.description}")
    space = load_space_file(space_file, Space().with_overrides(profile.space, origin=f"profile {profile.name}"))
    table = Table("parameter", "searched as", "published (trial 0)" if profile.baseline else "published (trial 0 with --baseline)")
    published = space.published()
    for name, description in space.describe():
        table.add_row(name, description, repr(published[name]) if name in published else "")
    console.print(table)
