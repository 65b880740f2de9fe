"""Regenerate mnist_hpo/fixtures/mnist-subset.npz from real MNIST (fetched if needed).

The fixture is the first 5,000 official training images and the first 1,000 test images, so
tests and demos run on real digits without a download. Usage: python scripts/make_fixture.py [ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_hpo import data


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    train, test = data.load_mnist(root, fetch_if_missing=True)
    out = Path(data.__file__).parent / data.FIXTURE_RESOURCE
    out.parent.mkdir(parents=True, exist_ok=True)
    data.save_fixture(out, train, test)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
