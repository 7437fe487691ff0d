"""keras_kd._validate: the one rule for each hyperparameter, and its messages."""

import math

import numpy as np
import pytest

from keras_kd import _validate as validate
from keras_kd.backend import tf

pytestmark = pytest.mark.legacy_keras


@pytest.mark.parametrize("value", [0.5, 1, 20.0, np.float32(3.0), np.int64(2)])
def test_a_valid_temperature_comes_back_as_a_float(value):
    result = validate.temperature(value)
    assert isinstance(result, float) and result == float(value)


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, "3", None, True])
def test_a_bad_temperature_is_refused_with_the_rule_and_a_hint(value):
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got .*Typical values are 1 to 10"):
        validate.temperature(value)


def test_a_tensor_temperature_passes_unchecked_only_when_asked():
    variable = tf.Variable(2.0)
    assert validate.temperature(variable, tensors=True) is variable
    with pytest.raises(ValueError, match="temperature must be"):
        validate.temperature(variable)


@pytest.mark.parametrize("spelling, formula", [
    ("alpha", "It weights the distillation term"),
    ("student_loss_weight", "It weights the student term"),
    ("alpha (keras.io spelling)", "With student_loss_fn/distillation_loss_fn"),
])
def test_alpha_errors_state_what_the_spelling_weights(spelling, formula):
    assert validate.alpha(0, spelling) == 0.0 and validate.alpha(1, spelling) == 1.0
    with pytest.raises(ValueError, match=rf"^{spelling.split()[0]} must be a number in \[0, 1\], got 1.5\. {formula}"):
        validate.alpha(1.5, spelling)


def test_loss_weights():
    assert validate.loss_weights((1, 0.5), count=2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="must be a list with one number per loss, got 1.0"):
        validate.loss_weights(1.0)
    with pytest.raises(ValueError, match=r"must be finite numbers >= 0, got \[1.0, -1.0\]"):
        validate.loss_weights([1.0, -1.0])
    with pytest.raises(ValueError, match="has 1 values but there are 2 distillation losses"):
        validate.loss_weights([1.0], count=2)


def test_scheduled_values_use_the_same_rules():
    assert validate.scheduled_value_problem("temperature", 2.0, "the temperature") is None
    assert validate.scheduled_value_problem("temperature", 0.0, "the temperature") == \
        "the temperature must be finite and > 0."
    assert validate.scheduled_value_problem("alpha", 1.2, "alpha") == "alpha must be in [0, 1]."
    assert validate.scheduled_value_problem("loss weight", math.inf, "w") == "w must be finite and >= 0."


def test_is_number_and_describe():
    assert validate.is_number(3) and validate.is_number(2.5) and not validate.is_number(True)
    assert validate.is_number(3, integer=True) and not validate.is_number(2.5, integer=True)
    assert validate.describe(2.5) == "2.5" and validate.describe("x") == "'x' (a str)"
