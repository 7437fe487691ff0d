"""Every `>>>` example in keras_kd's docstrings runs and prints what it says (STYLE: runnable examples)."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import keras_kd
from keras_kd.backend import keras, tf

_MODULES = sorted(info.name for info in pkgutil.walk_packages(keras_kd.__path__, "keras_kd."))


def _examples(module_name):
    module = importlib.import_module(module_name)
    globs = {"keras": keras, "tf": tf, "np": np, **vars(module)}
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, globs=globs) if test.examples]


@pytest.mark.parametrize("module_name", _MODULES)
def test_docstring_examples_run_as_written(module_name):
    failures = []
    for test in _examples(module_name):
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report = []
        runner.run(test, out=report.append)
        if runner.summarize(verbose=False).failed:
            failures.append("".join(report))
    assert not failures, "\n".join(failures)


def test_the_examples_are_found():
    # the test above cannot pass by finding nothing: the quantization layers alone carry a dozen
    assert sum(len(test.examples) for test in _examples("keras_kd.quantization.layers")) >= 10
