"""Curriculum callbacks drive the Distiller's Variables during fit."""

import numpy as np
import pytest

from keras_kd import schedules
from keras_kd.backend import keras
from keras_kd.callbacks import AlphaScheduler, LossWeightScheduler, TemperatureScheduler, VariableScheduler
from keras_kd.distiller import Distiller
from keras_kd.losses import SoftTargetKLDivergence
from tests.helpers import mlp, toy_data, trained_teacher

pytestmark = pytest.mark.legacy_keras


@pytest.fixture
def distiller():
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)
    model = Distiller(teacher=teacher, student=mlp(seed=3), distillation_losses=[SoftTargetKLDivergence()])
    return model.compile(optimizer="adam"), x, y


def test_epoch_schedules_reach_history(distiller):
    model, x, y = distiller
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[
        TemperatureScheduler(schedules.Linear(8.0, 2.0, steps=3)),
        AlphaScheduler(lambda epoch, alpha: 0.9 if epoch < 2 else 0.4),
        LossWeightScheduler("soft_target_kl", schedules.Step([3], [1.0, 0.5])),
    ])
    assert history.history["temperature"] == pytest.approx([8.0, 6.0, 4.0, 2.0])
    assert history.history["alpha"] == pytest.approx([0.9, 0.9, 0.4, 0.4])
    assert history.history["soft_target_kl_weight"] == pytest.approx([1.0, 1.0, 1.0, 0.5])
    assert model.distillation_loss_weights == [0.5]


def test_one_argument_schedule_and_batch_updates(distiller):
    model, x, y = distiller
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.temperature.numpy()))

    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[TemperatureScheduler(lambda step: 1.0 + step, update="batch"), Record()])
    # 2 batches per epoch; the step is the optimizer's global iteration count
    assert seen == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "callback,message",
    [
        (TemperatureScheduler(lambda epoch: 2.0 - epoch), r"returned 0\.0 at epoch 2; the temperature must be"),
        (TemperatureScheduler(lambda epoch: float("nan") if epoch == 1 else 2.0), r"returned nan at epoch 1"),
        (AlphaScheduler(lambda epoch: 0.5 + epoch * 0.4), r"returned 1\.3 at epoch 2; alpha must be in \[0, 1\]"),
        (LossWeightScheduler(0, lambda epoch: -1.0), r"returned -1\.0 at epoch 0; a loss weight must be"),
        (AlphaScheduler(lambda epoch: "high"), r"returned 'high' at epoch 0, which is not a number"),
    ],
)
def test_out_of_domain_values_stop_training(distiller, callback, message):
    model, x, y = distiller
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[callback])


def test_loss_weight_scheduler_unknown_loss(distiller):
    model, x, y = distiller
    with pytest.raises(ValueError, match="no distillation loss named 'fitnets'"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LossWeightScheduler("fitnets", 1.0)])
    with pytest.raises(ValueError, match="loss index 3 is out of range"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LossWeightScheduler(3, 1.0)])


def test_bad_update_mode():
    with pytest.raises(ValueError, match="update must be 'epoch' or 'batch'"):
        TemperatureScheduler(2.0, update="step")


def test_generic_variable_scheduler(distiller):
    model, x, y = distiller
    callback = VariableScheduler(schedules.Constant(0.2), variable_getter=lambda m: m.alpha, log_name="alpha")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert float(model.alpha) == pytest.approx(0.2)


def test_values_reach_tensorboard(distiller, tmp_path):
    model, x, y = distiller
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        TemperatureScheduler(schedules.Linear(4.0, 2.0, steps=1)),
        keras.callbacks.TensorBoard(log_dir=str(tmp_path)),
    ])
    import tensorflow as tf

    tags = set()
    for path in tmp_path.rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add(value.tag)
    assert any("temperature" in tag for tag in tags), tags
    assert np.isfinite(float(model.temperature))
