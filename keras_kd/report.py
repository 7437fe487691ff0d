"""The run report: one table and two plots that say what distillation and INT8 bought.

`build_report` takes one row per model (teacher, scratch student, distilled
student, post-training INT8, QAT-distilled INT8, ...) and writes into a run
folder, each file atomically (temporary file in the same folder, then rename):

* `report.md`: a Markdown table in human units (KB/MB, %, ms);
* `report.json`: the same rows as numbers, the Pareto front and the curriculum;
* `accuracy_vs_latency.png`: accuracy against host p50 latency, each point
  labelled, the Pareto front (no other model is both faster and more accurate)
  drawn and marked;
* `curriculum.png`: temperature and alpha per epoch, when a curriculum is given.

`load_report` reads `report.json` back; `render_markdown` gives the table alone.
Sizes use decimal units (1 KB = 1000 bytes), as benchmark_model does.
"""

import dataclasses
import datetime
import json
import math
import os
from typing import Optional

from keras_kd.files import atomic_write

__all__ = ["ReportRow", "build_report", "load_report", "render_markdown", "render_history", "pareto_front"]

REPORT_VERSION = 1
_MARKDOWN = "report.md"
_JSON = "report.json"
_PARETO_PNG = "accuracy_vs_latency.png"
_CURRICULUM_PNG = "curriculum.png"


@dataclasses.dataclass
class ReportRow:
    """One model of the report.

    Attributes:
        name: a unique label, e.g. "teacher" or "distilled student (INT8, QAT)".
        params: number of parameters, or None.
        file_size_bytes: size of the exported file; None for an in-memory model.
        accuracy: test accuracy as a fraction in [0, 1], or None.
        host_p50_ms: median latency on the host in milliseconds, or None.
        device_p50_ms: median latency on the phone in milliseconds, or None.
    """

    name: str
    params: Optional[int] = None
    file_size_bytes: Optional[int] = None
    accuracy: Optional[float] = None
    host_p50_ms: Optional[float] = None
    device_p50_ms: Optional[float] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"A report row needs a non-empty name, got {self.name!r}.")
        for field in ("params", "file_size_bytes"):
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, bool) or not float(value).is_integer() or value < 0:
                raise ValueError(f"Row {self.name!r}: {field} must be a non-negative integer or None, got {value!r}.")
            setattr(self, field, int(value))
        if self.accuracy is not None:
            accuracy = float(self.accuracy)
            if math.isnan(accuracy) or not 0.0 <= accuracy <= 1.0:
                hint = f" (pass {accuracy / 100:g}: a fraction, not a percentage)" if 1 < accuracy <= 100 else ""
                raise ValueError(f"Row {self.name!r}: accuracy must be in [0, 1], got {self.accuracy!r}{hint}.")
            self.accuracy = accuracy
        for field in ("host_p50_ms", "device_p50_ms"):
            value = getattr(self, field)
            if value is None:
                continue
            value = float(value)
            if math.isnan(value) or value <= 0:
                raise ValueError(f"Row {self.name!r}: {field} must be a positive number of ms or None, got {value!r}.")
            setattr(self, field, value)

    def to_dict(self):
        return dataclasses.asdict(self)


_FIELDS = tuple(f.name for f in dataclasses.fields(ReportRow))


def _as_row(row, index):
    if isinstance(row, ReportRow):
        return row
    if not isinstance(row, dict):
        raise TypeError(f"Report row {index} must be a dict or a ReportRow, got {type(row).__name__}.")
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise ValueError(f"Report row {index} has unknown keys {unknown}; the keys are {list(_FIELDS)}.")
    if "name" not in row:
        raise ValueError(f"Report row {index} has no 'name'; every row needs one, e.g. {{'name': 'teacher', ...}}.")
    return ReportRow(**row)


def _as_rows(rows):
    if rows is None or isinstance(rows, (str, bytes, dict)):
        raise TypeError(f"rows must be a list of dicts or ReportRow objects, got {type(rows).__name__}.")
    rows = [_as_row(row, i) for i, row in enumerate(rows)]
    if not rows:
        raise ValueError("rows is empty: pass at least one model (e.g. the teacher and the student).")
    names = [row.name for row in rows]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Row names must be unique; repeated: {duplicates}.")
    return rows


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

_MISSING = "n/a"


def _format_bytes(value):
    if value is None:
        return "in memory"
    if value < 1000:
        return f"{value} B"
    if value < 1000**2:
        return f"{value / 1000:.1f} KB"
    if value < 1000**3:
        return f"{value / 1000 ** 2:.2f} MB"
    return f"{value / 1000 ** 3:.2f} GB"


def _format_count(value):
    if value is None:
        return _MISSING
    if value < 1000:
        return str(value)
    if value < 1000**2:
        return f"{value / 1000:.1f} K"
    return f"{value / 1000 ** 2:.2f} M"


def _format_ms(value):
    if value is None:
        return _MISSING
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3f} ms"


def _format_percent(value):
    return _MISSING if value is None else f"{100 * value:.2f} %"


def _escape(text):
    return text.replace("|", "\\|").replace("\n", " ")


def pareto_front(rows):
    """Names of the rows no other row beats on both accuracy and host p50 latency.

    A row is on the front when no other row is at least as accurate and at
    least as fast, and strictly better in one of the two. Rows without an
    accuracy or a host latency are left out. The names come fastest first.

    Example:

    >>> pareto_front([
    ...     {"name": "teacher", "accuracy": 0.99, "host_p50_ms": 5.0},
    ...     {"name": "student", "accuracy": 0.97, "host_p50_ms": 0.5},
    ...     {"name": "worse", "accuracy": 0.95, "host_p50_ms": 0.7},
    ... ])
    ['student', 'teacher']
    """
    rows = _as_rows(rows)
    points = [r for r in rows if r.accuracy is not None and r.host_p50_ms is not None]
    front = []
    for row in points:
        dominated = any(
            other is not row
            and other.accuracy >= row.accuracy
            and other.host_p50_ms <= row.host_p50_ms
            and (other.accuracy > row.accuracy or other.host_p50_ms < row.host_p50_ms)
            for other in points
        )
        if not dominated:
            front.append(row)
    front.sort(key=lambda r: (r.host_p50_ms, -r.accuracy))
    return [row.name for row in front]


def render_markdown(rows, title=None):
    """The report table in Markdown, in human units.

    Columns: model, parameters, file size, accuracy, host p50 latency, device
    p50 latency, and the host speed-up over the first row (the reference, e.g.
    the teacher). Missing figures print as "n/a", an in-memory model's size as
    "in memory". Rows on the accuracy/latency Pareto front are marked with *.

    Example:

    >>> print(render_markdown([{"name": "teacher", "params": 1_200_000, "accuracy": 0.991,
    ...                         "host_p50_ms": 2.5}]).splitlines()[2])
    | teacher * | 1.20 M | in memory | 99.10 % | 2.50 ms | n/a | 1.0x |
    """
    rows = _as_rows(rows)
    front = set(pareto_front(rows))
    reference = rows[0].host_p50_ms
    lines = []
    if title:
        lines += [f"# {_escape(title)}", ""]
    lines += [
        "| Model | Params | Size | Accuracy | Host p50 | Device p50 | Host speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = _MISSING if reference is None or row.host_p50_ms is None else f"{reference / row.host_p50_ms:.1f}x"
        name = _escape(row.name) + (" *" if row.name in front else "")
        lines.append(
            f"| {name} | {_format_count(row.params)} | {_format_bytes(row.file_size_bytes)} | "
            f"{_format_percent(row.accuracy)} | {_format_ms(row.host_p50_ms)} | {_format_ms(row.device_p50_ms)} | "
            f"{speedup} |"
        )
    if front:
        lines += [
            "",
            "\\* on the accuracy / host-latency Pareto front (no other model is both faster and more accurate).",
        ]
    return "\n".join(lines) + "\n"


def render_history(history, title=None):
    """A per-epoch Markdown table of a training history (`History.history` or a run's history.json).

    Example:

    >>> print(render_history({"loss": [0.9, 0.5], "val_accuracy": [0.8, 0.9]}).splitlines()[2])
    | 1 | 0.9000 | 0.8000 |
    """
    if not isinstance(history, dict) or not history:
        raise ValueError(f"history must be a non-empty dict of per-epoch lists, got {history!r}.")
    keys = list(history)
    bad = [key for key in keys if not isinstance(history[key], list)]
    if bad:
        raise ValueError(f"history values must be per-epoch lists; not lists: {bad}.")
    epochs = max(len(history[key]) for key in keys)
    lines = [f"# {_escape(title)}", ""] if title else []
    lines += ["| Epoch | " + " | ".join(_escape(key) for key in keys) + " |",
              "|---:|" + "---:|" * len(keys)]
    for epoch in range(epochs):
        cells = []
        for key in keys:
            values = history[key]
            cells.append(f"{float(values[epoch]):.4f}" if epoch < len(values) else _MISSING)
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Curriculum
# ---------------------------------------------------------------------------


def _curriculum_series(curriculum):
    """{"temperature": [...], "alpha": [...]} from a dict, a History or a History.history dict."""
    if curriculum is None:
        return None
    history = getattr(curriculum, "history", curriculum)
    if not isinstance(history, dict):
        raise TypeError(
            "curriculum must be a dict like {'temperature': [...], 'alpha': [...]} or a Keras History "
            f"(or its .history dict), got {type(curriculum).__name__}."
        )
    series = {}
    for key in ("temperature", "alpha"):
        if key in history:
            values = history[key]
            try:
                values = [float(v) for v in values]
            except (TypeError, ValueError) as error:
                raise ValueError(f"curriculum[{key!r}] must be a list of numbers, got {values!r}.") from error
            if not values:
                raise ValueError(f"curriculum[{key!r}] is empty; it needs one value per epoch.")
            series[key] = values
    if not series:
        raise ValueError(
            f"curriculum has neither 'temperature' nor 'alpha' (keys: {sorted(history)}). Log them per epoch "
            "(the keras_kd schedule callbacks add them to History.history) or pass "
            "{'temperature': [...], 'alpha': [...]}."
        )
    return series


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _write_text(path, text):
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def _new_figure(**kwargs):
    """A figure on the Agg canvas, without pyplot: no global state, no display needed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency of keras-kd
        raise ImportError("The report plots need matplotlib: `pip install matplotlib`.") from error
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path):
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight"))


def _plot_pareto(rows, front, path, title):
    points = [r for r in rows if r.accuracy is not None and r.host_p50_ms is not None]
    figure = _new_figure(figsize=(7, 4.5))
    axis = figure.subplots()
    if points:
        on_front = [r for r in points if r.name in front]
        others = [r for r in points if r.name not in front]
        if others:
            axis.scatter([r.host_p50_ms for r in others], [100 * r.accuracy for r in others],
                         color="tab:gray", label="dominated", zorder=3)
        axis.scatter([r.host_p50_ms for r in on_front], [100 * r.accuracy for r in on_front],
                     color="tab:red", marker="D", s=50, label="Pareto front", zorder=4)
        ordered = sorted(on_front, key=lambda r: r.host_p50_ms)
        axis.step([r.host_p50_ms for r in ordered], [100 * r.accuracy for r in ordered],
                  where="post", color="tab:red", alpha=0.6, zorder=2)
        # Rows that land on (nearly) the same spot get stacked labels instead of overprinted ones.
        placed = []
        for row in sorted(points, key=lambda r: (r.host_p50_ms, -r.accuracy)):
            x, y = row.host_p50_ms, 100 * row.accuracy
            stacked = sum(1 for px, py in placed if abs(px - x) <= 0.05 * max(px, x) and abs(py - y) < 0.05)
            placed.append((x, y))
            right_edge = row.host_p50_ms == max(r.host_p50_ms for r in points) and len(points) > 1
            axis.annotate(row.name, (x, y), textcoords="offset points", xytext=(-5 if right_edge else 5,
                          5 - 11 * stacked), ha="right" if right_edge else "left", fontsize=8)
        latencies = [r.host_p50_ms for r in points]
        if max(latencies) / min(latencies) > 20:
            axis.set_xscale("log")
        axis.margins(x=0.15, y=0.12)
        axis.legend(loc="best", fontsize=8)
    else:
        axis.text(0.5, 0.5, "no row has both an accuracy and a host latency", ha="center", va="center",
                  transform=axis.transAxes)
    axis.set_xlabel("host p50 latency (ms, lower is better)")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    _save_figure(figure, path)


def _plot_curriculum(series, path):
    keys = list(series)
    figure = _new_figure(figsize=(7, 2.6 * len(keys)))
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)
    for axis, key in zip(axes[:, 0], keys):
        values = series[key]
        axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3)
        axis.set_ylabel(key)
        axis.grid(True, alpha=0.3)
    axes[0, 0].set_title("distillation curriculum")
    axes[-1, 0].set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    _save_figure(figure, path)


def build_report(rows, run_dir, curriculum=None, title="keras_kd run report"):
    """Writes report.md, report.json and the plots into `run_dir` (created if needed).

    Args:
        rows: dicts or `ReportRow`s with `name`, `params`, `file_size_bytes`
            (None for an in-memory model), `accuracy` (a fraction),
            `host_p50_ms` and optionally `device_p50_ms`. The first row is the
            reference of the speed-up column (put the teacher first).
        run_dir: the folder of the run.
        curriculum: None, or the temperature/alpha per epoch: a dict
            `{"temperature": [...], "alpha": [...]}`, a Keras `History` or its
            `.history` dict (other keys are ignored).
        title: the heading of report.md and of the accuracy/latency plot.

    Returns:
        A dict of the paths written: "markdown", "json", "accuracy_vs_latency"
        and, with a curriculum, "curriculum".

    Raises:
        ValueError / TypeError: a row or the curriculum is malformed.

    Example:

    ```python
    paths = build_report(
        [
            {"name": "teacher", "params": 1_200_000, "accuracy": 0.991, "host_p50_ms": 2.4},
            {"name": "distilled student (INT8)", "params": 52_000, "file_size_bytes": 61_440,
             "accuracy": 0.982, "host_p50_ms": 0.09, "device_p50_ms": 0.21},
        ],
        "runs/mnist", curriculum=history.history)
    print(open(paths["markdown"]).read())
    ```
    """
    rows = _as_rows(rows)
    series = _curriculum_series(curriculum)
    run_dir = os.fspath(run_dir)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise NotADirectoryError(f"run_dir {run_dir!r} is a file; pass a folder for the report.")
    os.makedirs(run_dir, exist_ok=True)
    front = pareto_front(rows)
    paths = {
        "markdown": os.path.join(run_dir, _MARKDOWN),
        "json": os.path.join(run_dir, _JSON),
        "accuracy_vs_latency": os.path.join(run_dir, _PARETO_PNG),
    }
    _plot_pareto(rows, set(front), paths["accuracy_vs_latency"], title)
    if series is not None:
        paths["curriculum"] = os.path.join(run_dir, _CURRICULUM_PNG)
        _plot_curriculum(series, paths["curriculum"])

    markdown = render_markdown(rows, title=title)
    markdown += f"\n![accuracy vs latency]({_PARETO_PNG})\n"
    if series is not None:
        markdown += f"\n![curriculum]({_CURRICULUM_PNG})\n"
    _write_text(paths["markdown"], markdown)
    document = {
        "version": REPORT_VERSION,
        "title": title,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": [row.to_dict() for row in rows],
        "pareto_front": front,
        "curriculum": series,
        "files": {key: os.path.basename(path) for key, path in paths.items()},
    }
    # Written last: a report.json present means the whole report is there.
    _write_text(paths["json"], json.dumps(document, indent=2) + "\n")
    return paths


def load_report(run_dir):
    """Reads the report.json of a run folder back.

    Returns:
        The stored dict, with "rows" as a list of `ReportRow`.

    Raises:
        FileNotFoundError: the folder or its report.json does not exist.
        ValueError: report.json is not valid JSON or not a keras_kd report.

    Example:

    ```python
    report = load_report("runs/mnist")
    best = max(report["rows"], key=lambda row: row.accuracy or 0)
    ```
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"No run folder at {run_dir!r}. Pass the run_dir given to build_report.")
    path = os.path.join(run_dir, _JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir!r} has no {_JSON}; write it with keras_kd.report.build_report(rows, run_dir)."
        )
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); rebuild it with build_report. Start of the file: {text[:200]!r}"
        ) from error
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ValueError(f"{path} is not a keras_kd report: it has no 'rows' list. Rebuild it with build_report.")
    try:
        document["rows"] = [_as_row(row, i) for i, row in enumerate(document["rows"])]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has a malformed row: {error}") from error
    return document
