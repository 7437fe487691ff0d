"""Curriculum callbacks: schedule the temperature, alpha and loss weights during `fit`.

They are shaped like `keras.callbacks.LearningRateScheduler`: a
`schedule(step, current_value) -> value` called at the start of each epoch
(or batch), whose value is `.assign()`ed to a non-trainable Variable of the
Distiller, so the compiled train step sees it on the next step without
retracing. The value also goes into the logs (for History and TensorBoard).

`TFLiteEvalCallback` converts the model to `.tflite` during `fit` and logs the
real file's accuracy, so checkpoints can keep the epoch whose INT8 file is best.
"""

import inspect
import os
import tempfile

from keras_kd import _validate
from keras_kd import schedules as kd_schedules
from keras_kd.backend import keras
from keras_kd.export._convert import (
    DEFAULT_CALIBRATION_SAMPLES,
    is_quantization_aware,
    normalize_io_dtype,
    normalize_quantization,
    to_tflite,
)
from keras_kd.export._evaluate import split_validation_data, validate

__all__ = ["VariableScheduler", "TemperatureScheduler", "AlphaScheduler", "LossWeightScheduler",
           "TFLiteEvalCallback"]


def _call_schedule(schedule, step, current):
    """Calls `schedule(step, current)`, or `schedule(step)` for one-argument callables (as Keras does)."""
    try:
        parameters = inspect.signature(schedule).parameters.values()
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_two = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)
    except (TypeError, ValueError):
        takes_two = True
    return schedule(step, current) if takes_two else schedule(step)


class VariableScheduler(keras.callbacks.Callback):
    """Assigns `schedule(step, current_value)` to a Variable of the model during `fit`.

    The subclasses name the variable; use this class directly for your own
    scheduled Variables.

    Args:
        schedule: a `keras_kd.schedules` object, a config dict, a number, or a
            callable `schedule(step, current_value) -> float` (one-argument
            callables `schedule(step)` work too).
        update: `"epoch"` (step = epoch index, set at each epoch start) or
            `"batch"` (step = the optimizer's global iteration count, set before
            each batch, so a resumed run continues where it stopped).
        verbose: 1 prints each change.
        variable_getter: `model -> Variable`.
        log_name: key under which the value is written into the logs.
        validate: `value -> error text or None`.

    Subclasses that move several Variables together override `_assign`.
    """

    def __init__(self, schedule, update="epoch", verbose=0, variable_getter=None, log_name=None, validate=None):
        super().__init__()
        if update not in ("epoch", "batch"):
            raise ValueError(f"update must be 'epoch' or 'batch', got {update!r}.")
        self.schedule = kd_schedules.get(schedule)
        self.update = update
        self.verbose = verbose
        self._variable_getter = variable_getter
        self.log_name = log_name
        self._validate = validate
        self._epoch = 0

    def _variable(self):
        return self._variable_getter(self.model)

    def _set(self, step, where):
        variable = self._variable()
        current = float(variable.numpy())
        value = _call_schedule(self.schedule, step, current)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{type(self).__name__}: the schedule returned {value!r} at {where}, which is not a number."
            ) from None
        problem = self._validate(value) if self._validate else None
        if problem:
            self.model.stop_training = True
            raise ValueError(f"{type(self).__name__}: the schedule returned {value!r} at {where}; {problem} "
                             "Fix the schedule (its start/end values or its formula).")
        if value != current:
            self._assign(variable, value, current)
            if self.verbose:
                print(f"\n{type(self).__name__}: {self.log_name} set to {value:g} at {where}.")

    def _assign(self, variable, value, current):
        variable.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.update == "epoch":
            self._set(epoch, f"epoch {epoch}")

    def on_train_batch_begin(self, batch, logs=None):
        if self.update == "batch":
            step = int(self.model.optimizer.iterations.numpy())
            self._set(step, f"epoch {self._epoch}, step {step}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.log_name:
            logs[self.log_name] = float(self._variable().numpy())


class TemperatureScheduler(VariableScheduler):
    """Schedules `distiller.temperature` (a curriculum on the softness of the teacher's targets).

    Args:
        schedule: `schedule(epoch, current_temperature) -> temperature`, or a
            `keras_kd.schedules` object.
        update: `"epoch"` or `"batch"` (see `VariableScheduler`).
        verbose: 1 prints each change.

    A value that is not finite or <= 0 stops training with an error naming
    the epoch and the value.

    On a Distiller whose losses each have a temperature Variable
    (`distiller.temperature_variables`), the schedule sets the first one
    (`distiller.temperature`) and scales the others by the same factor, so
    losses configured at different temperatures keep their ratio.

    Example:

    ```python
    from keras_kd import schedules
    distiller.fit(x, y, epochs=10, callbacks=[
        TemperatureScheduler(schedules.Linear(8.0, 2.0, steps=10)),
        AlphaScheduler(lambda epoch, alpha: 0.9 if epoch < 5 else 0.5),
    ])
    ```
    """

    def __init__(self, schedule, update="epoch", verbose=0):
        super().__init__(schedule, update, verbose, variable_getter=lambda model: model.temperature,
                         log_name="temperature",
                         validate=lambda v: _validate.scheduled_value_problem("temperature", v, "the temperature"))

    def _assign(self, variable, value, current):
        # Models other than a Distiller may have one temperature Variable only.
        for other in getattr(self.model, "temperature_variables", ()):
            if other is not variable:
                other.assign(float(other.numpy()) * (value / current))
        variable.assign(value)


class AlphaScheduler(VariableScheduler):
    """Schedules `distiller.alpha`, the weight of the distillation term.

    `loss = alpha * distillation_loss + (1 - alpha) * student_loss`. A value
    outside [0, 1] stops training with an error naming the epoch and value.

    Example:

    ```python
    AlphaScheduler(keras_kd.schedules.Cosine(0.9, 0.1, steps=20))
    ```
    """

    def __init__(self, schedule, update="epoch", verbose=0):
        super().__init__(schedule, update, verbose, variable_getter=lambda model: model.alpha,
                         log_name="alpha", validate=lambda v: _validate.scheduled_value_problem("alpha", v, "alpha"))


class LossWeightScheduler(VariableScheduler):
    """Schedules the weight `lambda_k` of one distillation loss.

    Args:
        loss: the loss's index in `distiller.distillation_losses` or its name.
        schedule: as for `TemperatureScheduler`.
        update: `"epoch"` or `"batch"`.
        verbose: 1 prints each change.

    The value is logged as `<loss name>_weight`.

    Example:

    ```python
    # switch the FitNets hint off after 5 epochs
    LossWeightScheduler("fitnets", keras_kd.schedules.Step([5], [1.0, 0.0]))
    ```
    """

    def __init__(self, loss, schedule, update="epoch", verbose=0):
        self.loss = loss
        super().__init__(schedule, update, verbose, variable_getter=self._weight_variable, log_name=None,
                         validate=lambda v: _validate.scheduled_value_problem("loss weight", v, "a loss weight"))

    def _index(self, model):
        names = model.distillation_loss_names
        if _validate.is_number(self.loss, integer=True):
            if not 0 <= self.loss < len(names):
                raise ValueError(f"LossWeightScheduler: loss index {self.loss} is out of range; the "
                                 f"Distiller has {len(names)} losses: {names}.")
            return int(self.loss)
        if self.loss not in names:
            raise ValueError(f"LossWeightScheduler: no distillation loss named {self.loss!r}; the Distiller's "
                             f"losses are {names}.")
        return names.index(self.loss)

    def _weight_variable(self, model):
        index = self._index(model)
        self.log_name = f"{model.distillation_loss_names[index]}_weight"
        return model.distillation_loss_weight_variables[index]


# --------------------------------------------------------------------------- export in the loop


class TFLiteEvalCallback(keras.callbacks.Callback):
    """Converts the model to `.tflite` every N epochs and logs the real file's accuracy.

    The float model and its INT8 file can rank epochs differently; this callback
    measures the file itself. It writes `val_tflite_accuracy` (with labels) and
    `val_tflite_agreement` (top-1 agreement with the Keras model) into the epoch
    logs, so `keras.callbacks.ModelCheckpoint(monitor="val_tflite_accuracy",
    mode="max")` and `EarlyStopping` can use them. Place this callback BEFORE
    those in the `callbacks` list: Keras calls them in order with the same logs.
    On epochs that are skipped (`every_n_epochs` > 1) the keys are absent.

    On a Distiller (a model with a `.student` attribute) the student is
    converted; `model_getter` overrides which model is converted.

    Args:
        validation_data: `x` or `(x, y)` to evaluate the file on.
        every_n_epochs: evaluate after every N-th epoch.
        quantization: passed to `to_tflite` ("int8" by default).
        representative_data: calibration data for post-training INT8; defaults to
            the validation inputs (fine for model selection; use training inputs
            for the final export).
        model_getter: `callable(model) -> keras.Model` choosing what to convert.
        io_dtype, num_calibration_samples, allow_float_fallback: passed to `to_tflite`.
        batch_size: evaluation batch size.
        verbose: 1 prints the figures after each evaluation.

    Attributes:
        history: list of `(epoch, {"val_tflite_accuracy": ..., "val_tflite_agreement": ..., "size_bytes": ...})`.

    Example:

    ```python
    callbacks = [
        TFLiteEvalCallback((x_val, y_val), representative_data=x_train[:200]),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="val_tflite_accuracy", mode="max",
                                        save_best_only=True),
    ]
    distiller.fit(x_train, y_train, epochs=10, callbacks=callbacks)
    ```
    """

    def __init__(
        self,
        validation_data,
        every_n_epochs=1,
        quantization="int8",
        representative_data=None,
        model_getter=None,
        io_dtype=None,
        num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
        allow_float_fallback=False,
        batch_size=256,
        verbose=0,
    ):
        super().__init__()
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        if model_getter is not None and not callable(model_getter):
            raise TypeError(f"model_getter must be a callable model -> keras.Model, got {type(model_getter).__name__}.")
        self.x, self.y = split_validation_data(validation_data)
        if len(self.x[0] if isinstance(self.x, list) else self.x) == 0:
            raise ValueError("validation_data is empty; pass at least one sample (typically a few hundred).")
        self.every_n_epochs = int(every_n_epochs)
        self.quantization = normalize_quantization(quantization)
        self.io_dtype = normalize_io_dtype(io_dtype, self.quantization)
        self.representative_data = representative_data
        self.model_getter = model_getter
        self.num_calibration_samples = int(num_calibration_samples)
        self.allow_float_fallback = allow_float_fallback
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.history = []

    def _target_model(self):
        if self.model_getter is not None:
            return self.model_getter(self.model)
        student = getattr(self.model, "student", None)
        return student if isinstance(student, keras.Model) else self.model

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        model = self._target_model()
        representative = self.representative_data
        if representative is None and self.quantization == "int8" and not is_quantization_aware(model):
            representative = self.x
        with tempfile.TemporaryDirectory(prefix="keras_kd_tflite_eval_") as folder:
            report = to_tflite(
                model,
                os.path.join(folder, "model.tflite"),
                quantization=self.quantization,
                representative_data=representative,
                io_dtype=self.io_dtype,
                num_calibration_samples=self.num_calibration_samples,
                allow_float_fallback=self.allow_float_fallback,
            )
            result = validate(model, report.path, self.x, self.y, batch_size=self.batch_size)
        values = {"val_tflite_agreement": result.agreement}
        if result.tflite_accuracy is not None:
            values["val_tflite_accuracy"] = result.tflite_accuracy
        if logs is not None:
            logs.update(values)
        self.history.append((int(epoch), {**values, "size_bytes": report.size_bytes}))
        if self.verbose:
            figures = ", ".join(f"{key}={value:.4f}" for key, value in values.items())
            print(f"Epoch {epoch + 1}: {self.quantization or 'float32'} .tflite ({report.size_bytes} bytes): {figures}")
