"""A PBT study's population over time, drawn in the report and the study's note, checked against its trials.

One real PBT study (smoke profile: 4 members, 3 epochs, an exploit step every epoch, so the bottom
member copies the top one in generations 1 and 2) and one plain study, made once per run through the
CLI. What `mnist-hpo report` draws is read back out of its HTML (plotly's figure data) and compared
with the trials read through Optuna: one line per member made of its segments' validation accuracies,
one dashed jump per segment that copied another member (from the donor's last point to the copy's
first), the best trial's schedule equal to its lineage's parameters. The note's PNG is checked from
outside (artifacts, note, size) and through its drawing's lines. The rest are small synthetic cases:
a retried segment, a copy that has not trained an epoch yet, a generation that two segments end at once.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from optuna_dashboard import get_note
from outside import completed_by_validation, copy_study, made_once, ok, run, sqlite_url, trials_of
from PIL import Image

from mnist_hpo.dashboards import figures, notes, population

PBT, PLAIN, MEMBERS, EPOCHS = "pbt", "plain", 4, 3
ARTIFACTS = "mnist-hpo-artifacts"


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(folder: Path) -> None:
        common = ("--profile", "smoke", "--seed", "0")
        ok(run(folder, "search", *common, "--pbt", "--population", str(MEMBERS), "--epochs", str(EPOCHS), "--study", PBT))
        ok(run(folder, "search", *common, "--n-trials", "2", "--epochs", "1", "--study", PLAIN))

    return made_once(tmp_path_factory, "population-picture", make)


def segment(trial: optuna.trial.FrozenTrial) -> dict:
    return trial.user_attrs["pbt_segment"]


def lineage(trials: list[optuna.trial.FrozenTrial], number: int) -> list[optuna.trial.FrozenTrial]:
    """The segments that made trial ``number``'s weights, first to last, following each segment's documented source."""
    by_number = {t.number: t for t in trials}
    chain = [by_number[number]]
    while segment(chain[-1])["source"] is not None:
        chain.append(by_number[segment(chain[-1])["source"]])
    return chain[::-1]


def plotly_data(document: str, div_id: str) -> list[dict]:
    """The traces of the report's plotly figure ``div_id``, as plotly's HTML passes them to Plotly.newPlot."""
    found = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', document)
    assert found, f"no figure {div_id} in the report"
    return json.JSONDecoder().raw_decode(document, found.end())[0]


def report(folder: Path, study: str, out: Path) -> str:
    done = ok(
        run(
            out.parent,
            "report",
            "--study",
            study,
            "--storage",
            sqlite_url(folder),
            "--artifacts",
            str(folder / ARTIFACTS),
            "--out",
            str(out),
        )
    )
    assert f"wrote {out}" in done.stdout
    return out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_report_draws_each_member_every_exploit_and_the_best_schedule(studies, tmp_path):
    folder = copy_study(studies, tmp_path)  # `report` opens the database: never the shared one
    document = report(folder, PBT, tmp_path / "report.html")
    trials = [t for t in trials_of(sqlite_url(folder), PBT) if t.state == TrialState.COMPLETE]
    assert "<h2>The population</h2>" in document and "population-based training" in document
    traces = plotly_data(document, "plot-population")

    lines = {t["meta"]["member"]: t for t in traces if (t.get("meta") or {}).get("kind") == "member"}
    assert sorted(lines) == list(range(MEMBERS))  # one line per member
    for member, line in lines.items():
        mine = sorted(
            (p["epoch"], 100 * p["val_accuracy"]) for t in trials if segment(t)["member"] == member for p in t.user_attrs["learning_curve"]
        )
        drawn = [(x, y) for x, y in zip(line["x"], line["y"], strict=True) if x is not None]
        assert [x for x, _ in drawn] == [e for e, _ in mine] and [y for _, y in drawn] == pytest.approx([a for _, a in mine])
        breaks = sum(x is None for x in line["x"])  # the line breaks where the member copied another
        assert breaks == sum(segment(t)["member"] == member and segment(t)["donor"] is not None for t in trials)

    copied = {t.number: t for t in trials if segment(t)["donor"] is not None}
    assert copied, "the bottom member copies the top one in every generation after the first"
    jumps = [t for t in traces if (t.get("meta") or {}).get("kind") == "exploit"]
    assert sorted(j["meta"]["trial"] for j in jumps) == sorted(copied)  # one dashed jump per copy
    by_number = {t.number: t for t in trials}
    for jump in jumps:
        copy = copied[jump["meta"]["trial"]]
        source = by_number[segment(copy)["source"]]
        assert jump["line"]["dash"] == "dash" and jump["meta"]["donor"] == segment(copy)["donor"] == segment(source)["member"]
        assert jump["x"] == [segment(source)["last_epoch"], segment(copy)["first_epoch"]]
        first, last = copy.user_attrs["learning_curve"][0], source.user_attrs["learning_curve"][-1]
        assert jump["y"] == pytest.approx([100 * last["val_accuracy"], 100 * first["val_accuracy"]])

    best = completed_by_validation(trials)[0]
    schedule = {t["meta"]["param"]: t for t in plotly_data(document, "plot-schedule") if (t.get("meta") or {}).get("kind") == "schedule"}
    chain = lineage(trials, best.number)
    epochs = [(e, t) for t in chain for e in range(segment(t)["first_epoch"], segment(t)["last_epoch"] + 1)]
    assert schedule["lr"]["x"] == [e for e, _ in epochs] == list(range(1, EPOCHS + 1))
    assert schedule["lr"]["y"] == [t.params["lr"] for _, t in epochs]
    assert schedule["dropout_in"]["y"] == [t.params["dropout_in"] for _, t in epochs]
    assert f"trial {best.number}&#x27;s schedule" in document or f"trial {best.number}'s schedule" in document


@pytest.mark.slow
def test_a_plain_studys_report_and_note_have_no_population(studies, tmp_path):
    folder = copy_study(studies, tmp_path)
    document = report(folder, PLAIN, tmp_path / "plain.html")
    assert "plotly-graph-div" in document  # the search's own figures are there
    assert "The population" not in document and "plot-population" not in document and "population-based" not in document
    study = optuna.load_study(study_name=PLAIN, storage=sqlite_url(studies))
    assert notes.POPULATION_HEADING not in get_note(study) and "population" not in get_note(study).lower()
    assert optuna.artifacts.get_all_artifact_meta(study) == []


@pytest.mark.slow
def test_the_study_note_shows_the_population_after_the_last_generation(studies, tmp_path):
    url = sqlite_url(studies)
    study = optuna.load_study(study_name=PBT, storage=url)
    metas = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(study)}
    assert sorted(metas) == [f"population-generation-{g}.png" for g in range(EPOCHS)]  # one per generation (1 epoch each)
    note = get_note(study)
    study_id = optuna.storages.RDBStorage(url).get_study_id_from_name(PBT)
    latest = metas[f"population-generation-{EPOCHS - 1}.png"]
    assert (
        f"{notes.POPULATION_HEADING}\n\n![study {PBT}: {MEMBERS} members after generation {EPOCHS - 1} (epoch {EPOCHS} of {EPOCHS})]"
        in note
    )
    assert f"](/artifacts/{study_id}/{latest.artifact_id})" in note and note.count("](/artifacts/") == 1
    assert "population-based training" in note and "validation accuracy" in note
    path = tmp_path / "population.png"
    optuna.artifacts.download_artifact(
        artifact_store=optuna.artifacts.FileSystemArtifactStore(str(studies / ARTIFACTS)),
        artifact_id=latest.artifact_id,
        file_path=str(path),
    )
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    assert image.format == "PNG" and image.size == figures.SIZES[figures.POPULATION] and latest.mimetype == "image/png"


@pytest.mark.slow
def test_the_note_picture_draws_each_member_every_exploit_and_the_copies_in_a_schedule(studies):
    trials = trials_of(sqlite_url(studies), PBT)
    copies = [t for t in trials if segment(t)["donor"] is not None]
    copy = max(copies, key=lambda t: segment(t)["generation"])  # its schedule holds a copy
    drawn = population.draw(population.read(trials, best=copy.number))
    axes, rate_axes, dropout_axes = drawn.axes
    gids = [line.get_gid() for line in axes.lines]
    assert {g for g in gids if g and g.startswith("member ")} == {f"member {m}" for m in range(MEMBERS)}
    assert gids.count(population.EXPLOIT_GID) == len(copies)
    rate = next(line for line in rate_axes.lines if line.get_gid() == "lr")
    chain = lineage(trials, copy.number)
    assert list(rate.get_ydata()) == [t.params["lr"] for t in chain for _ in range(segment(t)["first_epoch"], segment(t)["last_epoch"] + 1)]
    dropout = next(line for line in dropout_axes.lines if line.get_gid() == "dropout_in")
    assert list(dropout.get_ydata()) == [
        t.params["dropout_in"] for t in chain for _ in range(segment(t)["first_epoch"], segment(t)["last_epoch"] + 1)
    ]
    copied_at = [line.get_xdata()[0] for line in rate_axes.lines if line.get_gid() == "copied"]
    assert copied_at == [segment(t)["first_epoch"] - 0.5 for t in chain if segment(t)["donor"] is not None]
    assert rate_axes.get_yscale() == "log" and "validation" in axes.get_title() and "validation" in axes.get_ylabel()


# ------------------------------------------------------------------------------------- synthetic cases

LR = FloatDistribution(1e-4, 1e-1, log=True)


def made(
    number: int,
    member: int,
    generation: int,
    curve: list[tuple[int, float]],
    *,
    source=None,
    donor=None,
    state=TrialState.COMPLETE,
    lr=1e-3,
    epochs_run=None,
) -> optuna.trial.FrozenTrial:
    first, last = generation + 1, generation + 1
    trial = create_trial(
        state=state,
        value=max((a for _, a in curve), default=0.0) if state == TrialState.COMPLETE else None,
        params={"lr": lr},
        distributions={"lr": LR},
        user_attrs={
            "pbt_segment": {
                "member": member,
                "generation": generation,
                "first_epoch": first,
                "last_epoch": last,
                "source": source,
                "donor": donor,
            },
            "learning_curve": [{"epoch": e, "train_loss": 1.0, "val_accuracy": a} for e, a in curve],
            "epochs_run": last if epochs_run is None else epochs_run,
        },
    )
    trial.number = number
    return trial


def test_a_retried_segment_counts_once_and_a_copy_is_drawn_once_it_has_an_epoch():
    trials = [
        made(0, 0, 0, [(1, 0.5)]),
        made(1, 1, 0, [(1, 0.9)]),
        made(2, 0, 1, [(2, 0.6)], source=0, state=TrialState.FAIL),  # its worker died after epoch 2 ...
        made(3, 0, 1, [(2, 0.7)], source=0),  # ... and the retry trained it again
        made(4, 1, 1, [], source=1, donor=None, state=TrialState.RUNNING, epochs_run=0),
    ]
    data = population.read(trials)
    assert data.runs == (
        (0, (population.Point(1, 0.5, 0), population.Point(2, 0.7, 3))),
        (1, (population.Point(1, 0.9, 1),)),
    )
    assert data.exploits == () and data.best.number == 1 and [e["epoch"] for e in data.schedule] == [1]
    trials[4] = made(4, 0, 2, [], source=1, donor=1, state=TrialState.RUNNING, epochs_run=0)
    assert population.read(trials).exploits == ()  # nothing trained yet: no jump to draw
    trials[4] = made(4, 0, 2, [(3, 0.92)], source=1, donor=1, state=TrialState.RUNNING, lr=2e-3)
    jump = population.read(trials).exploits
    assert [(j.member, j.donor, j.start, j.end) for j in jump] == [(0, 1, population.Point(1, 0.9, 1), population.Point(3, 0.92, 4))]


def test_a_generation_is_done_when_every_member_trained_it():
    trials = [made(0, 0, 0, [(1, 0.5)]), made(1, 1, 0, [(1, 0.6)], state=TrialState.RUNNING, epochs_run=0)]
    assert population.generation_done(trials, 0, 2) is None  # member 1 is still training
    trials[1] = made(1, 1, 0, [(1, 0.6)], state=TrialState.RUNNING)  # its epochs are run: it is ending too
    assert population.generation_done(trials, 0, 2) == 0
    assert population.generation_done(trials, 0, 3) is None and population.generation_done(trials, 7, 2) is None


def test_the_population_section_replaces_its_own_and_keeps_the_stops_last():
    base = "## Study s\n\ntext\n\n### Stopped early\n- a stop\n"
    first = notes.with_section(base, notes.POPULATION_HEADING, notes.population_section("/artifacts/1/a", "after 0"))
    assert first.index(notes.POPULATION_HEADING) < first.index(notes.STOPS_HEADING) and first.endswith("- a stop\n")
    again = notes.with_section(first + "- another\n", notes.POPULATION_HEADING, notes.population_section("/artifacts/1/b", "after 1"))
    assert "/artifacts/1/a" not in again and "](/artifacts/1/b)" in again and again.endswith("- a stop\n- another\n")
    assert again.count(notes.POPULATION_HEADING) == 1 and again.startswith("## Study s\n\ntext\n\n### Population")
