"""Ready-made schedules for the temperature, alpha and loss weights.

A schedule is a callable `schedule(step, current_value) -> value`, the shape
`keras.callbacks.LearningRateScheduler` uses, where `step` is the epoch (or
the global batch index with `update="batch"`). The classes here are
serializable (`get_config` / `from_config`, and `keras_kd.schedules.get`) so a
curriculum can live in a YAML/JSON config.
"""

import math

from keras_kd.backend import keras
from keras_kd.losses._base import describe, is_number

__all__ = ["Schedule", "Constant", "Linear", "Cosine", "Step", "Exponential", "Warmup", "get", "serialize"]


def _number(value, what):
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {describe(value)}.")
    return float(value)


def _steps(value, what):
    if not is_number(value, integer=True) or value < 1:
        raise ValueError(f"{what} must be a positive integer (a number of epochs or batches), got {describe(value)}.")
    return int(value)


class Schedule:
    """Base class: a serializable `schedule(step, current_value=None) -> float`."""

    def __call__(self, step, current_value=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_kd")
class Constant(Schedule):
    """Always `value`.

    Example:

    >>> Constant(4.0)(10)
    4.0
    """

    def __init__(self, value):
        self.value = _number(value, "value")

    def __call__(self, step, current_value=None):
        return self.value

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="keras_kd")
class Linear(Schedule):
    """Linear from `start` (at `start_step`) to `end` (at `start_step + steps`), then `end`.

    Example (temperature annealed from 8 to 2 over 6 epochs):

    >>> [Linear(8.0, 2.0, steps=6)(e) for e in (0, 3, 6, 9)]
    [8.0, 5.0, 2.0, 2.0]
    """

    def __init__(self, start, end, steps, start_step=0):
        self.start, self.end = _number(start, "start"), _number(end, "end")
        self.steps = _steps(steps, "steps")
        self.start_step = int(start_step)

    def _fraction(self, step):
        return min(max((step - self.start_step) / self.steps, 0.0), 1.0)

    def __call__(self, step, current_value=None):
        return self.start + (self.end - self.start) * self._fraction(step)

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps, "start_step": self.start_step}


@keras.saving.register_keras_serializable(package="keras_kd")
class Cosine(Linear):
    """Half-cosine from `start` to `end` over `steps`, then `end`.

    Example:

    >>> [round(Cosine(1.0, 0.0, steps=4)(e), 3) for e in (0, 2, 4)]
    [1.0, 0.5, 0.0]
    """

    def __call__(self, step, current_value=None):
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * self._fraction(step)))


@keras.saving.register_keras_serializable(package="keras_kd")
class Step(Schedule):
    """Piecewise constant: `values[i]` from `boundaries[i-1]` (inclusive) to `boundaries[i]`.

    Example (alpha 0.9 for epochs 0-4, 0.5 for 5-9, then 0.1):

    >>> [Step([5, 10], [0.9, 0.5, 0.1])(e) for e in (0, 5, 12)]
    [0.9, 0.5, 0.1]
    """

    def __init__(self, boundaries, values):
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"Step needs one more value than boundaries, got {len(boundaries)} boundaries and "
                f"{len(values)} values."
            )
        if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"Step boundaries must increase, got {boundaries}.")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_number(v, "each value") for v in values]

    def __call__(self, step, current_value=None):
        for boundary, value in zip(self.boundaries, self.values):
            if step < boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values}


@keras.saving.register_keras_serializable(package="keras_kd")
class Exponential(Schedule):
    """`initial * rate ** (step / steps)`, kept within `[minimum, maximum]` when given.

    Example:

    >>> [Exponential(8.0, 0.5, steps=2)(e) for e in (0, 2, 4)]
    [8.0, 4.0, 2.0]
    """

    def __init__(self, initial, rate, steps=1, minimum=None, maximum=None):
        self.initial = _number(initial, "initial")
        self.rate = _number(rate, "rate")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}.")
        self.steps = _steps(steps, "steps")
        self.minimum = None if minimum is None else _number(minimum, "minimum")
        self.maximum = None if maximum is None else _number(maximum, "maximum")

    def __call__(self, step, current_value=None):
        value = self.initial * self.rate ** (step / self.steps)
        if self.minimum is not None:
            value = max(value, self.minimum)
        if self.maximum is not None:
            value = min(value, self.maximum)
        return value

    def get_config(self):
        return {"initial": self.initial, "rate": self.rate, "steps": self.steps, "minimum": self.minimum,
                "maximum": self.maximum}


@keras.saving.register_keras_serializable(package="keras_kd")
class Warmup(Schedule):
    """Linear warm-up from `initial` to the value of `schedule` at `warmup_steps`, then `schedule`.

    Example (alpha ramps from 0 to 0.9 over 3 epochs):

    >>> [round(Warmup(Constant(0.9), warmup_steps=3, initial=0.0)(e), 2) for e in (0, 1, 3, 5)]
    [0.0, 0.3, 0.9, 0.9]
    """

    def __init__(self, schedule, warmup_steps, initial=0.0):
        self.schedule = get(schedule)
        self.warmup_steps = _steps(warmup_steps, "warmup_steps")
        self.initial = _number(initial, "initial")

    def __call__(self, step, current_value=None):
        if step >= self.warmup_steps:
            return self.schedule(step, current_value)
        target = self.schedule(self.warmup_steps, current_value)
        return self.initial + (target - self.initial) * step / self.warmup_steps

    def get_config(self):
        return {"schedule": serialize(self.schedule), "warmup_steps": self.warmup_steps, "initial": self.initial}


_BY_NAME = {cls.__name__.lower(): cls for cls in (Constant, Linear, Cosine, Step, Exponential, Warmup)}


def serialize(schedule):
    """A JSON-friendly dict `{"class_name": ..., "config": ...}` for a schedule."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"Only keras_kd.schedules objects serialize, got {schedule!r}.")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def get(identifier):
    """Resolves a schedule from an instance, a `serialize()` dict, a number (constant) or a callable.

    Example:

    >>> get({"class_name": "Linear", "config": {"start": 4, "end": 1, "steps": 3}})(3)
    1.0
    """
    if isinstance(identifier, Schedule) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if is_number(identifier):
        return Constant(identifier)
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = str(identifier["class_name"]).lower()
        if name not in _BY_NAME:
            raise ValueError(
                f"Unknown schedule {identifier['class_name']!r}; known: {', '.join(sorted(_BY_NAME))}."
            )
        return _BY_NAME[name].from_config(dict(identifier.get("config", {})))
    raise TypeError(
        f"Expected a schedule (keras_kd.schedules object, config dict, number or callable), got {identifier!r}."
    )
