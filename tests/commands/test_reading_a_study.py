"""What users do with a finished study, through the real CLI: status, best --test, export, ensemble, predict, retrain, report.

Every figure a command prints is checked against an independent source: Optuna's own reading of
the study, the checkpoint file loaded with torch.load(weights_only=True), or the predictions of the
exported model on the fixture's real test digits (`predict --kaggle-csv`) scored here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from outside import (
    Unchanged,
    completed_by_validation,
    copy_study,
    error_line,
    fixture_test_split,
    load,
    ok,
    read_submission,
    run,
    sqlite_url,
    trials_of,
    write_kaggle_test_csv,
)
from PIL import Image

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

TrialState = optuna.trial.TrialState


def table_rows(text: str) -> dict[str, list[str]]:
    """The body rows of a rich table, by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def scored_accuracy(checkpoint: Path, folder: Path) -> float:
    """A checkpoint's accuracy on the fixture's 1,000 test digits, from its own `predict --kaggle-csv` submission."""
    images, labels = fixture_test_split()
    csv = write_kaggle_test_csv(folder / "test.csv", images)
    ok(run(folder, "predict", "--checkpoint", str(checkpoint), "--kaggle-csv", str(csv), "--out", "scored.csv"))
    return float(np.mean(np.array(read_submission(folder / "scored.csv")) == labels))


PREDICTION = re.compile(r"^(?P<path>\S+): (?P<label>\d) \(probability (?P<probability>[01]\.\d{3})\)(?: uncertain: .+)?$")


def predictions(done, paths: list[Path]) -> list[tuple[int, float]]:
    """(label, probability) per image from `predict`'s output, in the order given."""
    found = {}
    for line in done.stdout.splitlines():
        match = PREDICTION.match(line.strip())
        if match:
            found[match["path"]] = (int(match["label"]), float(match["probability"]))
    assert sorted(found) == sorted(str(p) for p in paths), done.stdout
    return [found[str(p)] for p in paths]


# ---------------------------------------------------------------------------------------------- status


def status_rows(text: str) -> dict[str, list[str]]:
    """`status`'s rows by study name (the last cell, printed whole), after its header."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[0] == ["trials", "complete", "pruned", "running", "waiting", "failed", "best", "validation", "study"], text
    return {cells[-1]: cells[:-1] for cells in lines[1:]}


def test_status_of_all_studies(studies):
    done = ok(run(studies, "status"))
    rows = status_rows(done.stdout)
    assert sorted(rows) == ["mo", "s"], done.stdout
    for name in ("s", "mo"):
        trials = trials_of(sqlite_url(studies), name)
        count = lambda state, trials=trials: str(sum(1 for t in trials if t.state == state))  # noqa: E731
        best = max(t.values[0] for t in trials if t.state == TrialState.COMPLETE)
        assert rows[name] == [
            str(len(trials)),
            count(TrialState.COMPLETE),
            count(TrialState.PRUNED),
            count(TrialState.RUNNING),
            count(TrialState.WAITING),
            count(TrialState.FAIL),
            percent(best),
        ], (name, done.stdout)


def test_status_prints_long_study_names_whole_in_a_terminal_and_piped(studies):
    """The name is what every other command needs: at 80 columns, in a real terminal or piped, it is never cut."""
    long_name = "mnist-smoke-retrained-on-the-full-data-with-a-wider-space-v2"
    url = sqlite_url(studies)  # this test's own copy
    optuna.copy_study(from_study_name="s", from_storage=url, to_storage=url, to_study_name=long_name)
    piped = ok(run(studies, "status", COLUMNS="80"))
    assert status_rows(piped.stdout)[long_name] == status_rows(piped.stdout)["s"], piped.stdout
    terminal = in_terminal(studies, "status", columns=80)
    assert long_name in terminal.replace("\r\n", ""), terminal  # the terminal may wrap the row; the name's characters are all there
    assert "…" not in terminal, terminal


def in_terminal(cwd: Path, *args: str, columns: int) -> str:
    """`mnist-hpo ARGS` on a real pseudo-terminal of ``columns`` columns, its screen output as text."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from outside import CLI, cli_env

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {key: value for key, value in cli_env().items() if key not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=120) == 0, b"".join(chunks)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())


def test_status_of_a_single_process_study(studies):
    before = Unchanged(studies)
    done = ok(run(studies, "status", "--study", "s"))
    trials = trials_of(sqlite_url(studies), "s")
    first = done.stdout.splitlines()[0]
    for state in TrialState:
        assert f"{sum(1 for t in trials if t.state == state)} {state.name.lower()}" in first, first
    assert "profile smoke, objectives accuracy, 2 epochs max, data fixture (2,000 train / 1,000 validation" in done.stdout
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    pruned = sum(1 for t in finished if t.state == TrialState.PRUNED)
    assert (
        f"budget {len(finished)} trials: {len(finished)} finished ({len(finished) - pruned} complete, {pruned} pruned), "
        "0 running, 0 waiting, 0 failed (not counted)"
    ) in done.stdout, "a plain `search` study has a budget, met"
    best = completed_by_validation(trials)[0]
    assert (
        f"best trial {best.number}: validation accuracy {percent(best.value)}, {best.user_attrs['parameters']:,} parameters" in done.stdout
    )
    for name, value in best.params.items():
        assert f"  {name} = {value}" in done.stdout
    before.check()


def test_status_of_a_multi_objective_study_shows_its_pareto_front(studies):
    done = ok(run(studies, "status", "--study", "mo"))
    study = load(sqlite_url(studies), "mo")
    assert "objectives accuracy,params" in done.stdout
    shown = re.findall(r"^  trial (\d+): validation accuracy ([\d.]+)%, ([\d,]+) parameters$", done.stdout, re.MULTILINE)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    assert front and [int(n) for n, _, _ in shown] == [t.number for t in front], done.stdout
    for (_, accuracy, parameters), trial in zip(shown, front):
        assert (
            accuracy == f"{100 * trial.values[0]:.2f}"
            and int(parameters.replace(",", "")) == trial.values[1] == trial.user_attrs["parameters"]
        )


# ------------------------------------------------------------------------------------- best --test, report


def test_best_test_records_the_test_accuracy_and_the_report_shows_it(studies):
    url = sqlite_url(studies)
    assert "test_accuracy" not in load(url, "s").user_attrs, "no test figure before it is asked for"
    done = ok(run(studies, "best", "--study", "s", "--test"))
    best = completed_by_validation(trials_of(url, "s"))[0]
    assert f"best trial (chosen on validation) {best.number}: validation accuracy {percent(best.value)}" in done.stdout
    recorded = load(url, "s").user_attrs["test_accuracy"]
    assert list(recorded) == [str(best.number)], recorded
    measured = recorded[str(best.number)]
    assert f"test accuracy {percent(measured)} (1,000 test images), reported only" in done.stdout, done.stdout

    ok(run(studies, "export", "--study", "s", "--out", "best.pt"))
    assert torch.load(studies / "best.pt", weights_only=True)["trial"] == best.number
    assert abs(scored_accuracy(studies / "best.pt", studies) - measured) <= 0.0011, "best --test measured another model or split"

    ok(run(studies, "report", "--study", "s", "--out", "after.html"))
    html = (studies / "after.html").read_text()
    assert f'<span class="split">test</span> {percent(measured)} (measured once, after selection)' in html
    assert "not measured" not in html
    baseline = next(t for t in trials_of(url, "s") if t.user_attrs.get("published_baseline"))
    if baseline.number != best.number:  # the report compares the best with the baseline, as the console summary does
        gain = f"{100 * (best.value - baseline.value):+.2f} pp validation accuracy against it"
        assert f"against the published baseline (trial {baseline.number}): {gain}" in html, html[:3000]
    else:
        assert "the best trial is the published baseline itself" in html


# ------------------------------------------------------------------------------------ ensemble and predict


def digit_pngs(folder: Path, count: int) -> list[Path]:
    images, _ = fixture_test_split()
    paths = []
    for index in range(count):
        path = folder / f"digit-{index}.png"
        Image.fromarray(images[index]).resize((56, 56), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def test_ensemble_predicts_the_mean_of_its_members_softmax(studies):
    url = sqlite_url(studies)
    members = [t.number for t in completed_by_validation(trials_of(url, "s"))[:2]]
    done = ok(run(studies, "ensemble", "--study", "s", "--top-k", "2", "--out", "ensemble.pt"))
    rows = table_rows(done.stdout)
    assert [name for name in rows if name.startswith("trial ")] == [f"trial {n}" for n in members], done.stdout
    assert "ensemble of 2" in rows

    ensemble = torch.load(studies / "ensemble.pt", weights_only=True)
    assert ensemble["model_spec"]["name"] == "ensemble" and ensemble["trials"] == members
    assert rows["ensemble of 2"] == [percent(ensemble["metrics"]["val_accuracy"]), percent(ensemble["metrics"]["test_accuracy"])]
    for index, number in enumerate(members):  # each member is that trial's checkpoint, as `export --trial` writes it
        ok(run(studies, "export", "--study", "s", "--trial", str(number), "--out", f"member-{number}.pt"))
        member = torch.load(studies / f"member-{number}.pt", weights_only=True)
        assert ensemble["model_spec"]["members"][index] == member["model_spec"]
        prefix = f"members.{index}."
        own = {k[len(prefix) :]: v for k, v in ensemble["state_dict"].items() if k.startswith(prefix)}
        assert own.keys() == member["state_dict"].keys() and all(torch.equal(own[k], member["state_dict"][k]) for k in own)

    paths = digit_pngs(studies, 30)
    names = [str(p.name) for p in paths]
    together = predictions(ok(run(studies, "predict", "--checkpoint", "ensemble.pt", *names)), names)
    alone = [predictions(ok(run(studies, "predict", "--checkpoint", f"member-{n}.pt", *names)), names) for n in members]
    agreed = [i for i in range(len(paths)) if alone[0][i][0] == alone[1][i][0]]
    assert len(agreed) >= 10, alone
    for i in agreed:  # both members' top class: the ensemble's probability of it is their mean (printed to 3 decimals)
        assert together[i][0] == alone[0][i][0]
        assert together[i][1] == pytest.approx((alone[0][i][1] + alone[1][i][1]) / 2, abs=0.0011), (
            i,
            together[i],
            alone[0][i],
            alone[1][i],
        )
    assert max(abs(alone[0][i][1] - alone[1][i][1]) for i in agreed) > 0.02, "the members agree too closely to tell a mean from either one"


# --------------------------------------------------------------------------------------- train --from-study


@pytest.fixture(scope="module")
def retrained(made_studies, tmp_path_factory):
    """`train --from-study s` with options that change the trial's settings, once, on a copy: (folder, output, the study before)."""
    folder = copy_study(made_studies, tmp_path_factory.mktemp("retrain"))
    before = Unchanged(folder)
    done = ok(run(folder, "train", "--from-study", "s", *RETRAIN_OPTIONS, "--save", "retrained.pt"))
    return folder, done, before


RETRAIN_OPTIONS = ("--epochs", "1", "--subset", "1500", "--lr", "0.002", "--batch-size", "100", "--seed", "3", "--threads", "1")


def test_train_from_study_retrains_the_best_on_train_and_validation(retrained):
    folder, done, before = retrained
    url = sqlite_url(folder)
    best = completed_by_validation(trials_of(url, "s"))[0]
    source = load(url, "s").user_attrs["data_source"]
    train, val = (int(n.replace(",", "")) for n in re.search(r"\(([\d,]+) train / ([\d,]+) validation", source).groups())
    assert train > 1500, source  # --subset really shrinks the study's training split
    assert (
        f"retraining trial {best.number}'s configuration (chosen on validation) on train + validation "
        f"({1500 + val:,} images from fixture) for 1 epoch on cpu (1 thread); the last epoch is kept; "
        "changed from the trial: epochs 1, batch_size 100, lr 0.002, seed 3"
    ) in done.stdout, done.stdout
    assert "epoch 1/1  train loss" in done.stdout and "epoch 2/" not in done.stdout
    final = (
        float(re.search(r"^test accuracy ([\d.]+)% \(1,000 test images\) of the last epoch's weights", done.stdout, re.M).group(1)) / 100
    )

    saved = torch.load(folder / "retrained.pt", weights_only=True)
    assert saved["model_spec"] == best.user_attrs["model_spec"] and saved["trial"] == best.number and saved["study"] == "s"
    trial_config = best.user_attrs["train_config"]
    assert saved["train_config"] == {**trial_config, "epochs": 1, "batch_size": 100, "lr": 0.002, "seed": 3}, "every option applied"
    assert saved["changed_from_trial"] == {"epochs": 1, "batch_size": 100, "lr": 0.002, "seed": 3}
    assert saved["data"] == {"source": "fixture", "train_images": 1500 + val, "validation_images": 0, "test_images": 1000}
    assert saved["metrics"] == {"test_accuracy": pytest.approx(final, abs=0.00005)}, (
        "no validation split is left to measure after training on it"
    )
    before.check("retrained.pt")
    assert abs(scored_accuracy(folder / "retrained.pt", folder) - final) <= 0.0011


def test_train_from_study_trains_on_other_data_when_asked_and_refuses_what_the_trial_defines(made_studies, tmp_path):
    """`--data` replaces the study's data (here a Kaggle train.csv, which has no test split); --model and --recipe are refused."""
    folder = copy_study(made_studies, tmp_path)
    images, labels = fixture_test_split()
    rows = np.concatenate([labels[:600, None], images[:600].reshape(600, -1)], axis=1)
    np.savetxt(
        folder / "train.csv", rows, fmt="%d", delimiter=",", header="label," + ",".join(f"pixel{i}" for i in range(784)), comments=""
    )
    before = Unchanged(folder)
    done = ok(run(folder, "train", "--from-study", "s", "--data", "train.csv", "--epochs", "1", "--save", "kaggle.pt"))
    assert f"on train + validation (600 images from {folder / 'train.csv'})" in done.stdout, done.stdout
    assert "has no test split: the retrained weights are not scored" in done.stdout and "test accuracy" not in done.stdout
    saved = torch.load(folder / "kaggle.pt", weights_only=True)
    assert saved["data"]["source"] == str(folder / "train.csv") and saved["data"]["train_images"] == 600 and saved["metrics"] == {}
    before.check("kaggle.pt")
    for option in (("--model", "m3"), ("--recipe", "paper")):
        line = error_line(run(folder, "train", "--from-study", "s", *option), f"{option[0]} cannot be used with --from-study")
        assert "drop" in line, line
    error_line(run(folder, "train", "--storage", sqlite_url(folder)), "--storage only applies with --from-study")
    before.check("kaggle.pt")


def test_train_from_study_save_says_where_it_wrote(retrained):
    _, done, _ = retrained
    assert re.search(r"saved checkpoint retrained\.pt \(sha256 [0-9a-f]{64}\)", done.stdout), done.stdout
