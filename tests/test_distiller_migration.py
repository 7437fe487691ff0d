"""Migrating to keras_kd from the keras.io knowledge-distillation example (issue 11, item 7).

The example (keras.io/examples/vision/knowledge_distillation) defines its own
`Distiller` whose `compile(optimizer, metrics, student_loss_fn,
distillation_loss_fn, alpha=0.1, temperature=3)` weights the *student* loss by
`alpha`. `KerasIoExampleDistiller` below restates that example's loss, so the same
script can run with either class and be compared.
"""

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.distiller import Distiller
from keras_kd.losses import SoftTargetKLDivergence
from keras_kd.losses._compat import SoftenedProbabilitiesLoss
from tests.helpers import mlp, toy_data


class KerasIoExampleDistiller(keras.Model):
    """The keras.io example's Distiller: loss = alpha * student_loss + (1 - alpha) * T**2 * distillation_loss."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher, self.student = teacher, student
        # The example leaves the teacher trainable, so its train step also moves the teacher through the KL
        # term; keras_kd freezes it (a deliberate difference). Frozen here, the two must agree exactly.
        teacher.trainable = False

    def compile(self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3):
        super().compile(optimizer=optimizer, metrics=metrics)
        self.student_loss_fn, self.distillation_loss_fn = student_loss_fn, distillation_loss_fn
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False, training=True):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        distillation_loss = self.distillation_loss_fn(
            keras.ops.softmax(teacher_pred / self.temperature, axis=1),
            keras.ops.softmax(y_pred / self.temperature, axis=1)) * self.temperature**2
        return self.alpha * student_loss + (1 - self.alpha) * distillation_loss

    def call(self, x):
        return self.student(x)


def _example_script(distiller_class, distillation_loss_fn, x, y, **weights):
    """The example's steps, shortened; only the Distiller class differs between runs."""
    teacher, student = mlp(hidden=32, seed=7, name="teacher"), mlp(seed=3, name="student")
    teacher.set_weights(weights["teacher"])
    student.set_weights(weights["student"])
    distiller = distiller_class(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=distillation_loss_fn,
        alpha=0.1,
        temperature=10,
    )
    distiller.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    distiller.evaluate(x, y, verbose=0)
    return distiller


@pytest.mark.parametrize("distillation_loss_fn", [keras.losses.KLDivergence, keras.losses.MeanSquaredError])
def test_keras_io_example_runs_unchanged_with_the_same_result(distillation_loss_fn):
    x, y = toy_data(n=64)
    weights = {"teacher": mlp(hidden=32, seed=7).get_weights(), "student": mlp(seed=3).get_weights()}
    reference = _example_script(KerasIoExampleDistiller, distillation_loss_fn(), x, y, **weights)
    ours = _example_script(Distiller, distillation_loss_fn(), x, y, **weights)
    for a, b in zip(reference.student.get_weights(), ours.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # alpha=0.1 weighted the student loss: keras_kd's alpha (the distillation weight) is 0.9.
    assert ours.student_loss_weight == 0.1 and float(ours.alpha.numpy()) == pytest.approx(0.9)
    assert float(ours.temperature.numpy()) == 10.0
    expected_type = SoftTargetKLDivergence if distillation_loss_fn is keras.losses.KLDivergence \
        else SoftenedProbabilitiesLoss
    assert type(ours.distillation_losses[0]) is expected_type
    clone = Distiller.from_config(ours.get_config())  # the weighting survives a round trip
    assert clone.student_loss_weight == 0.1 and float(clone.temperature.numpy()) == 10.0


def test_keras_io_defaults_and_the_two_spellings_never_mix():
    teacher, student = mlp(hidden=32, seed=7), mlp(seed=3)
    distiller = Distiller(teacher, student).compile(
        optimizer="sgd", metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence())
    assert distiller.student_loss_weight == 0.1 and float(distiller.temperature.numpy()) == 3.0  # its defaults
    for mixed in ({"student_loss": "sparse_categorical_crossentropy"}, {"loss": "sparse_categorical_crossentropy"},
                  {"distillation_loss": SoftTargetKLDivergence()}):
        with pytest.raises(ValueError, match=r"keras.io spelling \(student_loss_fn/distillation_loss_fn, where alpha "
                                             r"weights the student loss\) together with keras_kd's"):
            Distiller(mlp(hidden=32, seed=7), mlp(seed=3)).compile(
                optimizer="sgd", student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                alpha=0.1, **mixed)
    # keras_kd's own spelling keeps its meaning: alpha weights the distillation term.
    ours = Distiller(mlp(hidden=32, seed=7), mlp(seed=3)).compile(optimizer="sgd", alpha=0.1)
    assert float(ours.alpha.numpy()) == pytest.approx(0.1) and ours.student_loss_weight == pytest.approx(0.9)
