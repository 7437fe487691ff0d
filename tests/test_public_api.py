"""The public surface is pinned: adding or removing a name is a deliberate change here.

`keras_kd.__all__` is what a user calls plus the submodules a user imports;
each module's own `__all__` is pinned below (keras_kd.losses and
keras_kd.quantization pin theirs in tests/test_losses.py and
tests/test_quantization.py, against their registries). The package map at the
top of keras_kd/__init__.py is checked against the files.
"""

import importlib
import os
import re
import subprocess
import sys

import pytest

import keras_kd

pytestmark = pytest.mark.legacy_keras

PACKAGE_DIR = os.path.dirname(os.path.abspath(keras_kd.__file__))


def test_top_level_all_is_pinned():
    assert sorted(keras_kd.__all__) == sorted([
        "__version__",
        # what a user calls
        "Distiller", "distill", "cache_teacher_outputs", "TemperatureScheduler", "AlphaScheduler",
        "LossWeightScheduler", "load_dataset", "compare_with_control", "quantize_model", "to_tflite",
        "load_model",
        # the submodules a user imports
        "augment", "benchmark", "callbacks", "data", "export", "losses", "quantization", "schedules", "schemes",
    ])


@pytest.mark.parametrize("name", [n for n in keras_kd.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(keras_kd, name)
    assert value.__doc__ and len(value.__doc__.strip()) > 20, name


# Plumbing and test-only names: importable where they live, out of every __all__ a user reads.
PLUMBING = ["backend", "cache", "cli", "control", "distiller", "files", "interpreter", "quickstart", "report",
            "saving", "teacher"]


@pytest.mark.parametrize("name", PLUMBING)
def test_plumbing_stays_importable_as_an_attribute_but_out_of_all(name):
    assert name not in keras_kd.__all__
    assert getattr(keras_kd, name) is importlib.import_module(f"keras_kd.{name}")


def test_top_level_names_are_the_defining_modules_objects():
    from keras_kd.export import to_tflite
    from keras_kd.quantization import quantize_model
    from keras_kd.schemes import distill

    assert keras_kd.distill is distill and keras_kd.to_tflite is to_tflite
    assert keras_kd.quantize_model is quantize_model


def test_an_unknown_name_says_so():
    with pytest.raises(AttributeError, match="has no attribute 'Distillr'"):
        keras_kd.Distillr  # noqa: B018


MODULE_ALL = {
    "_compat": ["AsGiven", "resolve_losses"],
    "_validate": ["alpha", "describe", "is_number", "loss_weights", "scheduled_value_problem", "temperature"],
    "augment": ["CutMix", "MixUp", "augmentation_layers", "augmented_view", "get_mixing"],
    "backend": ["LEGACY_KERAS", "apply_gradients", "keras", "keras_version", "scale_loss", "tf"],
    "benchmark": ["AndroidBenchmarkError", "BenchmarkOutputError", "BenchmarkResult", "benchmark_android",
                  "benchmark_keras", "benchmark_tflite", "host_description", "parse_benchmark_model_output"],
    "cache": ["CACHE_METADATA_FILE", "cache_teacher_outputs"],
    "callbacks": ["AlphaScheduler", "LossWeightScheduler", "TFLiteEvalCallback", "TemperatureScheduler",
                  "VariableScheduler"],
    "cli": ["build_parser", "main"],
    "control": ["CONTROL", "ControlReport", "compare_with_control"],
    "data": ["Dataset", "DatasetUnavailableError", "FASHION_MNIST_DEBIAN_DIR", "FASHION_MNIST_ENV_VAR",
             "as_tf_dataset", "available_datasets", "check_dataset", "load_dataset", "read_idx"],
    "distiller": ["Distiller"],
    "export": ["EvaluationResult", "ExportReport", "ExportValidationError", "IO_DTYPES", "QUANTIZATION_MODES",
               "TFLiteEvalCallback", "TFLiteSummary", "TensorInfo", "ValidationResult", "evaluate_tflite",
               "inspect_tflite", "to_tflite", "validate"],
    "files": ["atomic_write", "check_writable_folder", "make_temporary", "make_temporary_folder",
              "remove_stale_temporaries"],
    "interpreter": ["XNNPackPrepareError", "dequantize_output", "input_details", "interpreter_backend",
                    "load_interpreter", "output_details", "quantize_input", "signature_position"],
    "quickstart": ["BATCH_SIZE", "build_student", "build_teacher", "curriculum_distill", "keras_accuracy",
                   "qat_distill", "run_quickstart", "train_supervised"],
    "report": ["ReportRow", "build_report", "load_report", "pareto_front", "render_history", "render_markdown"],
    "saving": ["load_model", "register_serializables"],
    "schedules": ["Constant", "Cosine", "Exponential", "Linear", "Schedule", "Step", "Warmup", "get", "serialize"],
    "schemes": ["MutualLearning", "born_again", "distill", "mutual_learning", "teacher_assistant_chain"],
    "teacher": ["FINAL_OUTPUT", "REDUCED_DTYPES", "TeacherRunner", "layer_taps", "require_built"],
}
# Pinned in their own test modules, where the registry the names come from is checked too.
PINNED_ELSEWHERE = {"losses": "tests/test_losses.py", "quantization": "tests/test_quantization.py"}


@pytest.mark.parametrize("module", sorted(MODULE_ALL))
def test_module_all_is_pinned(module):
    imported = importlib.import_module(f"keras_kd.{module}")
    assert sorted(imported.__all__) == MODULE_ALL[module]
    for name in imported.__all__:
        assert hasattr(imported, name), f"keras_kd.{module}.__all__ names {name!r}, which it does not define"


def test_every_module_has_its_all_pinned():
    modules = {name for name in _top_level_modules() if name != "__init__"}
    assert modules == set(MODULE_ALL) | set(PINNED_ELSEWHERE)


def test_one_distill():
    """`keras_kd.schemes.distill` is the one function that distils; the quickstart and the CLI call it."""
    defined = []
    for path in _package_files():
        with open(os.path.join(PACKAGE_DIR, path)) as handle:
            defined += [path for line in handle if re.match(r"def distill\(", line)]
    assert defined == ["schemes.py"]


def test_import_is_lazy():
    code = "import sys, keras_kd; print('tensorflow' in sys.modules, 'ai_edge_litert' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_export_reexports_the_callback():
    from keras_kd.callbacks import TFLiteEvalCallback as original
    from keras_kd.export import TFLiteEvalCallback

    assert TFLiteEvalCallback is original


# ------------------------------------------------------------------ the package map


def _package_files():
    """Every module of the package as a path relative to keras_kd/ ("losses/_base.py")."""
    found = []
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, PACKAGE_DIR)
        found += [os.path.normpath(os.path.join(relative, f)) for f in sorted(files) if f.endswith(".py")]
    return found


def _top_level_modules():
    return sorted({path.split(os.sep)[0].removesuffix(".py") for path in _package_files()})


def _map_entries():
    """The package map's paths: `name.py` lines, `package/` lines (its __init__.py) and their indented modules."""
    block = keras_kd.__doc__.split("Package map", 1)[1].split("\n\n", 2)[1]
    entries, package = [], None
    for line in block.splitlines():
        match = re.match(r"^    (  )?(\S+)\s{2,}\S", line)
        assert match, f"a package map line is 'name  description', got {line!r}"
        nested, name = match.groups()
        if name.endswith("/"):
            package = name
            entries.append(os.path.join(name, "__init__.py"))
        else:
            assert not nested or package, f"{name} is indented under no package"
            entries.append(os.path.join(package, name) if nested else name)
            package = package if nested else None
    return entries


def test_the_package_map_lists_every_module_once():
    entries = _map_entries()
    assert len(entries) == len(set(entries)), "a module is listed twice in the package map"
    files = set(_package_files())
    missing, stale = sorted(files - set(entries)), sorted(set(entries) - files)
    assert not missing, f"add these modules to the package map in keras_kd/__init__.py: {missing}"
    assert not stale, f"the package map in keras_kd/__init__.py lists modules that no longer exist: {stale}"


def test_the_package_map_says_which_modules_are_public():
    lines = dict(zip(_map_entries(), keras_kd.__doc__.split("Package map", 1)[1].split("\n\n", 2)[1].splitlines()))
    for name in keras_kd.__all__:
        if name in MODULE_ALL or name in PINNED_ELSEWHERE:
            path = f"{name}/__init__.py" if os.path.isdir(os.path.join(PACKAGE_DIR, name)) else f"{name}.py"
            assert "public:" in lines[path], path
    for name in PLUMBING:
        line = lines[f"{name}.py"]
        assert "public:" not in line, name


# ------------------------------------------------------------------ the test layout (tests/__init__.py)


def _test_modules():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    return sorted(name[len("test_"):-len(".py")] for name in os.listdir(tests_dir)
                  if name.startswith("test_") and name.endswith(".py"))


def test_every_module_has_its_test_module():
    modules = [name for name in _top_level_modules() if name != "__init__"]
    # A private module's tests drop its underscore: keras_kd/_validate.py -> tests/test_validate.py.
    missing = [f"tests/test_{name.lstrip('_')}.py" for name in modules if name.lstrip("_") not in _test_modules()]
    assert not missing, f"keras_kd modules without their test module: {missing}"


def test_every_test_module_names_what_it_tests():
    modules = [name for name in _top_level_modules() if name != "__init__"]
    others = ("public_api", "examples_", "benchmarks_")
    strays = [f"tests/test_{stem}.py" for stem in _test_modules()
              if not any(stem == name.lstrip("_") or stem.startswith(f"{name.lstrip('_')}_") for name in modules)
              and not stem.startswith(others)]
    assert not strays, f"name these after the keras_kd module they test (see tests/__init__.py): {strays}"
