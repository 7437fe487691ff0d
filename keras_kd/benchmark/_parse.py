"""Parsing what the LiteRT/TFLite `benchmark_model` binary prints, in every format its releases used."""

import re

from keras_kd.benchmark._result import BenchmarkOutputError, output_tail


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_PAIR = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(" + _NUMBER + r")", re.IGNORECASE)
_RUN_HEADER = re.compile(r"Running benchmark for (?:at least )?(\d+) iterations?")
_TIMINGS = re.compile(r"(Average inference timings|Inference timings) in us:\s*(.*)")
_TIMING_ITEM = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUMBER + r")")
_INIT_SESSION = re.compile(r"Initialized session in\s*(" + _NUMBER + r")\s*ms")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*(" + _NUMBER + r")")
_MEMORY_DELTA = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_PEAK_MEMORY = re.compile(
    r"(?<!Overall )Peak memory footprint \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_OVERALL_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUMBER + r")")
# Per-operator profiling summaries print the same statistics after these labels; they are not run timings.
_PROFILER_STAT = re.compile(r"\((?:microseconds|bytes)\)\s*:\s*$")


def _stat_from_line(line):
    """The statistics of a `Stat::OutputToStream` line, in microseconds, or None."""
    pairs = {key.lower(): float(value) for key, value in _PAIR.findall(line)}
    if "count" not in pairs:
        return None
    stat = {"count": int(pairs["count"])}
    if stat["count"] == 0:
        return stat
    if "first" not in pairs and "curr" in pairs:
        # "count=N curr=V[(all same)]": every run took V microseconds.
        value = pairs["curr"]
        stat.update(first=value, curr=value, min=value, max=value, avg=value, std=0.0)
    else:
        for key in ("first", "curr", "min", "max", "avg", "std"):
            if key in pairs:
                stat[key] = pairs[key]
    for key in ("p5", "median", "p95"):
        if key in pairs:
            stat[key] = pairs[key]
    return stat


def parse_benchmark_model_output(text):
    """Parses what the LiteRT/TFLite `benchmark_model` binary prints.

    Understood formats (line prefixes such as `INFO: ` or a logcat tag are ignored):

    * run statistics, one line after each "Running benchmark for [at least] N
      iterations" header, first for the warm-up then for the counted runs:
      `count=50 first=.. curr=.. min=.. max=.. avg=.. std=..` (TensorFlow Lite),
      the same followed by `p5=.. median=.. p95=..` (LiteRT), or
      `count=N curr=V` / `curr=V(all same)` when all runs took the same time;
    * the summary `Inference timings in us: Init: X, First inference: Y,
      Warmup (avg): Z, Inference (avg): W` (TensorFlow 2.x and LiteRT) or the
      older `Average inference timings in us: Warmup: Z, Init: X, no stats: W`
      (TensorFlow 1.x) / `..., Inference: W` (Android benchmark app);
    * `Initialized session in X ms.`, `The input model file size (MB): X`;
    * memory: `Memory footprint delta from the start of the tool (MB): init=..
      overall=..`, the older `Peak memory footprint (MB): init=.. overall=..`,
      and `Overall peak memory footprint (MB) via periodic monitoring: X`.

    Args:
        text: the combined stdout/stderr of one benchmark_model run.

    Returns:
        A dict: `warmup` and `inference` (dicts of count/first/curr/min/max/avg/
        std[/p5/median/p95] in microseconds, or None), `init_us`,
        `first_inference_us`, `warmup_avg_us`, `inference_avg_us`,
        `model_size_mb`, `format` (which summary was found) and `memory_mb`: a dict,
        possibly empty, with `delta_init`/`delta_overall` (footprint delta),
        `peak_init`/`peak_overall` (the older max-RSS "Peak memory footprint")
        and `peak_periodic` (periodic monitoring).

    Raises:
        BenchmarkOutputError: no inference timing could be found; the message
            shows the tail of the output.

    Example:

    >>> out = parse_benchmark_model_output(
    ...     "Running benchmark for at least 50 iterations and at least 1 seconds\\n"
    ...     "count=50 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124\\n")
    >>> out["inference"]["avg"]
    2177.1
    """
    if not isinstance(text, str):
        text = text.decode("utf-8", errors="replace")
    lines = text.splitlines()
    run_stats = []
    pending_header = False
    summary = {}
    result = {
        "warmup": None,
        "inference": None,
        "init_us": None,
        "first_inference_us": None,
        "warmup_avg_us": None,
        "inference_avg_us": None,
        "model_size_mb": None,
        "memory_mb": {},
        "format": None,
    }
    for raw in lines:
        line = raw.strip()
        if _RUN_HEADER.search(line):
            pending_header = True
            continue
        if pending_header and "count=" in line:
            stat = _stat_from_line(line)
            if stat is not None:
                run_stats.append(stat)
                pending_header = False
                continue
        match = _TIMINGS.search(line)
        if match:
            result["format"] = "legacy_average" if match.group(1).startswith("Average") else "timings"
            for key, value in _TIMING_ITEM.findall(match.group(2)):
                summary[key.strip().lower()] = float(value)
            continue
        match = _INIT_SESSION.search(line)
        if match:
            summary.setdefault("initialized session ms", float(match.group(1)))
            continue
        match = _MODEL_SIZE.search(line)
        if match:
            result["model_size_mb"] = float(match.group(1))
            continue
        match = _MEMORY_DELTA.search(line)
        if match:
            result["memory_mb"].update(delta_init=float(match.group(1)), delta_overall=float(match.group(2)))
            continue
        match = _OVERALL_PEAK.search(line)
        if match:
            result["memory_mb"]["peak_periodic"] = float(match.group(1))
            continue
        match = _PEAK_MEMORY.search(line)
        if match:
            result["memory_mb"].update(peak_init=float(match.group(1)), peak_overall=float(match.group(2)))
            continue

    if not run_stats:
        # Output without the run headers (for example a grep of it): take the lines that start with count=.
        for raw in lines:
            position = raw.find("count=")
            if position >= 0 and not _PROFILER_STAT.search(raw[:position]):
                stat = _stat_from_line(raw[position:])
                if stat is not None:
                    run_stats.append(stat)
    if len(run_stats) >= 2:
        result["warmup"], result["inference"] = run_stats[0], run_stats[1]
    elif len(run_stats) == 1:
        result["inference"] = run_stats[0]

    result["init_us"] = summary.get("init")
    if result["init_us"] is None and "initialized session ms" in summary:
        result["init_us"] = summary["initialized session ms"] * 1e3
    result["first_inference_us"] = summary.get("first inference")
    result["warmup_avg_us"] = summary.get("warmup (avg)", summary.get("warmup"))
    result["inference_avg_us"] = summary.get(
        "inference (avg)", summary.get("inference", summary.get("no stats"))
    )
    if result["warmup"] and result["warmup"].get("count"):
        result["first_inference_us"] = result["first_inference_us"] or result["warmup"].get("first")
        result["warmup_avg_us"] = result["warmup_avg_us"] or result["warmup"].get("avg")
    inference = result["inference"]
    if inference is not None and inference.get("count") and result["inference_avg_us"] is None:
        result["inference_avg_us"] = inference.get("avg")
    if result["format"] is None and run_stats:
        result["format"] = "stats_only"
    if result["inference_avg_us"] is None or (inference is not None and not inference.get("count")):
        raise BenchmarkOutputError(
            "Could not find the inference timings in the benchmark_model output (no 'count=.. avg=..' line "
            "after 'Running benchmark for ...' and no 'Inference timings in us:' summary). Did the run fail "
            "or was it cut short? Last lines of the output:\n" + output_tail(text)
        )
    if inference is not None and "median" in inference:
        result["format"] = "litert_percentiles"
    return result
