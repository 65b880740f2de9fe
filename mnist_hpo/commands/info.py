"""The small commands: `data fetch`, `models`, `summary`, `space show`."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from mnist_hpo.console import console


def fetch_data(root: Path | None) -> Path:
    from mnist_hpo import data

    root = data.fetch(root, log=console.print)
    console.print(f"MNIST is ready in {root} (torchvision.datasets.MNIST(root={str(root)!r}) reads it)")
    return root


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
    from mnist_hpo.search import SearchRequest, resolve_profile
    from mnist_hpo.search.space import Space, load_space_file

    profile = resolve_profile(SearchRequest(profile=profile_name))
    console.print(f"profile {profile.name}: {profile.description}")
    space = load_space_file(space_file, Space().with_overrides(profile.space, origin=f"profile {profile.name}"))
    table = Table("parameter", "searched as", "published (trial 0)")
    published = space.published()
    for name, description in space.describe():
        table.add_row(name, description, repr(published[name]) if name in published else "")
    console.print(table)
