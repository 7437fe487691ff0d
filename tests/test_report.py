"""Tests of keras_kd.report: the Markdown table, report.json, the plots and their errors."""

import json
import os

import pytest

from keras_kd import report as report_module
from keras_kd.report import ReportRow, build_report, load_report, pareto_front, render_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ROWS = [
    {"name": "teacher", "params": 1_234_567, "file_size_bytes": None, "accuracy": 0.9912, "host_p50_ms": 2.5},
    {"name": "scratch student", "params": 52_000, "file_size_bytes": 210_000, "accuracy": 0.9601,
     "host_p50_ms": 0.21},
    {"name": "distilled student", "params": 52_000, "file_size_bytes": 210_000, "accuracy": 0.9788,
     "host_p50_ms": 0.2},
    {"name": "post-training INT8", "params": 52_000, "file_size_bytes": 61_440, "accuracy": 0.9702,
     "host_p50_ms": 0.08, "device_p50_ms": 0.31},
    ReportRow(name="QAT-distilled INT8", params=52_000, file_size_bytes=61_440, accuracy=0.9779,
              host_p50_ms=0.08, device_p50_ms=0.3),
]


def test_render_markdown_human_units():
    text = render_markdown(ROWS, title="MNIST")
    lines = text.splitlines()
    assert lines[0] == "# MNIST"
    assert lines[2] == "| Model | Params | Size | Accuracy | Host p50 | Device p50 | Host speed-up |"
    assert lines[4] == "| teacher * | 1.23 M | in memory | 99.12 % | 2.50 ms | n/a | 1.0x |"
    assert lines[5] == "| scratch student | 52.0 K | 210.0 KB | 96.01 % | 0.210 ms | n/a | 11.9x |"
    assert lines[7] == "| post-training INT8 | 52.0 K | 61.4 KB | 97.02 % | 0.080 ms | 0.310 ms | 31.2x |"
    assert lines[8].startswith("| QAT-distilled INT8 * | ")
    assert "Pareto front" in lines[-1]


def test_units_cover_the_ranges():
    assert report_module._format_bytes(999) == "999 B"
    assert report_module._format_bytes(2_500_000) == "2.50 MB"
    assert report_module._format_ms(123.4) == "123 ms"
    assert report_module._format_ms(12.34) == "12.3 ms"
    assert report_module._format_count(999) == "999"


def test_pareto_front_rules():
    # The two INT8 rows tie on latency; the more accurate one dominates. Dominated: scratch and PTQ.
    assert pareto_front(ROWS) == ["QAT-distilled INT8", "distilled student", "teacher"]
    rows = [{"name": "a", "accuracy": 0.9, "host_p50_ms": 1.0}, {"name": "b", "accuracy": 0.9, "host_p50_ms": 1.0},
            {"name": "no latency", "accuracy": 1.0}]
    assert pareto_front(rows) == ["a", "b"]  # equal points do not dominate each other; incomplete rows are left out


def test_build_report_writes_everything(tmp_path):
    run_dir = tmp_path / "runs" / "mnist"
    history = {"loss": [1.0, 0.5, 0.3], "temperature": [8.0, 6.0, 4.0], "alpha": [0.9, 0.7, 0.5]}
    paths = build_report(ROWS, run_dir, curriculum=history, title="MNIST run")
    assert sorted(os.listdir(run_dir)) == ["accuracy_vs_latency.png", "curriculum.png", "report.json", "report.md"]
    for key in ("accuracy_vs_latency", "curriculum"):
        with open(paths[key], "rb") as handle:
            assert handle.read(8) == PNG_MAGIC
    markdown = (run_dir / "report.md").read_text()
    assert markdown.startswith("# MNIST run\n") and "![curriculum](curriculum.png)" in markdown
    assert markdown.splitlines()[4] == render_markdown(ROWS).splitlines()[2]

    document = json.loads((run_dir / "report.json").read_text())
    assert document["version"] == 1 and document["title"] == "MNIST run"
    assert [row["name"] for row in document["rows"]] == [
        "teacher", "scratch student", "distilled student", "post-training INT8", "QAT-distilled INT8"]
    assert document["rows"][0]["file_size_bytes"] is None and document["rows"][3]["device_p50_ms"] == 0.31
    assert document["curriculum"] == {"temperature": [8.0, 6.0, 4.0], "alpha": [0.9, 0.7, 0.5]}
    assert document["pareto_front"] == pareto_front(ROWS)

    loaded = load_report(run_dir)
    assert loaded["rows"][4] == ROWS[4]
    assert loaded["rows"][0] == ReportRow(**ROWS[0])


def test_build_report_without_curriculum_and_history_object(tmp_path):
    paths = build_report(ROWS[:2], tmp_path / "a")
    assert "curriculum" not in paths and not (tmp_path / "a" / "curriculum.png").exists()
    assert load_report(tmp_path / "a")["curriculum"] is None

    class History:  # what keras.callbacks.History exposes
        history = {"temperature": [4, 3], "val_loss": [0.4, 0.3]}

    paths = build_report(ROWS[:2], tmp_path / "b", curriculum=History())
    assert load_report(tmp_path / "b")["curriculum"] == {"temperature": [4.0, 3.0]}
    assert os.path.isfile(paths["curriculum"])


def test_build_report_overwrites_atomically(tmp_path, monkeypatch):
    build_report(ROWS[:2], tmp_path)
    before = (tmp_path / "report.json").read_text()

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(ROWS, tmp_path)
    assert (tmp_path / "report.json").read_text() == before  # the old report is intact
    assert sorted(os.listdir(tmp_path)) == ["accuracy_vs_latency.png", "report.json", "report.md"]  # no temp files


@pytest.mark.parametrize(
    "rows, error, message",
    [
        ([], ValueError, "rows is empty"),
        ({"name": "x"}, TypeError, "list of dicts"),
        ([{"params": 3}], ValueError, "has no 'name'"),
        ([{"name": "x", "acc": 0.9}], ValueError, "unknown keys \\['acc'\\]"),
        ([{"name": "x", "accuracy": 97.5}], ValueError, "pass 0.975: a fraction"),
        ([{"name": "x", "host_p50_ms": 0}], ValueError, "host_p50_ms must be a positive number"),
        ([{"name": "x", "params": -1}], ValueError, "params must be a non-negative integer"),
        ([{"name": "x"}, {"name": "x"}], ValueError, "repeated: \\['x'\\]"),
        (["teacher"], TypeError, "must be a dict or a ReportRow"),
    ],
)
def test_bad_rows_are_rejected(tmp_path, rows, error, message):
    with pytest.raises(error, match=message):
        build_report(rows, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "curriculum, error, message",
    [
        ({"loss": [1.0]}, ValueError, "neither 'temperature' nor 'alpha'"),
        ({"temperature": []}, ValueError, "is empty"),
        ({"alpha": ["high"]}, ValueError, "list of numbers"),
        ([4.0, 3.0], TypeError, "Keras History"),
    ],
)
def test_bad_curriculum_is_rejected(tmp_path, curriculum, error, message):
    with pytest.raises(error, match=message):
        build_report(ROWS[:1], tmp_path / "run", curriculum=curriculum)


def test_load_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run folder"):
        load_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no report.json"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"rows": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"title": "x"}')
    with pytest.raises(ValueError, match="no 'rows' list"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"rows": [{"name": "x", "accuracy": 3}]}')
    with pytest.raises(ValueError, match="malformed row"):
        load_report(tmp_path)


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        build_report(ROWS[:1], target)
