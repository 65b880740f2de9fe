"""`mnist-hpo report`: one self-contained HTML file about a study, readable offline.

plotly's JavaScript is inlined once; every figure is an optuna.visualization plotly figure
embedded without its own copy of the library, and the best trial's pictures are inlined as
data: URIs. Numbers are validation accuracies (what trials were chosen on); a test accuracy
appears only where `mnist-hpo best --test` measured one, and it is labelled as test.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_hpo import redact, storage
from mnist_hpo.console import console
from mnist_hpo.dashboards import figures, notes, population
from mnist_hpo.errors import UserError
from mnist_hpo.tuning.attrs import (
    BEST_EPOCH_ATTR,
    DATA_SOURCE_ATTR,
    EPOCHS_RUN_ATTR,
    LIFTED_ATTR,
    MULT_ADDS_ATTR,
    PARAMETERS_ATTR,
    SECONDS_ATTR,
    SETTINGS_ATTR,
    STOPPED_ATTR,
    TEST_ACCURACY_ATTR,
    WARM_START_ATTR,
)
from mnist_hpo.tuning.baseline import baseline_comparison
from mnist_hpo.tuning.copies import own_pareto_front, own_study, own_trials
from mnist_hpo.tuning.settings import stop_rule_rows

TOP_TRIALS = 10
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { background: #f4f4f4; }
.note { color: #555; font-size: .9rem; } .split { font-weight: 600; }
.figure { margin: 1rem 0 2rem; overflow-x: auto; } .pictures img { max-width: 100%; margin: 0 1rem 1rem 0; border: 1px solid #eee; }
code, pre { background: #f6f6f6; padding: .1rem .3rem; } pre { padding: .6rem; overflow-x: auto; }
"""


def write_report(storage_url: str | None, study_name: str, out: str | Path, artifacts: str | Path | None = None) -> Path:
    """Write the HTML report of ``study_name`` to ``out`` (atomically) and return its path."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name such as report.html")
    if not out.parent.is_dir():
        raise UserError(f"directory {out.parent} does not exist; create it or pass another --out")
    rdb = storage.open_storage(storage.resolve_url(storage_url), must_exist=True)
    study = storage.load_study(rdb, study_name)
    store, shown = storage.existing_artifacts(artifacts)  # a folder may be missing; a bucket must answer
    document = render_report(study, rdb, store, artifacts_folder=shown)
    _atomic_write_text(out, document)
    trials = own_trials(study)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    console.print(f"wrote {out} ({len(document) / 1e6:.1f} MB, {len(trials)} trials, {complete} completed); opens offline in any browser")
    if store is None:
        console.print(f"note: no artifact folder {shown}, so the best trial's pictures are missing; pass --artifacts DIR")
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ render


def render_report(study: optuna.Study, storage_handle: Any, store: Any = None, artifacts_folder: str | Path | None = None) -> str:
    """The whole HTML document for ``study`` (opened from ``storage_handle``); ``store`` (an artifact store) supplies the pictures."""
    from plotly.offline import get_plotlyjs

    all_trials = study.get_trials(deepcopy=False)
    trials = own_trials(all_trials)  # trials copied by a warm start are listed, never ranked or counted
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    ranked = sorted(complete, key=lambda t: (-t.values[0], t.number))
    settings = study.user_attrs.get(SETTINGS_ATTR) or {}
    name = html.escape(study.study_name)
    sections = [
        _header(study, trials, settings, len(all_trials) - len(trials)),
        _honest_numbers(study, ranked, trials, multi, baseline=settings.get("baseline", True)),
        _figures_section(own_study(study) if len(trials) < len(all_trials) else study, complete, multi),
        _population_section(trials, ranked, settings),
        _top_trials(ranked, multi),
        _best_pictures(storage_handle, ranked, store, artifacts_folder),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>mnist-hpo report: {name}</title>\n'
        f'<style>{_STYLE}</style>\n<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        + "\n".join(sections)
        + f'\n<p class="note">Written by mnist-hpo {html.escape(_version())} with Optuna {html.escape(optuna.__version__)} '
        f"on {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}. Self-contained: no network needed to view it.</p>\n"
        "</body>\n</html>\n"
    )


def _version() -> str:
    from mnist_hpo.versions import VERSION

    return VERSION


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            css = ' class="num"' if i in numeric else ""
            cells.append(f"<td{css}>{value if isinstance(value, _Raw) else html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _header(study: optuna.Study, trials: list[FrozenTrial], settings: dict[str, Any], copied: int) -> str:
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    count_text = ", ".join(f"{n} {state.name.lower()}" for state, n in counts.items() if n)
    rows: list[tuple[str, Any]] = [("trials", f"{len(trials)} ({count_text or 'none yet'})")]
    if copied:
        source = (study.user_attrs.get(WARM_START_ATTR) or {}).get("study", "?")
        rows.append(
            (
                "warm start",
                f"{copied} finished trials copied from study {source}: they seeded the sampler and are "
                "left out of every count, ranking and figure here",
            )
        )
    rows += stop_rule_rows(settings)
    if settings.get("pbt"):
        rows.append(("population-based training", notes.pbt_line(settings["pbt"])))
    for reason in study.user_attrs.get(LIFTED_ATTR) or []:
        rows.append(("stopped early (lifted since)", reason))
    if study.user_attrs.get(STOPPED_ATTR):
        rows.append(("stopped early", study.user_attrs[STOPPED_ATTR]))
    if settings.get("command"):
        rows.append(("created by", _Raw(f"<code>{html.escape(redact.redact(settings['command']))}</code>")))
    for key in ("profile", "objectives", "epochs", "sampler", "pruner", "seed", "max_params"):
        if settings.get(key) is not None:
            value = settings[key]
            rows.append((key.replace("_", " "), ", ".join(value) if isinstance(value, list) else value))
    if study.user_attrs.get(DATA_SOURCE_ATTR):
        rows.append(("data", study.user_attrs[DATA_SOURCE_ATTR]))
    directions = ", ".join(d.name.lower() for d in study.directions)
    rows.append(("directions", directions))
    return f"<h1>Study {html.escape(study.study_name)}</h1>\n" + _table(None, rows)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _honest_numbers(study: optuna.Study, ranked: list[FrozenTrial], trials: list[FrozenTrial], multi: bool, baseline: bool) -> str:
    parts = ["<h2>Results</h2>"]
    if not ranked:
        parts.append("<p>No trial has completed yet, so there is no best trial; run <code>mnist-hpo search</code> to add trials.</p>")
        return "\n".join(parts)
    best = ranked[0]
    tested = study.user_attrs.get(TEST_ACCURACY_ATTR) or {}
    rows = [
        (
            f"best by validation: trial {best.number}",
            _Raw(f'<span class="split">validation</span> {_percent(best.values[0])}'),
            _Raw(f'<span class="split">test</span> {_percent(tested[str(best.number)])} (measured once, after selection)')
            if str(best.number) in tested
            else "test: not measured (run mnist-hpo best --test)",
        )
    ]
    for number, value in sorted(tested.items(), key=lambda item: int(item[0])):
        if number != str(best.number):
            rows.append((f"trial {number}", "", _Raw(f'<span class="split">test</span> {_percent(value)}')))
    parts.append(_table(("", "validation accuracy (selection)", "test accuracy (reported only)"), rows))
    if not multi:  # the console summary's comparison, word for word
        parts.append(f'<p class="baseline">{html.escape(baseline_comparison(best, trials, queued=baseline))}.</p>')
    if multi:
        front = sorted(own_pareto_front(study), key=lambda t: t.values[1])
        parts.append("<p>Pareto front (validation accuracy against parameters):</p>")
        parts.append(
            _table(
                ("trial", "validation accuracy", "parameters"),
                [(t.number, _percent(t.values[0]), f"{int(t.values[1]):,}") for t in front],
                numeric=(0, 1, 2),
            )
        )
    parts.append(
        '<p class="note">Every accuracy here is on the validation split unless it says test. Trials were chosen '
        "on validation; the test set never influenced a choice.</p>"
    )
    return "\n".join(parts)


def _figures_section(study: optuna.Study, complete: list[FrozenTrial], multi: bool) -> str:
    import optuna.visualization as vis

    target = (lambda t: t.values[0]) if multi else None
    target_name = "validation accuracy"
    kwargs: dict[str, Any] = {"target": target, "target_name": target_name}
    plots: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "Optimisation history",
            "Validation accuracy of every completed trial and the best so far.",
            lambda: vis.plot_optimization_history(study, **kwargs),
        ),
    ]
    if not multi:
        plots.append(
            (
                "Intermediate values",
                "Validation accuracy after each epoch, for every trial; pruned trials are dotted and stop early.",
                lambda: _intermediate_values(study),
            )
        )
    plots += [
        (
            "Parameter importances",
            "PED-ANOVA importance of each hyperparameter for validation accuracy.",
            lambda: vis.plot_param_importances(study, **kwargs),
        ),
        (
            "Parallel coordinates",
            "Each line is a completed trial, coloured by validation accuracy.",
            lambda: vis.plot_parallel_coordinate(study, **kwargs),
        ),
        ("Slices", "Validation accuracy against each hyperparameter.", lambda: vis.plot_slice(study, **kwargs)),
    ]
    if multi:
        plots.append(
            (
                "Pareto front",
                "Validation accuracy against parameter count; the front is highlighted.",
                lambda: vis.plot_pareto_front(study, target_names=["validation accuracy", "parameters"]),
            )
        )
    parts = ["<h2>The search</h2>"]
    for index, (title, caption, make) in enumerate(plots):
        parts.append(f'<h3>{html.escape(title)}</h3>\n<p class="note">{html.escape(caption)}</p>')
        parts.append(_plot_html(make, f"plot-{index}", len(complete)))
    return "\n".join(parts)


def _population_section(trials: list[FrozenTrial], ranked: list[FrozenTrial], settings: dict[str, Any]) -> str:
    """A PBT study's population over time and its best trial's schedule; nothing for any other study."""
    if not settings.get("pbt"):
        return ""
    data = population.read(trials, ranked[0].number if ranked else None)
    parts = ["<h2>The population</h2>"]
    for div_id, title, caption, make in population.plotly_figures(data):
        parts.append(f'<h3>{html.escape(title)}</h3>\n<p class="note">{html.escape(caption)}</p>')
        parts.append(_plot_html(make, div_id, len(ranked)))
    return "\n".join(parts)


def _intermediate_values(study: optuna.Study) -> Any:
    """optuna's intermediate-values plot with pruned trials marked (dotted, named) and epoch axes."""
    import optuna.visualization as vis

    figure = vis.plot_intermediate_values(study)
    states = {f"Trial{t.number}": t.state for t in study.get_trials(deepcopy=False)}
    for trace in figure.data:
        state = states.get(trace.name)
        label = trace.name.replace("Trial", "trial ")
        if state == TrialState.PRUNED:
            trace.update(line={"dash": "dot", "width": 1}, opacity=0.7, name=f"{label} (pruned)")
        else:
            trace.update(name=f"{label} ({state.name.lower()})" if state else label)
    figure.update_layout(showlegend=True, xaxis_title="epoch", yaxis_title="validation accuracy")
    figure.update_xaxes(dtick=1)
    return figure


def _plot_html(make: Callable[[], Any], div_id: str, completed: int) -> str:
    if completed < 2:
        return '<p class="note">(needs at least two completed trials)</p>'
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning, "not enough trials" user warnings
            figure = make()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return f'<p class="note">(not available for this study: {html.escape(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})</p>'
    figure.update_layout(height=480, margin={"l": 60, "r": 30, "t": 50, "b": 50})
    return '<div class="figure">' + figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG) + "</div>"


def _top_trials(ranked: list[FrozenTrial], multi: bool) -> str:
    if not ranked:
        return ""
    rows = []
    for rank, trial in enumerate(ranked[:TOP_TRIALS], start=1):
        attrs = trial.user_attrs
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        mult_adds = attrs.get(MULT_ADDS_ATTR)
        rows.append(
            (
                rank,
                trial.number,
                _percent(trial.values[0]),
                f"{attrs[PARAMETERS_ATTR]:,}" if isinstance(attrs.get(PARAMETERS_ATTR), int) else "-",
                f"{mult_adds / 1e6:.2f} M" if isinstance(mult_adds, (int, float)) else "-",
                f"{attrs.get(BEST_EPOCH_ATTR, '-')} / {attrs.get(EPOCHS_RUN_ATTR, '-')}",
                f"{attrs[SECONDS_ATTR]:.1f}" if isinstance(attrs.get(SECONDS_ATTR), (int, float)) else "-",
                params,
            )
        )
    note = " (ranked by validation accuracy; the Pareto front is listed above)" if multi else ""
    return (
        f'<h2>Top {min(TOP_TRIALS, len(ranked))} trials</h2>\n<p class="note">Completed trials by validation accuracy{note}.</p>\n'
        + _table(
            ("rank", "trial", "validation accuracy", "parameters", "mult-adds", "best epoch / run", "seconds", "hyperparameters"),
            rows,
            numeric=(0, 1, 2, 3, 4, 5, 6),
        )
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _best_pictures(storage_handle: Any, ranked: list[FrozenTrial], store: Any, folder: str | Path | None) -> str:
    if not ranked:
        return ""
    best = ranked[0]
    parts = [f"<h2>Best trial {best.number}: validation pictures</h2>"]
    if store is None:
        where = f"The artifact folder {html.escape(str(folder))} is missing" if folder is not None else "No artifact folder was given"
        parts.append(f'<p class="note">{where}, so its pictures cannot be shown; pass --artifacts.</p>')
        return "\n".join(parts)
    images = []
    for name, alt in (
        (figures.CONFUSION, "confusion matrix on the validation split"),
        (figures.MISCLASSIFIED, "misclassified validation digits, predicted / true"),
        (figures.CURVES, "learning curves"),
    ):
        artifact_id = storage.find_artifact(storage_handle, best, name)
        if artifact_id is None:
            continue
        try:
            data = storage.download_bytes(store, artifact_id)
        except UserError:
            continue
        images.append(
            f'<img alt="{html.escape(alt)}" title="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        )
    if not images:
        parts.append(
            '<p class="note">This trial has no pictures in the artifact folder (a study from before pictures '
            "were recorded, or another --artifacts folder).</p>"
        )
    else:
        parts.append('<div class="pictures">' + "\n".join(images) + "</div>")
    return "\n".join(parts)
