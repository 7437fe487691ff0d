"""One validator per hyperparameter: the temperature, alpha and the distillation loss weights.

The Distiller's constructor and `compile()`, the losses and the schedulers
check a value against the same rule, so what is accepted, and how a refusal
reads, is written here once. Plumbing: not part of `keras_kd.__all__`.
"""

import math
import numbers

import numpy as np

__all__ = ["is_number", "describe", "temperature", "alpha", "loss_weights", "scheduled_value_problem"]


def is_number(value, integer=False):
    """True for a real number, Python or NumPy (`4`, `4.0`, `np.float32(4)`, a 0-d array), but not a bool.

    Every hyperparameter that takes a number (a temperature, alpha, a loss
    weight, a schedule's values) is checked with this, so NumPy scalars work
    wherever Python numbers do.

    Example:

    >>> import numpy as np
    >>> [is_number(v) for v in (4, 4.0, np.float32(4), np.array(4.0), True, "4")]
    [True, True, True, True, False, False]
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Integral if integer else numbers.Real)


def describe(value):
    """`value!r` and, for anything that is not a number, its type: for error messages."""
    return repr(value) if is_number(value) or value is None else f"{value!r} (a {type(value).__name__})"


# name -> (test of a float, what a value must be, the same for a value known to be a number)
_RULES = {
    "temperature": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0", "finite and > 0"),
    "alpha": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "in [0, 1]"),
    "loss weight": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0", "finite and >= 0"),
}

_TEMPERATURE_HINT = "Typical values are 1 to 10 (higher gives softer teacher targets)."

#: What alpha weights, by the spelling it was given in (the error states the formula).
ALPHA_FORMULAS = {
    "alpha": "It weights the distillation term: loss = alpha * distillation_loss + (1 - alpha) * student_loss.",
    "student_loss_weight": "It weights the student term: loss = student_loss_weight * student_loss + "
                           "(1 - student_loss_weight) * distillation_loss.",
    "alpha (keras.io spelling)": "With student_loss_fn/distillation_loss_fn (the keras.io example) it weights the "
                                 "student term: loss = alpha * student_loss + (1 - alpha) * distillation_loss.",
}


def _accepts(rule, value):
    return is_number(value) and _RULES[rule][0](float(value))


def temperature(value, tensors=False):
    """The temperature as a float; raises ValueError unless it is a finite number > 0.

    With `tensors=True` a tensor (a scheduled Variable inside a step) passes
    unchecked and is returned as it is.
    """
    if tensors and not is_number(value) and not isinstance(value, (str, bytes, bool)) and value is not None:
        return value
    if not _accepts("temperature", value):
        raise ValueError(f"temperature must be {_RULES['temperature'][1]}, got {describe(value)}. {_TEMPERATURE_HINT}")
    return float(value)


def alpha(value, spelling="alpha"):
    """Alpha (or `student_loss_weight`) as a float; raises ValueError unless it is in [0, 1].

    `spelling` is a key of `ALPHA_FORMULAS`: the error states what the value
    weights in that spelling.
    """
    if not _accepts("alpha", value):
        raise ValueError(f"{spelling.split()[0]} must be {_RULES['alpha'][1]}, got {describe(value)}. "
                         f"{ALPHA_FORMULAS[spelling]}")
    return float(value)


def loss_weights(weights, count=None):
    """`distillation_loss_weights` as a list of floats, each a finite number >= 0 (and `count` of them)."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ValueError(f"distillation_loss_weights must be a list with one number per loss, got {describe(weights)}.")
    weights = list(weights)
    if not all(_accepts("loss weight", w) for w in weights):
        raise ValueError(f"distillation_loss_weights must be finite numbers >= 0, got {weights!r}.")
    if count is not None and len(weights) != count:
        raise ValueError(
            f"distillation_loss_weights has {len(weights)} values but there are {count} distillation losses; give "
            "one weight per loss."
        )
    return [float(w) for w in weights]


def scheduled_value_problem(rule, value, label):
    """What is wrong with a float a schedule returned (`label must be ...`), or None when it is valid.

    `rule` is `"temperature"`, `"alpha"` or `"loss weight"`; `label` names the
    value in the sentence ("the temperature").
    """
    test, _, requirement = _RULES[rule]
    return None if test(value) else f"{label} must be {requirement}."
