"""A suite's report (DIR/report/): tables over seeds, paired comparisons, retrieval, robustness and figures.

Reads only what runs left in their workdirs (metrics.jsonl, eval/, analysis/, the suite's status file), so
`--report` can be rerun at any time. A (run, seed) that has not finished is listed as missing or failed, never
folded into a mean. A cross-validated run's row is the mean ± std over its folds, each fold the mean over its seeds
and counted only once every seed of it finished, with a table of the folds beside it. Nothing time-dependent is
written, so a suite interrupted and resumed reports the same as one that ran straight through.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util

from harjax.evaluators import attention, classification, robustness
from harjax.models import har_model
from harjax.study import plots, suites
from harjax.training import loop, metrics as metrics_lib

# The prefixes of the evaluators configs/full.py defines: the test split ('eval'), the validation split ('val') and
# the test split at the checkpoint the validation split selected ('eval_selected').
TEST, VALIDATION, SELECTED = "eval", "val", "eval_selected"

SCORES = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("trial_accuracy", "trial accuracy"),
    ("trial_macro_f1", "trial macro-F1"),
    # runs with a validation split: the test split at the checkpoint the validation split selected
    ("selected_accuracy", "accuracy at the selected step"),
    ("selected_macro_f1", "macro-F1 at the selected step"),
)
CURVES = (("train/loss", "train loss"), ("eval/macro_f1", "eval macro-F1"), ("val/macro_f1", "validation macro-F1"))
RETRIEVAL = [f"retrieval_{direction}_r{k}" for direction in ("v2s", "s2v") for k in (1, 5, 10)]
# Not part of what a run *is*: the seed is a column, the evaluators only add analyses.
_HIDDEN_KEYS = ("seed", "evals.", "train.eval_at_start")


@dataclasses.dataclass
class Result:
    """One (run, seed) as its workdir holds it."""

    run: suites.RunSpec
    seed: int
    workdir: str
    status: str  # finished | failed | interrupted | missing
    log: str
    final: dict[str, float]  # eval scalars at the last step without the 'eval/' prefix (eval_selected/ as selected_)
    untrained: dict[
        str, float
    ]  # eval (or, with a validation split, val) scalars at step 0 (config.train.eval_at_start)
    history: list[dict[str, Any]]  # metrics.jsonl

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def run_status(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The suite runner's record of a run.

    A run started by hand from --list's command has none, and counts as finished once it has done everything that
    follows its last step.
    """
    status = suites.read_status(workdir)
    if status["status"] == "missing" and loop.training_complete(config, workdir):
        status = {"status": "finished", "log": ""}
    return status


def _scalars(record: dict[str, Any], prefix: str, renamed: str = "") -> dict[str, float]:
    return {renamed + name[len(prefix) :]: value for name, value in record.items() if name.startswith(prefix)}


def gather(suite: suites.Suite, seeds: int, root: str) -> dict[str, list[Result]]:
    """run key -> its results for seeds 0..seeds-1 (every run of every group that runs in this variant)."""
    results = {}
    for key, config in suite.configs.items():
        run = suite.runs()[key]
        results[key] = []
        for seed in range(seeds):
            workdir = suites.Trial(0, run, seed).workdir(root)
            status = run_status(workdir, config)
            history = metrics_lib.read_metrics(workdir)
            by_step: dict[int, dict[str, Any]] = {}  # every scalar logged at a step, over its records
            for record in history:
                by_step.setdefault(record["step"], {}).update(record)
            last = by_step.get(loop.last_step(config, workdir), {}) if status["status"] == "finished" else {}
            final = _scalars(last, f"{TEST}/") | _scalars(last, f"{SELECTED}/", "selected_")
            untrained = _scalars(by_step.get(0, {}), f"{TEST}/") or _scalars(by_step.get(0, {}), f"{VALIDATION}/")
            results[key].append(
                Result(run, seed, workdir, status["status"], status.get("log", ""), final, untrained, history)
            )
    return results


def difference(base: ml_collections.ConfigDict, config: ml_collections.ConfigDict, hidden: tuple[str, ...] = ()) -> str:
    """What a run changes in the base config, in words: 'model.fusion=concat, loss.contrastive_weight=0.0'."""
    flat_base = traverse_util.flatten_dict(base.to_dict(), sep=".")
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    changed = [
        f"{key}={suites.format_value(flat.get(key))}"
        for key in flat
        if flat.get(key) != flat_base.get(key) and not key.startswith(_HIDDEN_KEYS + hidden)
    ]
    return ", ".join(changed) or "(the base)"


def _row_difference(suite: suites.Suite, runs: Sequence[suites.RunSpec]) -> str:
    """difference() of a row; a cross-validated run's protocol is its folds, not the first fold's."""
    config = suite.configs[runs[0].key]
    if not runs[0].fold:
        return difference(suite.base, config)
    folds = f"data.protocol: {len(runs)} folds ({runs[0].fold} .. {runs[-1].fold})"
    changed = difference(suite.base, config, hidden=("data.protocol",))
    return folds if changed == "(the base)" else f"{changed}, {folds}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _cell(values: Sequence[float], scale: float = 100.0) -> str:
    if not len(values):
        return "–"
    mean, std = _mean_std(values)
    return f"{scale * mean:.1f}" + ("" if np.isnan(std) else f" ± {scale * std:.1f}")


def _finished_values(results: Iterable[Result], metric: str) -> list[float]:
    return [result.final[metric] for result in results if result.finished and metric in result.final]


def _fold_mean(results: Sequence[Result], metric: str) -> float | None:
    """A fold's score: the mean over its seeds, once every seed finished (else None)."""
    values = _finished_values(results, metric)
    return float(np.mean(values)) if values and len(values) == len(results) else None


def _row_values(runs: Sequence[suites.RunSpec], results: dict[str, list[Result]], metric: str) -> list[float]:
    """What a row's cell is the mean ± std of: a value per finished seed, or per complete fold."""
    if not runs[0].fold:
        return _finished_values(results[runs[0].key], metric)
    means = (_fold_mean(results[run.key], metric) for run in runs)
    return [mean for mean in means if mean is not None]


def _paired(
    runs: Sequence[suites.RunSpec],
    reference: Sequence[suites.RunSpec],
    results: dict[str, list[Result]],
    metric: str = "macro_f1",
) -> dict[str, Any]:
    """The run minus its reference: mean, std, and on how many pairs it is better.

    Pairs are the seeds both finished, or for cross-validated runs the folds both completed (each fold's mean).
    """
    if runs[0].fold:
        both = [
            (_fold_mean(results[mine.key], metric), _fold_mean(results[theirs.key], metric))
            for mine, theirs in zip(runs, reference, strict=True)
        ]
        both = [(mine, theirs) for mine, theirs in both if mine is not None and theirs is not None]
    else:
        both = [
            (mine.final[metric], theirs.final[metric])
            for mine, theirs in zip(results[runs[0].key], results[reference[0].key], strict=True)
            if mine.finished and theirs.finished and metric in mine.final and metric in theirs.final
        ]
    deltas = [mine - theirs for mine, theirs in both]
    return {
        "deltas": deltas,
        "better": sum(d > 0 for d in deltas),
        "worse": sum(d < 0 for d in deltas),
        "pairs": len(deltas),
    }


def _group_rows(
    suite: suites.Suite, group: suites.Group, results: dict[str, list[Result]], seeds: int
) -> list[dict[str, Any]]:
    rows, every_row = [], suite.rows()
    for key in [*group.shown, *group.rows()]:
        runs = every_row[key]
        if runs[0].key not in results:  # a shown run whose own group does not run in this variant
            continue
        run = runs[0]
        reference = every_row[run.reference]
        paired = _paired(runs, reference, results) if run.reference != key and reference[0].key in results else None
        folds = {spec.fold: results[spec.key] for spec in runs if spec.fold}
        rows.append(
            {
                "key": key,
                "run": run,
                "shown": run.group != group.name,
                "paired": paired,
                "difference": _row_difference(suite, runs),
                "folds": folds,  # cross-validated: fold -> its results over seeds
                "results": [result for spec in runs for result in results[spec.key]],
                "finished": (
                    sum(_fold_mean(fold, "macro_f1") is not None for fold in folds.values())
                    if folds
                    else sum(result.finished for result in results[key])
                ),
                "of": len(folds) or seeds,
                "seeds": seeds,
                **{metric: _row_values(runs, results, metric) for metric, _ in SCORES},
            }
        )
    return rows


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _group_section(
    suite: suites.Suite, group: suites.Group, rows: list[dict[str, Any]], figure: str | None
) -> list[str]:
    lines = [f"## {group.title} (`{group.name}`)", ""]
    if group.skipped:
        return lines + [f"Skipped in this variant: {group.skipped}.", ""]
    for name, reason in group.excluded.items():
        lines += [f"Left out: `{name}`: {reason}.", ""]
    metrics = [(metric, label) for metric, label in SCORES if any(row[metric] for row in rows)]
    unit = "folds" if any(row["folds"] for row in rows) else "seeds"
    if unit == "folds":
        lines += [
            "Cross-validated: each cell is the mean ± std over the folds, each fold the mean over its "
            f"{rows[0]['seeds']} seed(s) and counted once every seed of it finished; differences are paired fold by "
            "fold.",
            "",
        ]
    header = [
        "run",
        "difference from the base",
        unit,
        *(f"{label} (%)" for _, label in metrics),
        "Δ macro-F1 vs reference (points)",
        f"{unit} better / worse",
    ]
    table = []
    for row in rows:
        paired = row["paired"]
        if paired is None:
            delta, sign = ("(reference)" if row["run"].reference == row["key"] else "–"), "–"
        elif paired["pairs"]:
            delta = _cell(paired["deltas"]) + f" vs `{row['run'].reference}`"
            sign = f"{paired['better']} / {paired['worse']} of {paired['pairs']}"
        else:
            delta, sign = f"– (no {unit[:-1]} finished by both it and `{row['run'].reference}`)", "–"
        name = f"`{row['key']}`" + (" (shown)" if row["shown"] else "")
        table.append(
            [
                name,
                row["difference"],
                f"{row['finished']}/{row['of']}",
                *(_cell(row[metric]) for metric, _ in metrics),
                delta,
                sign,
            ]
        )
    lines += _markdown_table(header, table)
    lines += _folds_table(rows)
    if figure:
        lines += ["", f"![training and eval curves of {group.name}](figures/{os.path.basename(figure)})"]
    return lines + [""]


def _fold_cell(results: Sequence[Result]) -> str:
    mean = _fold_mean(results, "macro_f1")
    return "–" if mean is None else f"{100 * mean:.1f}"


def _folds_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each cross-validated row's macro-F1 fold by fold (the mean over the fold's seeds)."""
    folded = [row for row in rows if row["folds"]]
    if not folded:
        return []
    folds = list(folded[0]["folds"])
    table = [[f"`{row['key']}`", *(_fold_cell(row["folds"][fold]) for fold in folds)] for row in folded]
    lines = ["", "Macro-F1 (%) of each fold, the mean over its seeds (–: not every seed finished):", ""]
    return lines + _markdown_table(["run", *folds], table)


def _curve_series(
    runs: Sequence[str], results: dict[str, list[Result]], metrics: Sequence[str]
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """run -> metric -> (steps, mean over the seeds (and folds) that logged each step)."""
    series = {}
    for key in runs:
        by_metric = {}
        for metric in metrics:
            points: dict[int, list[float]] = {}
            for result in results[key]:
                for record in result.history:
                    if metric in record:
                        points.setdefault(record["step"], []).append(record[metric])
            if points:
                steps = np.asarray(sorted(points))
                by_metric[metric] = (steps, np.asarray([np.mean(points[step]) for step in steps]))
        if by_metric:
            series[key] = by_metric
    return series


def _eval_reports(results: list[Result], config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    reports = []
    for result in results:
        path = os.path.join(result.workdir, classification.report_path(TEST, loop.last_step(config, result.workdir)))
        if result.finished and os.path.exists(path):
            with open(path) as f:
                reports.append(json.load(f))
    return reports


def _class_figures(suite: suites.Suite, results: dict[str, list[Result]], figures: str) -> list[str]:
    """Confusion matrix of the reference run and its per-class F1 against the best other run of its group."""
    reference = suite.reference
    reports = _eval_reports(results[reference], suite.configs[reference])
    if not reports:
        return []
    names = reports[0]["class_names"]
    confusion = np.sum([report["confusion_matrix"] for report in reports], axis=0)
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0  # classes in the labels or the predictions
    lines = ["## Per class", ""]
    path = plots.confusion_matrix(
        confusion[np.ix_(present, present)],
        [n for n, p in zip(names, present, strict=True) if p],
        f"{reference}: confusion on the eval split, summed over {len(reports)} seed(s), rows normalised",
        os.path.join(figures, "confusion.png"),
    )
    lines += [
        f"Confusion matrix of `{reference}` (eval split, every seed's predictions together, each row "
        "normalised over its true class; classes absent from both labels and predictions left out):",
        "",
        f"![confusion matrix](figures/{os.path.basename(path)})",
        "",
    ]
    group = next(group for group in suite.groups if reference in [run.key for run in group.runs])
    others = [run.key for run in group.runs if run.key != reference and _finished_values(results[run.key], "macro_f1")]
    if others:
        best = max(others, key=lambda key: np.mean(_finished_values(results[key], "macro_f1")))
        scores = {
            key: np.mean(
                [report["per_class_f1"] for report in _eval_reports(results[key], suite.configs[key])],
                axis=0,
            )[present]
            for key in (reference, best)
        }
        path = plots.per_class_f1(
            [n for n, p in zip(names, present, strict=True) if p],
            scores,
            f"Per-class F1: {reference} against the best other run of its group",
            os.path.join(figures, "per_class_f1.png"),
        )
        lines += [
            f"Per-class F1 of `{reference}` against `{best}`, the run of `{group.name}` with the highest mean "
            "macro-F1 (mean over seeds):",
            "",
            f"![per-class F1](figures/{os.path.basename(path)})",
            "",
        ]
    return lines


def _retrieval_section(suite: suites.Suite, results: dict[str, list[Result]], figures: str) -> list[str]:
    # A cross-validated run's folds are not rows here: its retrieval is each fold's, not the study's question.
    runs = suite.runs()
    keys = [key for key in results if not runs[key].fold and _finished_values(results[key], RETRIEVAL[0])]
    if not keys:
        return []
    reference = suite.reference
    chance = [result.untrained for result in results.get(reference, []) if RETRIEVAL[0] in result.untrained]
    header = ["run", "seeds", *(name.replace("retrieval_", "").replace("_r", " R@") for name in RETRIEVAL)]
    rows = [
        [
            f"`{key}`",
            str(len(_finished_values(results[key], RETRIEVAL[0]))),
            *(_cell(_finished_values(results[key], name)) for name in RETRIEVAL),
        ]
        for key in keys
    ]
    if chance:
        rows.append(
            [
                f"`{reference}` untrained (step 0)",
                str(len(chance)),
                *(_cell([values[name] for values in chance]) for name in RETRIEVAL),
            ]
        )
    lines = [
        "## Cross-modal retrieval (eval split)",
        "",
        "Recall@k in % by cosine similarity of the contrastive embeddings: v2s ranks every recording's "
        "sensor embedding for each video, s2v every video for each recording (a recording with several camera "
        "views counts a hit when any of its views is in the top k). The untrained model is the chance line.",
        "",
    ]
    lines += _markdown_table(header, rows)
    series = {
        "trained": (
            np.array([np.mean(_finished_values(results[reference], name)) for name in RETRIEVAL]),
            np.array([_mean_std(_finished_values(results[reference], name))[1] for name in RETRIEVAL]),
        )
    }
    if chance:
        series["untrained"] = (
            np.array([np.mean([values[name] for values in chance]) for name in RETRIEVAL]),
            np.array([_mean_std([values[name] for values in chance])[1] for name in RETRIEVAL]),
        )
    if reference in keys:
        path = plots.grouped_bars(
            [name.replace("retrieval_", "").replace("_r", " R@") for name in RETRIEVAL],
            {name: (means, np.nan_to_num(stds)) for name, (means, stds) in series.items()},
            "recall (share of queries)",
            f"Cross-modal retrieval of {reference}",
            os.path.join(figures, "retrieval.png"),
        )
        lines += ["", f"![retrieval](figures/{os.path.basename(path)})"]
    return lines + [""]


def _robustness_section(suite: suites.Suite, results: dict[str, list[Result]], figures: str) -> list[str]:
    reference = suite.reference
    found = []
    for result in results.get(reference, []):
        path = os.path.join(result.workdir, robustness.FILE)
        if result.finished and os.path.exists(path):
            with open(path) as f:
                found.append(json.load(f)["conditions"])
    if not found:
        return []
    conditions = list(found[0])
    metric = "trial_macro_f1" if "trial_macro_f1" in found[0][robustness.CLEAN] else "macro_f1"
    clean = [values[robustness.CLEAN][metric] for values in found]
    rows = [
        [
            name,
            _cell([values[name][metric] for values in found]),
            _cell([values[name]["accuracy"] for values in found]),
            _cell([values[name][metric] - values[robustness.CLEAN][metric] for values in found]),
        ]
        for name in conditions
    ]
    lines = [
        "## Robustness of the trained model (no retraining)",
        "",
        f"`{reference}` evaluated with inputs removed or occluded, over {len(found)} seed(s). A removed input is "
        "the training mean: a removed video is zeros after the model's standardisation, a removed sensor "
        "stream zeros after standardisation (as a missing MMAct stream is stored); occlusion masks out one "
        "contiguous span of each recording's recorded steps.",
        "",
    ]
    label = metric.replace("_", " ").replace("macro f1", "macro-F1")
    lines += _markdown_table(["condition", f"{label} (%)", "accuracy (%)", "Δ vs clean (points)"], rows)
    path = plots.grouped_bars(
        conditions,
        {
            reference: (
                np.array([np.mean([v[c][metric] for v in found]) for c in conditions]),
                np.nan_to_num([_mean_std([v[c][metric] for v in found])[1] for c in conditions]),
            )
        },
        label,
        f"Robustness of {reference}: inputs removed or occluded at evaluation",
        os.path.join(figures, "robustness.png"),
        reference=float(np.mean(clean)),
        reference_label="clean inputs",
    )
    return lines + ["", f"![robustness](figures/{os.path.basename(path)})", ""]


def _attention_section(suite: suites.Suite, results: dict[str, list[Result]], figures: str) -> list[str]:
    reference = suite.reference
    result = next(
        (
            result
            for result in results.get(reference, [])
            if result.finished and os.path.exists(os.path.join(result.workdir, attention.FILE))
        ),
        None,
    )
    if result is None:
        return []
    with np.load(os.path.join(result.workdir, attention.FILE)) as stored:
        saved = {name: stored[name] for name in stored}
    names = saved["class_names"]
    stride = har_model.encoder_stride(suite.configs[reference])  # input steps per encoder step
    examples = []
    for i in range(len(saved["label"])):
        mask = saved["sensor_mask"][i]
        alpha = saved["alpha"][i]  # [K, n]: zero outside each segment
        segments = np.where(alpha.sum(axis=0) > 0, alpha.argmax(axis=0), -1)
        magnitude = np.linalg.norm(saved["sensor"][i], axis=-1) * mask
        length = int(mask.sum())
        examples.append(
            {
                "magnitude": magnitude[:length],
                "alpha": alpha.sum(axis=0)[: -(-length // stride)],
                "segments": segments[: -(-length // stride)],
                "stride": stride,
                "title": f"true: {names[saved['label'][i]]}, predicted: {names[saved['prediction'][i]]}",
            }
        )
    path = plots.attention(
        examples,
        f"Keyless attention of {reference} (seed {result.seed}, step "
        f"{int(saved['step'])}) over the eval recordings' sensor magnitude",
        os.path.join(figures, "attention.png"),
    )
    return [
        "## Keyless attention",
        "",
        f"Weights alpha of `{reference}` (seed {result.seed}) for eval examples of {len(examples)} classes, over "
        "the magnitude of the standardised sensor channels. Each temporal segment's weights sum to 1.",
        "",
        f"![keyless attention](figures/{os.path.basename(path)})",
        "",
    ]


def _missing_section(results: dict[str, list[Result]], root: str) -> list[str]:
    missing = [result for runs in results.values() for result in runs if not result.finished]
    if not missing:
        return []
    lines = ["## Missing or failed runs", "", "Not in any mean above (rerun the suite's command to finish them):", ""]
    for result in missing:
        log = f", log: `{os.path.relpath(result.log, root)}`" if result.log else ""
        lines.append(f"- `{result.run.key}` seed {result.seed}: {result.status}{log}")
    return lines + [""]


def write_report(suite: suites.Suite, seeds: int, root: str) -> str:
    """Writes DIR/report/{results.md, results.csv, runs.csv, figures/}; returns results.md's path."""
    directory = os.path.join(root, "report")
    figures = os.path.join(directory, "figures")
    os.makedirs(figures, exist_ok=True)
    results = gather(suite, seeds, root)
    lines = [
        f"# {suite.title}",
        "",
        f"Suite `{suite.path}`, {seeds} seed(s) per run; each cell is the mean ± std over the seeds that "
        "finished (seeds column: finished / asked), in % of the eval split, at the last training step (and, for runs "
        "that hold out a validation split, at the step it selected). "
        "Differences are paired over the same seeds against each run's reference; the last column says on how "
        "many seeds the run beat it. Base config: "
        f"`{suite.base_config}:{suite.config_variant}` with "
        f"`{' '.join(suite.overrides).replace(root, '<workdir>') or 'no overrides'}`.",
        "",
    ]
    csv_rows = []
    for group in suite.groups:
        rows = [] if group.skipped else _group_rows(suite, group, results, seeds)
        curve_runs = [row["key"] for row in rows if row["finished"]]
        series = _curve_series(
            curve_runs, {row["key"]: row["results"] for row in rows}, [metric for metric, _ in CURVES]
        )
        shown = [(metric, label) for metric, label in CURVES if any(metric in runs for runs in series.values())]
        figure = (
            plots.curves(
                series,
                shown,
                f"{group.title}: mean over {'folds and ' if any(row['folds'] for row in rows) else ''}seeds",
                os.path.join(figures, f"curves_{group.name}.png"),
            )
            if curve_runs
            else None
        )
        lines += _group_section(suite, group, rows, figure)
        csv_rows += [_csv_row(group, row) for row in rows if not row["shown"]]
    lines += _class_figures(suite, results, figures)
    lines += _retrieval_section(suite, results, figures)
    lines += _robustness_section(suite, results, figures)
    lines += _attention_section(suite, results, figures)
    lines += _missing_section(results, root)
    _write_csv(os.path.join(directory, "results.csv"), csv_rows)
    _write_csv(
        os.path.join(directory, "runs.csv"),
        [
            {
                "group": result.run.group,
                "run": result.run.name,
                "fold": result.run.fold,
                "seed": result.seed,
                "status": result.status,
                "workdir": os.path.relpath(result.workdir, root),
                "log": os.path.relpath(result.log, root) if result.log else "",
                **{metric: result.final.get(metric, "") for metric, _ in SCORES},
                **{name: result.final.get(name, "") for name in RETRIEVAL},
            }
            for runs in results.values()
            for result in runs
        ],
    )
    path = os.path.join(directory, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _csv_row(group: suites.Group, row: dict[str, Any]) -> dict[str, Any]:
    """A row of results.csv; a cross-validated run fills the folds columns, any other the seeds ones."""
    paired = row["paired"] or {"deltas": [], "better": "", "worse": ""}
    delta_mean, delta_std = _mean_std(paired["deltas"]) if paired["deltas"] else ("", "")
    folded = bool(row["folds"])
    values = {}
    for metric, _ in SCORES:
        mean, std = _mean_std(row[metric]) if row[metric] else ("", "")
        values |= {f"{metric}_mean": mean, f"{metric}_std": std}
    return {
        "group": group.name,
        "run": row["run"].name,
        "difference": row["difference"],
        "seeds_finished": "" if folded else row["finished"],
        "seeds": row["seeds"],
        **values,
        "reference": row["run"].reference,
        "delta_macro_f1_mean": delta_mean,
        "delta_macro_f1_std": delta_std,
        "seeds_better": "" if folded else paired["better"],
        "seeds_worse": "" if folded else paired["worse"],
        "folds_finished": row["finished"] if folded else "",
        "folds": row["of"] if folded else "",
        "folds_better": paired["better"] if folded else "",
        "folds_worse": paired["worse"] if folded else "",
    }


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
