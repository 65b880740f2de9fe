"""Bad input through the real CLI: one `error: ` line on stderr, exit status 2, no traceback, nothing written.

Every case runs in its own copy of the session's real smoke studies (tests/commands/conftest.py),
where a mistake could do damage: "unchanged" means every row of ./mnist-hpo.db and every file in
the folder (artifacts included) is exactly as before. Kaggle CSVs as real files come (a UTF-8 BOM,
CRLF line ends, blank lines) are accepted; values that are not pixels are refused with their line.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import optuna
import pytest
from outside import (
    Unchanged,
    copy_study,
    error_line,
    fixture_test_split,
    ok,
    read_submission,
    run,
    sqlite_url,
    trials_of,
    write_kaggle_test_csv,
)

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

SEARCH = ["search", "--study", "s", "--profile", "smoke"]

CASES = {  # name: (arguments, fragments of the one error line)
    "search --epochs 0": ([*SEARCH, "--epochs", "0"], ["--epochs must be at least 1, got 0"]),
    "search --max-params 0": ([*SEARCH, "--max-params", "0"], ["--max-params must be a positive number of parameters, got 0"]),
    "search --timeout 0": ([*SEARCH, "--timeout", "0"], ["--timeout must be positive seconds"]),
    "search --objectives foo": ([*SEARCH, "--objectives", "foo"], ["--objectives must be 'accuracy' or 'accuracy,params'", "'foo'"]),
    "cmaes with two objectives": (
        [*SEARCH, "--study", "new", "--sampler", "cmaes", "--objectives", "accuracy,params"],
        ["cmaes", "one objective", "nsga2"],
    ),
    "a study name with a slash": (["study", "create", "--study", "a/b", "--n-trials", "2"], ["study name 'a/b' cannot be used"]),
    "a study name of 500 characters": ([*SEARCH, "--study", "n" * 500], ["(500 characters)' cannot be used", "1-100 letters"]),
    "kernel size 4 in a space file": (
        [*SEARCH, "--study", "new", "--space", "k4.toml"],
        ["k4.toml: [kernel_size]: 4 is not a kernel size the network has", "choose from 3, 5, 7"],
    ),
    "an optimizer the trainer lacks": ([*SEARCH, "--study", "new", "--space", "lion.toml"], ["'lion' is not an optimizer"]),
    "a schedule the trainer lacks": (["study", "create", "--study", "new", "--space", "step.toml"], ["'step' is not a learning-rate"]),
    "--space on an existing study": ([*SEARCH, "--space", "narrow.toml", "--n-trials", "1"], ["study 's' exists with another space"]),
    "--profile on an existing study": (["search", "--study", "s", "--profile", "quick"], ["study 's' exists with profile 'smoke'"]),
    "a budget no command could queue": ([*SEARCH, "--n-trials", "1000000000000"], ["--n-trials 1,000,000,000,000 is more than"]),
    "search --workers 0": ([*SEARCH, "--workers", "0"], ["--workers must be at least 1, got 0"]),
    "search --max-retries -1": ([*SEARCH, "--max-retries", "-1"], ["--max-retries must be 0 or more, got -1"]),
    "search --gpus 9": ([*SEARCH, "--gpus", "9"], ["GPU"]),
    "worker --max-retries -1": (["worker", "--study", "s", "--max-retries", "-1"], ["--max-retries must be 0 or more, got -1"]),
    "predict with no input": (["predict", "--checkpoint", "best.pt"], ["give image files to label", "--kaggle-csv"]),
    "--kaggle-csv without --out": (["predict", "--checkpoint", "best.pt", "--kaggle-csv", "test.csv"], ["--kaggle-csv needs --out"]),
    "storage-proxy on a journal URL": (
        ["storage-proxy", "--storage", "journal:mnist-hpo.log"],
        ["serves an SQL storage", "journal:mnist-hpo.log"],
    ),
    "report --out a folder": (["report", "--study", "s", "--out", "mnist-hpo-artifacts"], ["mnist-hpo-artifacts"]),
    "ensemble --top-k 0": (["ensemble", "--study", "s", "--top-k", "0", "--out", "ensemble.pt"], ["--top-k must be at least 1, got 0"]),
    "export --format nosuch": (
        ["export", "--study", "s", "--out", "x.pt", "--format", "nosuch"],
        ["unknown export format 'nosuch'", "pt, safetensors, onnx"],
    ),
}


@pytest.fixture(scope="module")
def checkpoint(made_studies, tmp_path_factory) -> Path:
    """The best trial of the session's study, exported: a real checkpoint to predict with."""
    folder = copy_study(made_studies, tmp_path_factory.mktemp("export"))
    ok(run(folder, "export", "--study", "s", "--out", "best.pt"))
    return folder / "best.pt"


@pytest.fixture
def folder(studies, checkpoint) -> Path:
    (studies / "best.pt").write_bytes(checkpoint.read_bytes())
    images, _ = fixture_test_split()
    write_kaggle_test_csv(studies / "test.csv", images[:20])
    for name, table in SPACE_FILES.items():
        (studies / name).write_text(table)
    return studies


SPACE_FILES = {  # valid TOML and types, values no network builder or trainer accepts; and one that is fine
    "k4.toml": "[kernel_size]\nchoices = [3, 4]\n",
    "lion.toml": '[optimizer]\nchoices = ["adam", "lion"]\n',
    "step.toml": '[schedule]\nvalue = "step"\n',
    "narrow.toml": "[lr]\nlow = 1e-3\nhigh = 2e-3\n",
}


@pytest.mark.parametrize("args, fragments", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(folder, args, fragments):
    before = Unchanged(folder)
    error_line(run(folder, *args), *fragments)
    before.check()


def test_device_cuda_without_a_gpu(folder):
    before = Unchanged(folder)
    error_line(run(folder, *SEARCH, "--device", "cuda", CUDA_VISIBLE_DEVICES=""), "--device cuda", "no CUDA GPU is visible", "--device cpu")
    before.check()


@pytest.fixture(scope="module")
def proxy_on_a_taken_port(made_studies, tmp_path_factory):
    """`storage-proxy` on a port another socket listens on: (folder, port, the run, the folder before)."""
    folder = copy_study(made_studies, tmp_path_factory.mktemp("proxy"))
    before = Unchanged(folder)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(folder, "storage-proxy", "--storage", "sqlite:///mnist-hpo.db", "--port", str(port))
    return port, done, before


def test_storage_proxy_on_a_port_already_in_use(proxy_on_a_taken_port):
    port, done, before = proxy_on_a_taken_port
    error_line(done, f"port {port} on 127.0.0.1 is already in use", "pick another --port")
    before.check()


def test_export_of_a_pruned_trial_names_the_completed_ones(folder):
    trials = trials_of(sqlite_url(folder), "s")
    pruned = next(t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED)
    completed = ", ".join(str(t.number) for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    before = Unchanged(folder)
    error_line(
        run(folder, "export", "--study", "s", "--trial", str(pruned), "--out", "x.pt"),
        f"trial {pruned} of 's' did not complete",
        f"completed trials: {completed}",
    )
    before.check()


# ---------------------------------------------------------------------------------------------- Kaggle CSVs

HEADER = ",".join(f"pixel{i}" for i in range(784))


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> list[int]:
    """Labels of the first 20 fixture test digits from a plain, well-formed test.csv."""
    folder = tmp_path_factory.mktemp("plain")
    images, _ = fixture_test_split()
    write_kaggle_test_csv(folder / "test.csv", images[:20])
    ok(run(folder, "predict", "--checkpoint", str(checkpoint), "--kaggle-csv", "test.csv", "--out", "submission.csv"))
    return read_submission(folder / "submission.csv")


def rows(images: np.ndarray) -> list[str]:
    return [",".join(map(str, image.reshape(-1).tolist())) for image in images]


ACCEPTED = {  # what real files have: Excel's BOM, Windows line ends, blank lines
    "utf-8 BOM": lambda r: "\ufeff" + "\n".join([HEADER, *r]) + "\n",
    "CRLF": lambda r: "\r\n".join([HEADER, *r]) + "\r\n",
    "BOM and CRLF": lambda r: "\ufeff" + "\r\n".join([HEADER, *r]) + "\r\n",
    "trailing blank lines": lambda r: "\n".join([HEADER, *r]) + "\n\n\n",
    "a blank line between rows": lambda r: "\n".join([HEADER, *r[:10], "", *r[10:]]) + "\n",
}


@pytest.mark.parametrize("make", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_kaggle_csv_as_real_files_come_is_accepted(tmp_path, checkpoint, reference, make):
    images, _ = fixture_test_split()
    (tmp_path / "test.csv").write_bytes(make(rows(images[:20])).encode())
    ok(run(tmp_path, "predict", "--checkpoint", str(checkpoint), "--kaggle-csv", "test.csv", "--out", "submission.csv"))
    assert read_submission(tmp_path / "submission.csv") == reference


def with_cell(row: str, column: int, value: str) -> str:
    cells = row.split(",")
    cells[column - 1] = value
    return ",".join(cells)


REFUSED = {  # text of test.csv from 5 good rows -> fragments of the error line
    "a negative value": (
        lambda r: "\n".join([HEADER, *r[:3], with_cell(r[3], 300, "-5"), r[4]]) + "\n",
        ["test.csv line 5", "-5", "column 300", "0-255"],
    ),
    "non-numeric junk": (
        lambda r: "\n".join([HEADER, r[0], with_cell(r[1], 17, "abc"), *r[2:]]) + "\n",
        ["test.csv line 3", "'abc'", "column 17", "not an integer"],
    ),
    "a header only": (lambda r: HEADER + "\n", ["test.csv line 2", "no data rows"]),
    "a header only, CRLF": (lambda r: HEADER + "\r\n", ["test.csv line 2", "no data rows"]),
}


@pytest.mark.parametrize("make, fragments", list(REFUSED.values()), ids=list(REFUSED))
def test_kaggle_csv_that_is_not_pixels_is_refused_with_its_line(tmp_path, checkpoint, make, fragments):
    images, _ = fixture_test_split()
    (tmp_path / "test.csv").write_bytes(make(rows(images[:5])).encode())
    (tmp_path / "best.pt").write_bytes(checkpoint.read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    error_line(run(tmp_path, "predict", "--checkpoint", "best.pt", "--kaggle-csv", "test.csv", "--out", "submission.csv"), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no submission, no temporary file"


def test_kaggle_train_csv_with_bom_and_crlf_trains(tmp_path):
    """`train --data train.csv` reads Kaggle's labelled CSV as Excel saves it (BOM, CRLF)."""
    images, labels = fixture_test_split()
    header = "label," + HEADER
    body = [f"{label}," + row for label, row in zip(labels[:300].tolist(), rows(images[:300]))]
    (tmp_path / "train.csv").write_bytes(("\ufeff" + "\r\n".join([header, *body]) + "\r\n").encode())
    done = ok(run(tmp_path, "train", "--data", "train.csv", "--model", "tiny-cnn", "--epochs", "1"))
    assert "270 train / 30 validation images" in done.stdout.replace(",", ""), done.stdout


# ---------------------------------------------------------------------------------------------- storage faults


def damage(database: Path) -> bytes:
    """Overwrite 300 bytes in every other page past the schema: what a failing disk or a careless copy leaves."""
    data = bytearray(database.read_bytes())
    for offset in range(4096 * 3, len(data), 4096 * 2):
        data[offset + 100 : offset + 400] = b"\xff" * 300
    database.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize(
    "args",
    [["status"], ["status", "--study", "s"], [*SEARCH, "--n-trials", "1"], ["best", "--study", "s"]],
    ids=["status", "status --study", "search", "best"],
)
def test_a_damaged_database_is_one_line_that_says_how_to_salvage_it(folder, args):
    for wal in folder.glob("mnist-hpo.db-*"):
        wal.unlink()  # the session's copy is checkpointed: only the main file holds the study
    damaged = damage(folder / "mnist-hpo.db")
    error_line(run(folder, *args), "the study database is damaged (database disk image is malformed)", ".recover")
    assert (folder / "mnist-hpo.db").read_bytes() == damaged, "nothing was written into the damaged file"
