"""Schedules: values, serialization, validation."""

import json

import pytest

from keras_kd import schedules

pytestmark = pytest.mark.legacy_keras


@pytest.mark.parametrize(
    "schedule,steps,expected",
    [
        (schedules.Constant(4.0), [0, 5, 100], [4.0, 4.0, 4.0]),
        (schedules.Linear(8.0, 2.0, steps=6), [0, 3, 6, 9], [8.0, 5.0, 2.0, 2.0]),
        (schedules.Linear(1.0, 3.0, steps=2, start_step=2), [0, 2, 3, 4], [1.0, 1.0, 2.0, 3.0]),
        (schedules.Cosine(1.0, 0.0, steps=4), [0, 2, 4, 8], [1.0, 0.5, 0.0, 0.0]),
        (schedules.Step([5, 10], [0.9, 0.5, 0.1]), [0, 4, 5, 10, 50], [0.9, 0.9, 0.5, 0.1, 0.1]),
        (schedules.Exponential(8.0, 0.5, steps=2), [0, 2, 4], [8.0, 4.0, 2.0]),
        (schedules.Exponential(8.0, 0.5, minimum=3.0), [0, 1, 2], [8.0, 4.0, 3.0]),
        (schedules.Warmup(schedules.Constant(0.9), warmup_steps=3), [0, 1, 3, 5], [0.0, 0.3, 0.9, 0.9]),
        (schedules.Warmup(schedules.Linear(4.0, 1.0, steps=6), warmup_steps=2, initial=1.0), [0, 1, 2, 6],
         [1.0, 2.0, 3.0, 1.0]),
    ],
)
def test_values(schedule, steps, expected):
    assert [schedule(s) for s in steps] == pytest.approx(expected)


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(2.0),
        schedules.Linear(8.0, 2.0, steps=6, start_step=1),
        schedules.Cosine(1.0, 0.1, steps=10),
        schedules.Step([3], [0.9, 0.1]),
        schedules.Exponential(4.0, 0.9, steps=2, minimum=1.0, maximum=4.0),
        schedules.Warmup(schedules.Cosine(0.9, 0.1, steps=5), warmup_steps=2, initial=0.0),
    ],
)
def test_serialization_round_trip(schedule):
    config = json.loads(json.dumps(schedules.serialize(schedule)))
    clone = schedules.get(config)
    assert type(clone) is type(schedule)
    assert [clone(s) for s in range(12)] == pytest.approx([schedule(s) for s in range(12)])


def test_get_accepts_numbers_and_callables():
    assert schedules.get(3)(7) == 3.0
    fn = lambda epoch, value: value  # noqa: E731
    assert schedules.get(fn) is fn


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: schedules.Linear(1.0, 2.0, steps=0), "steps must be a positive integer"),
        (lambda: schedules.Constant(float("nan")), "value must be a finite number"),
        (lambda: schedules.Step([5], [1.0]), "one more value than boundaries"),
        (lambda: schedules.Step([5, 3], [1.0, 2.0, 3.0]), "boundaries must increase"),
        (lambda: schedules.Exponential(1.0, 0.0), "rate must be > 0"),
        (lambda: schedules.get({"class_name": "Nope", "config": {}}), "Unknown schedule 'Nope'"),
        (lambda: schedules.get("linear"), "Expected a schedule"),
    ],
)
def test_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()
