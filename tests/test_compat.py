"""keras_kd._compat: what keras.distillation code reads back is what it wrote."""

import pytest

from keras_kd import _compat
from keras_kd import losses as kd_losses
from keras_kd.backend import keras, tf

pytestmark = pytest.mark.legacy_keras


def test_as_given_reads_back_the_python_number_while_the_variable_holds_it():
    as_given = _compat.AsGiven()
    variable = tf.Variable(0.0, dtype="float32")
    as_given.assign(variable, 0.7)
    assert variable.numpy().item() != 0.7 and as_given.read(variable) == 0.7
    variable.assign(0.25)  # a scheduler moved it: the Variable wins
    assert as_given.read(variable) == 0.25


def test_student_loss_weight_reads_back_unchanged_until_alpha_moves():
    as_given = _compat.AsGiven()
    alpha = tf.Variable(0.0, dtype="float32")
    as_given.assign_student_loss_weight(alpha, 0.3)
    assert as_given.read_student_loss_weight(alpha) == 0.3 and as_given.student_loss_weight == 0.3
    alpha.assign(0.5)
    assert as_given.read_student_loss_weight(alpha) == 0.5


def test_resolve_losses_keeps_keras_objects_as_given_and_trains_keras_kd_ones():
    resolved, as_given = _compat.resolve_losses(["soft_target_kl", kd_losses.LogitMSE()])
    assert [type(l).__name__ for l in resolved] == ["SoftTargetKLDivergence", "LogitMSE"]
    assert as_given == resolved
    if not hasattr(keras, "distillation"):
        pytest.skip("keras.distillation needs Keras >= 3.12 (not tf_keras)")
    given = keras.distillation.LogitsDistillation(temperature=2.0)
    resolved, as_given = _compat.resolve_losses([given])
    assert isinstance(resolved[0], kd_losses.DistillationLoss) and as_given[0] is given
