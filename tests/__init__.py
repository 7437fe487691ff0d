"""The tests mirror the package: the tests of `keras_kd/<name>.py` (or of the package `keras_kd/<name>/`) are
in `tests/test_<name>.py`.

- `tests/test_<name>_<aspect>.py`: more tests of the same module, split by what they exercise
  (`test_distiller_distribute.py`, `test_distiller_keras_upstream.py`, `test_quantization_registry.py`).
- `tests/test_public_api.py`: `keras_kd/__init__.py`: the top-level `__all__`, every module's `__all__`
  and the package map. `tests/test_public_api_docstrings.py`: every `>>>` example in the package's
  docstrings.
- `tests/test_examples_<script>.py`: an `examples/` script run end to end (slow).
- `tests/test_benchmarks_<what>.py`: the `benchmarks/` scripts run at a tiny size.
- `helpers.py` (tiny seeded models and data), `conftest.py`, `fixtures/`, `scripts/`: shared by the tests.

`tests/test_public_api.py::test_every_module_has_its_test_module` keeps this layout. Markers: `slow` (QAT,
conversion, multi-process, convergence; still run in CI) and `legacy_keras` (the core that also runs under
`TF_USE_LEGACY_KERAS=1`).
"""
