"""The Distiller: a `keras.Model` that trains a student from a frozen teacher.

What it is built from, one concept per module: the teacher runs in
`keras_kd.teacher` (layer taps, `teacher_dtype`, the built check; the cache
runs it too), the hyperparameters are checked by `keras_kd._validate`, and
what `keras.distillation` code reads back is kept by `keras_kd._compat`.
"""

import warnings

import numpy as np

from keras_kd import _validate
from keras_kd import augment as kd_augment
from keras_kd import losses as kd_losses
from keras_kd._compat import AsGiven, resolve_losses
from keras_kd.backend import LEGACY_KERAS, apply_gradients, keras, scale_loss, tf
from keras_kd.losses._base import describe
from keras_kd.teacher import FINAL_OUTPUT, TeacherRunner, layer_taps

__all__ = ["Distiller"]

_CACHE_KEYS = ("teacher_outputs", "labels")
_CHECK_FINITE = {True: "raise", "raise": "raise", "skip": "skip", False: False}


def _validate_check_finite(check_finite):
    try:
        return _CHECK_FINITE[check_finite]
    except (KeyError, TypeError):
        raise ValueError(
            f"check_finite must be 'raise' (or True), 'skip' or False, got {describe(check_finite)}. 'raise' stops "
            "at a step whose loss or gradients are NaN/inf, 'skip' skips such steps, False does not check."
        ) from None


class _NotAModelError(TypeError, ValueError):
    """A teacher or student that is not a keras.Model.

    Both a TypeError (what it is) and a ValueError (what `keras.distillation`
    raises), so code written for either catches it.
    """


def sparse_labels_are_whole(y):
    """Checks (in the graph) that float sparse labels are whole class ids; casting would truncate 2.7 to 2.

    Returns the list of assert ops to run before the labels are used (empty for integer labels).
    """
    if not y.dtype.is_floating:
        return []
    return [tf.debugging.assert_equal(
        y, tf.round(y),
        message="keras_kd: sparse labels must be whole class ids, but a float label has a fractional part (or is "
                "NaN/inf), e.g. 2.7; it would be truncated silently. Pass integer class ids (y.astype('int32') "
                "after rounding them as you mean to), or one-hot / soft labels of shape (batch, classes).")]


def _output_activation_is_softmax(model):
    """True when the model's last layer (looking inside a nested last model) outputs softmax probabilities."""
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.Model):
        return _output_activation_is_softmax(last)
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def _optimizer_built(optimizer):
    return bool(getattr(optimizer, "built", False)) and len(getattr(optimizer, "variables", ())) > 0


def _is_loss_scale_optimizer(optimizer):
    classes = tuple(cls for cls in (getattr(keras.optimizers, "LossScaleOptimizer", None),
                                    getattr(keras.mixed_precision, "LossScaleOptimizer", None)) if cls is not None)
    return bool(classes) and isinstance(optimizer, classes)


class _LossMeans(keras.metrics.Metric):
    """The running means of a step's loss terms (total, student, distillation), kept in one pair of variables.

    One update per step instead of one per term; `_LossMeanView` gives each
    term its own metric name, so the logs and `evaluate()` list them as before.
    Its `result()` is the first term's mean (the total loss).
    """

    def __init__(self, name="total_loss", terms=3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = self.add_weight(name="sums", shape=(terms,), initializer="zeros")
        self.count = self.add_weight(name="count", shape=(), initializer="zeros")

    def update_state(self, values, sample_weight=None):
        """Adds one step's `values` (one per term); `sample_weight` 0 leaves a skipped step out of the means."""
        if sample_weight is None:
            self.sums.assign_add(values)
            self.count.assign_add(1.0)
        else:
            self.sums.assign_add(values * sample_weight)
            self.count.assign_add(sample_weight)

    def means(self):
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.sums), tf.convert_to_tensor(self.count))

    def result(self):
        return self.means()[0]

    def reset_state(self):
        self.sums.assign(tf.zeros_like(tf.convert_to_tensor(self.sums)))
        self.count.assign(0.0)


class _LossMeanView(keras.metrics.Metric):
    """One term of a `_LossMeans`, under its own name; it holds no state (the owner is updated and reset)."""

    def __init__(self, means, index, name, **kwargs):
        super().__init__(name=name, **kwargs)
        # A function, not the metric itself: as an attribute the owner would count as this metric's sub-metric.
        self._means = means.means
        self._index = index

    def update_state(self, *args, **kwargs):
        pass

    def result(self):
        return self._means()[self._index]

    def reset_state(self):
        pass


class _SkippedStepsWarning(keras.callbacks.Callback):
    """Warns at the end of an epoch in which `check_finite="skip"` skipped steps (read from the epoch's logs)."""

    def on_epoch_end(self, epoch, logs=None):
        skipped = int(round(float((logs or {}).get("non_finite_steps", 0.0))))
        if skipped:
            warnings.warn(
                f"keras_kd: skipped {skipped} training step(s) in epoch {epoch + 1} because the loss or the gradients "
                "were NaN or inf; the weights were not updated by them. Check the inputs for NaN/inf, lower the "
                "learning rate or clip gradients (optimizer clipnorm=1.0).", stacklevel=2,
            )


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(keras.Model):
    """Trains `student` to match a frozen `teacher`, with a scheduled temperature and alpha.

    For the default logit distillation the loss is

        loss = alpha * T**2 * KL(softmax(z_t / T) || softmax(z_s / T))
               + (1 - alpha) * student_loss(y, z_s)

    and with several distillation losses `L_k` weighted by `lambda_k`
    (`distillation_loss_weights`):

        loss = alpha * sum_k lambda_k * L_k + (1 - alpha) * student_loss(y, z_s)

    `alpha` weights the *distillation* term (Hinton's convention). The
    `keras.distillation` argument `student_loss_weight` is accepted and means
    `1 - alpha`. Every loss is computed in float32 from `log_softmax`, even
    under a mixed-precision policy, and reduced over the global batch under
    `tf.distribute` (over real tokens only when labels are `ignore_index`).

    `distiller.alpha`, the per-loss weights and the temperatures are
    non-trainable Variables: callbacks such as
    `keras_kd.callbacks.TemperatureScheduler` assign them during `fit` without
    retracing, and checkpoints keep them.

    Each temperature-using loss has one temperature Variable, created by the
    Distiller (`distiller.temperature_variables`); `distiller.temperature` is
    the first one's. A `temperature=` given to the constructor or `compile()`
    sets every one of them. Otherwise each starts at its loss's own
    temperature, so losses configured at different temperatures (as
    `keras.distillation` allows) keep their own, and a `TemperatureScheduler`
    scales them all by the same factor.

    The teacher is frozen (`teacher.trainable = False`) and run by a
    `keras_kd.teacher.TeacherRunner` (`distiller.teacher_runner`) with
    `training=False`. Intermediate layers that feature losses read come from
    one forward pass of each model. Trainable state that a loss needs (a
    FitNets adapter) is owned by the Distiller, trained with the student and
    left out of `distiller.student`.

    Code written for `keras.distillation.Distiller` runs unchanged (Keras' own
    distiller tests pass against this class), apart from these deliberate
    fixes: `LogitsDistillation()` with its default `"kl_divergence"` is
    computed as the soft-target KL above (softmax and `T**2`), not Keras' KL on
    raw logits; `distillation_losses` defaults to that loss; the temperature
    and weights are Variables; the student runs forward once per step; the
    logs add `temperature` and `alpha` to `loss` / `total_loss`; training with
    an unbuilt teacher is an error (its first call would create random
    weights); a saved Distiller loads compiled.

    Args:
        teacher: a built `keras.Model` giving logits (frozen by the Distiller).
        student: a `keras.Model` giving logits of the teacher's shape.
        distillation_losses: a `keras_kd.losses.DistillationLoss`, a registered
            name, a `keras.distillation` loss, or a list of them. Defaults to
            `SoftTargetKLDivergence()`.
        distillation_loss_weights: one weight per distillation loss (default 1).
        student_loss_weight: `keras.distillation` spelling of `1 - alpha`;
            cannot be combined with `alpha`.
        alpha: weight of the distillation term in [0, 1]; default 0.5.
        temperature: initial temperature > 0; default: the first
            temperature-using loss's own temperature (3.0 for the default).
        teacher_dtype: None, `"bfloat16"` or `"float16"`: run the teacher's
            forward pass in reduced precision (the losses stay float32).
        ignore_index: label value that marks padding (sequence distillation):
            such positions count in neither term.
        check_finite: what to do when the loss or a gradient is NaN or inf;
            it is checked before the update, so such a step never reaches the
            weights. `"raise"` (or True, the default): stop with an error
            naming the step. `"skip"`: skip the step, count it in the logs
            (`non_finite_steps`, per epoch; the loss means leave it out) and
            warn at the end of the epoch. False: no check (a non-finite step
            updates the weights; `keras.callbacks.TerminateOnNaN` then stops
            training as in Keras).
        augment: a Keras layer (called with `training=True`, e.g. a
            `keras.Sequential` of `RandomTranslation`/`RandomFlip`) or a
            callable `x -> x`, applied inside the training step once per batch:
            the teacher and the student see the same view (`keras_kd.augment`).
        mixing: None, `"mixup"`, `"cutmix"` or a `keras_kd.augment.MixUp` /
            `CutMix`: mixes the examples of each batch after `augment`; the
            teacher labels the mixed input (function matching, Beyer et al.
            2022) and the student loss weighs both labels by their share.
        name: model name.

    Example:

    ```python
    import keras, numpy as np, keras_kd

    x = np.random.rand(64, 8).astype("float32"); y = np.random.randint(0, 3, 64)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(3)])
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, verbose=0)
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    distiller = keras_kd.Distiller(teacher=teacher, student=student).compile(
        optimizer="adam", metrics=["accuracy"], alpha=0.7, temperature=4.0)
    history = distiller.fit(x, y, epochs=2, verbose=0)
    sorted(history.history)
    # ['accuracy', 'alpha', 'distillation_loss', 'loss', 'student_loss', 'temperature', 'total_loss']
    ```
    """

    def __init__(self, teacher, student, distillation_losses=None, distillation_loss_weights=None,
                 student_loss_weight=None, alpha=None, temperature=None, teacher_dtype=None, ignore_index=-100,
                 check_finite=True, augment=None, mixing=None, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        self._validate_models(teacher, student)
        if student_loss_weight is not None and alpha is not None:
            raise ValueError(
                f"Pass either alpha={alpha!r} (weight of the distillation term) or student_loss_weight="
                f"{student_loss_weight!r} (the keras.distillation spelling of 1 - alpha), not both."
            )
        if student_loss_weight is not None:
            student_loss_weight = _validate.alpha(student_loss_weight, "student_loss_weight")
        elif alpha is not None:
            alpha = _validate.alpha(alpha)
        if temperature is not None:
            temperature = _validate.temperature(temperature)
        self._weights_given = student_loss_weight is not None or alpha is not None
        self._as_given = AsGiven()
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self.teacher_dtype = teacher_dtype
        self.ignore_index = ignore_index
        self.check_finite = _validate_check_finite(check_finite)
        self.augment = kd_augment.check_augment(augment)
        self.mixing = kd_augment.get_mixing(mixing)
        # Mixing draws stateless randomness from (this seed, step, replica); one Python draw makes it follow
        # keras.utils.set_random_seed.
        self._mixing_seed = int(np.random.randint(0, 2**31 - 1))
        # True once a temperature= argument (here or in compile) has set every loss's temperature: losses set
        # later start at it too, and get_config writes it. The values themselves live in the Variables.
        self._temperature_given = temperature is not None
        self.alpha = self.add_weight(name="alpha", shape=(), dtype="float32", trainable=False,
                                     initializer=keras.initializers.Constant(0.5))
        self.temperature = self.add_weight(
            name="temperature", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(3.0 if temperature is None else temperature),
        )
        if student_loss_weight is not None:
            self._as_given.assign_student_loss_weight(self.alpha, student_loss_weight)
        else:
            self._as_given.assign(self.alpha, 0.5 if alpha is None else alpha)
        self.total_loss_tracker = _LossMeans(name="total_loss")
        self.student_loss_tracker = _LossMeanView(self.total_loss_tracker, 1, name="student_loss")
        self.distillation_loss_tracker = _LossMeanView(self.total_loss_tracker, 2, name="distillation_loss")
        self.non_finite_steps_tracker = (keras.metrics.Sum(name="non_finite_steps")
                                         if self.check_finite == "skip" else None)
        self._student_loss_config = "auto"
        self._student_loss_fn = None
        self._distillation_losses = None
        self._losses_as_given = None
        # Runs the teacher (final output only until the losses name layers to tap; see _build_taps).
        self.teacher_runner = TeacherRunner(teacher, (), teacher_dtype)
        self._uses_input_gradients = False
        self._input_gradient_tape = None
        if distillation_losses is not None:
            self._set_distillation_losses(distillation_losses, distillation_loss_weights)
        elif distillation_loss_weights is not None:
            raise ValueError("distillation_loss_weights was given without distillation_losses.")
        if student.built:
            # Nothing is left to build: the Distiller's own state is created above. Marking it built lets
            # BackupAndRestore and load_weights run before the first step.
            self.built = True
        in_student = kd_augment.augmentation_layers(student)
        if in_student:
            warnings.warn(
                f"The student {student.name!r} contains random augmentation layers ({', '.join(in_student)}): they "
                "run on the student's input only, so the teacher labels a different view than the student sees. "
                "Move them out of the student into Distiller(augment=keras.Sequential([...])), which gives both "
                "models the same view of each batch.", stacklevel=2,
            )
        if _output_activation_is_softmax(student):
            warnings.warn(
                f"The student {student.name!r} ends in a softmax, but distillation losses expect logits "
                "(probabilities would be softmaxed twice). Build the student's last layer with "
                "activation=None.", stacklevel=2,
            )

    # ------------------------------------------------------------------ setup
    def _validate_models(self, teacher, student):
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise _NotAModelError(f"The {role} must be a keras.Model, got {type(model).__name__}.")
        if teacher is student:
            raise ValueError(
                "The teacher and the student are the same model object. Distillation needs a separate "
                "student: build a new (usually smaller) model, or clone the teacher with "
                "keras.models.clone_model(teacher) for self-distillation."
            )

    def _ensure_losses(self):
        if self._distillation_losses is None:
            self._set_distillation_losses([kd_losses.SoftTargetKLDivergence()], None)

    def _set_distillation_losses(self, distillation_losses, weights):
        if self._distillation_losses is not None:
            raise ValueError(
                "The distillation losses of this Distiller are already set (they own Variables and adapters). "
                "To train a new phase with other losses, build a new Distiller(teacher, student, "
                "distillation_losses=...): the student keeps its weights."
            )
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if len(distillation_losses) == 0:
            raise ValueError("distillation_losses is empty; pass at least one loss or None for the default.")
        resolved, as_given = resolve_losses(distillation_losses)
        weights = _validate.loss_weights([1.0] * len(resolved) if weights is None else weights, count=len(resolved))
        self._distillation_losses = resolved
        self._losses_as_given = as_given
        self._loss_weight_variables = [
            self.add_weight(name=f"distillation_loss_weight_{i}", shape=(), dtype="float32", trainable=False,
                            initializer=keras.initializers.Constant(w))
            for i, w in enumerate(weights)
        ]
        for variable, weight in zip(self._loss_weight_variables, weights):
            self._as_given.assign(variable, weight)
        self._temperature_variables = self._make_temperature_variables(resolved)
        self._build_taps()
        self._warn_if_teacher_gives_probabilities()

    def _make_temperature_variables(self, losses):
        """One temperature Variable per temperature-using loss (None for the others); the first is `temperature`.

        Each starts at the loss's own temperature, or at the Distiller's when a
        temperature= argument set it for every loss.
        """
        common = float(self.temperature.numpy())
        variables = []
        for index, loss in enumerate(losses):
            if not loss.uses_temperature:
                variables.append(None)
                continue
            initial = common if self._temperature_given or loss.temperature is None else float(loss.temperature)
            if not any(v is not None for v in variables):
                self.temperature.assign(initial)
                variables.append(self.temperature)
            else:
                variables.append(self.add_weight(name=f"temperature_{index}", shape=(), dtype="float32",
                                                 trainable=False, initializer=keras.initializers.Constant(initial)))
        return variables

    def _warn_if_teacher_gives_probabilities(self):
        """Warns when a softmax teacher feeds a loss that expects logits (softmax(p / T) is nearly uniform)."""
        if not _output_activation_is_softmax(self.teacher):
            return
        on_logits = [loss.name for loss in self._distillation_losses
                     if loss.teacher_layer_name is None and not loss.from_probabilities]
        if on_logits:
            warnings.warn(
                f"The teacher {self.teacher.name!r} ends in a softmax, so it gives probabilities, but the "
                f"distillation losses {on_logits} expect logits: softmax(p / T) of probabilities is nearly "
                "uniform, so the student would learn from flattened targets. Build the teacher's last layer with "
                "activation=None (and copy its weights), or use losses that take probabilities, e.g. "
                "distillation_losses=keras_kd.losses.SoftTargetKLDivergence(from_probabilities=True), which "
                "works from log(p) (softmax(log(p) / T) is the teacher's softened distribution).", stacklevel=4,
            )

    def _build_taps(self):
        """The teacher's runner and the student's view: every layer a loss reads comes from one pass of each."""
        teacher_names, student_names = [], []
        for loss in self._distillation_losses:
            if loss.teacher_layer_name and loss.teacher_layer_name not in teacher_names:
                teacher_names.append(loss.teacher_layer_name)
            if loss.student_layer_name and loss.student_layer_name not in student_names:
                student_names.append(loss.student_layer_name)
        self.teacher_runner = TeacherRunner(self.teacher, teacher_names, self.teacher_dtype)
        self._student_feature_extractor, student_shapes = layer_taps(self.student, student_names, "student")
        teacher_shapes = self.teacher_runner.output_shapes
        states = []
        for loss in self._distillation_losses:
            t_shape = teacher_shapes.get(loss.teacher_layer_name or FINAL_OUTPUT)
            s_shape = student_shapes.get(loss.student_layer_name or FINAL_OUTPUT)
            loss.validate_shapes(t_shape, s_shape)
            states.append(loss.create_state(t_shape, s_shape))
        # Layers owned by the Distiller: trained with the student, never part of it.
        self.loss_states = [s for s in states if s is not None]
        self._states = states
        self._uses_input_gradients = any(loss.uses_input_gradients for loss in self._distillation_losses)

    @property
    def _teacher_feature_extractor(self):
        # keras.distillation's name for the teacher's multi-output view (its tests read it; saving finds the
        # view under it, as before the runner held it).
        return self.teacher_runner.taps

    def _prepare_teacher(self):
        """Makes the reduced-precision teacher in cross-replica context, before a step is traced."""
        if self.teacher_dtype is not None:
            self.teacher_runner.prepare(getattr(self, "distribute_strategy", None))

    def make_train_function(self, *args, **kwargs):
        self._prepare_teacher()
        return super().make_train_function(*args, **kwargs)

    def make_test_function(self, *args, **kwargs):
        self._prepare_teacher()
        return super().make_test_function(*args, **kwargs)

    # --------------------------------------------------------------- compile
    def compile(self, optimizer="adam", loss=None, metrics=None, student_loss=None, distillation_loss=None,
                alpha=None, temperature=None, distillation_loss_weights=None, student_loss_fn=None,
                distillation_loss_fn=None, **kwargs):
        """Configures training and returns the Distiller, so `.compile(...).fit(...)` chains.

        Two spellings are accepted, and `alpha` means what it means in each:

        * keras_kd (and Hinton et al.): `alpha` weights the distillation term,
          `loss = alpha * distillation_loss + (1 - alpha) * student_loss`.
        * the keras.io knowledge-distillation example, recognised by
          `student_loss_fn` / `distillation_loss_fn`: `alpha` weights the
          *student* term, `loss = alpha * student_loss + (1 - alpha) *
          distillation_loss`, with that example's defaults (`alpha=0.1`,
          `temperature=3`). It is `keras.distillation`'s `student_loss_weight`;
          `distiller.alpha` then holds `1 - alpha` and
          `distiller.student_loss_weight` the value given.

        Mixing the two spellings in one call is an error, so the weighting is
        never inverted silently.

        Args:
            optimizer: the student's optimizer.
            loss: `keras.distillation` spelling of `student_loss`.
            metrics: metrics of the student's outputs against the labels.
            student_loss: loss on the labels; default `"auto"`: sparse or
                categorical cross-entropy from logits, chosen by label rank.
            distillation_loss: replaces the distillation losses given to the
                constructor (a loss, name, or list).
            alpha: weight of the distillation term in [0, 1] (of the student
                term with the keras.io spelling).
            temperature: temperature > 0.
            distillation_loss_weights: one weight per distillation loss.
            student_loss_fn: keras.io spelling of `student_loss`.
            distillation_loss_fn: keras.io spelling: a Keras loss applied to
                `softmax(z_t / T)` and `softmax(z_s / T)`, times `T**2`
                (`keras.losses.KLDivergence()` gives the soft-target KL).
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).

        Returns:
            The Distiller.

        Example (the keras.io example, unchanged):

        ```python
        distiller = keras_kd.Distiller(student=student, teacher=teacher)
        distiller.compile(
            optimizer=keras.optimizers.Adam(),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,        # weights the student loss, as in that example
            temperature=10,
        )
        ```
        """
        keras_io = student_loss_fn is not None or distillation_loss_fn is not None
        if keras_io:
            mixed = [name for name, value in (("student_loss", student_loss), ("loss", loss),
                                              ("distillation_loss", distillation_loss)) if value is not None]
            if mixed:
                raise ValueError(
                    f"compile() got the keras.io spelling (student_loss_fn/distillation_loss_fn, where alpha weights "
                    f"the student loss) together with keras_kd's {mixed} (where alpha weights the distillation "
                    "loss). Use one spelling: student_loss_fn= and distillation_loss_fn=, or student_loss= and "
                    "distillation_loss=."
                )
            student_loss = student_loss_fn
            if alpha is not None or not self._weights_given:
                self._as_given.assign_student_loss_weight(
                    self.alpha, _validate.alpha(0.1 if alpha is None else alpha, "alpha (keras.io spelling)"))
                alpha = None
            if temperature is None and not self._temperature_given:
                temperature = 3.0  # the example's default
            if distillation_loss_fn is not None:
                from keras_kd.losses._compat import from_keras_io_distillation_loss_fn

                distillation_loss = from_keras_io_distillation_loss_fn(
                    distillation_loss_fn, _validate.temperature(temperature or float(self.temperature.numpy())))
        if loss is not None and student_loss is not None:
            raise ValueError("Pass the student's loss as student_loss=... or as loss=... (keras spelling), not both.")
        if kwargs.get("loss_weights") is not None:
            raise ValueError("loss_weights is not used by the Distiller; use alpha and distillation_loss_weights.")
        kwargs.pop("loss_weights", None)
        if metrics is not None and not isinstance(metrics, (list, tuple, dict)):
            metrics = [metrics]
        if alpha is not None:
            if self._as_given.student_loss_weight is not None:
                raise ValueError(
                    "This Distiller was built with student_loss_weight (= 1 - alpha); pass alpha to compile() "
                    "only when the constructor did not get student_loss_weight."
                )
            self._as_given.assign(self.alpha, _validate.alpha(alpha))
        if temperature is not None:
            temperature = _validate.temperature(temperature)
        if distillation_loss is not None:
            self._set_distillation_losses(distillation_loss, distillation_loss_weights)
        else:
            self._ensure_losses()
            if distillation_loss_weights is not None:
                weights = _validate.loss_weights(distillation_loss_weights, count=len(self._loss_weight_variables))
                for variable, weight in zip(self._loss_weight_variables, weights):
                    self._as_given.assign(variable, weight)
        if temperature is not None:
            # A temperature given here applies to every loss.
            self._temperature_given = True
            self.temperature.assign(temperature)
            for variable in self.temperature_variables:
                variable.assign(temperature)
        self._student_loss_config = student_loss if student_loss is not None else (loss if loss is not None else "auto")
        self._student_loss_fn = self._resolve_student_loss(self._student_loss_config)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        return self

    @staticmethod
    def _resolve_student_loss(student_loss):
        if student_loss is None or student_loss == "auto":
            return None
        loss = keras.losses.get(student_loss) if isinstance(student_loss, (str, dict)) else student_loss
        if loss is None or not callable(loss):
            raise ValueError(f"Unknown student loss {student_loss!r}; pass a Keras loss name, instance or function.")
        return loss

    # ------------------------------------------------------------ properties
    @property
    def distillation_losses(self):
        """The distillation losses as given: keras_kd losses, or `keras.distillation` objects kept as they were."""
        self._ensure_losses()
        return list(self._losses_as_given)

    @property
    def distillation_loss_names(self):
        """The name each distillation loss logs under (and that `LossWeightScheduler` accepts)."""
        self._ensure_losses()
        return [loss.name for loss in self._distillation_losses]

    @property
    def distillation_loss_weights(self):
        """The current weight of each distillation loss, as Python floats."""
        self._ensure_losses()
        return [self._as_given.read(v) for v in self._loss_weight_variables]

    @property
    def distillation_loss_weight_variables(self):
        """The non-trainable Variables holding each distillation loss's weight (for schedulers)."""
        self._ensure_losses()
        return list(self._loss_weight_variables)

    @property
    def temperature_variables(self):
        """The temperature Variable of each temperature-using loss, in loss order (the first is `temperature`).

        `keras_kd.callbacks.TemperatureScheduler` scales them all by the same
        factor; assigning `distiller.temperature` alone changes the first loss's.
        """
        self._ensure_losses()
        return [v for v in self._temperature_variables if v is not None]

    @property
    def student_loss_weight(self):
        """`1 - alpha`, the `keras.distillation` view of the weights."""
        return self._as_given.read_student_loss_weight(self.alpha)

    @property
    def metrics(self):
        metrics = [self.total_loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker]
        if self.non_finite_steps_tracker is not None:
            metrics.append(self.non_finite_steps_tracker)
        for metric in super().metrics:
            if all(metric is not m for m in metrics) and metric.name != "loss":
                metrics.append(metric)
        return metrics

    # --------------------------------------------------------------- forward
    def call(self, inputs, training=None):
        """Returns the student's outputs (the teacher is not run)."""
        return self.student(inputs, training=training)

    def _student_outputs(self, x, training):
        if self._uses_input_gradients:
            # Input-gradient losses differentiate the student's outputs w.r.t. x inside the training tape
            # (double backprop), so this forward pass is recorded on a tape that watches x too.
            self._input_gradient_tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
            with self._input_gradient_tape:
                self._input_gradient_tape.watch(x)
                if self._student_feature_extractor is not None:
                    return dict(self._student_feature_extractor(x, training=training))
                return {FINAL_OUTPUT: self.student(x, training=training)}
        if self._student_feature_extractor is not None:
            return dict(self._student_feature_extractor(x, training=training))
        return {FINAL_OUTPUT: self.student(x, training=training)}

    # ------------------------------------------------------------------ loss
    def _label_mask(self, y, prediction_rank):
        """1.0 where a label is real, 0.0 where it equals ignore_index (padding)."""
        if y is None or self.ignore_index is None or not y.dtype.is_integer:
            return None
        if len(y.shape) != prediction_rank - 1:
            return None
        return tf.cast(tf.not_equal(y, tf.cast(self.ignore_index, y.dtype)), tf.float32)

    def _check_labels(self, y, logits):
        """Static rank checks and a graph-time range check for sparse labels."""
        rank, classes = len(logits.shape), logits.shape[-1]
        if len(y.shape) == rank and y.shape[-1] == classes and classes != 1:
            return "categorical"
        if len(y.shape) == rank and y.shape[-1] == 1:
            y = tf.squeeze(y, -1)
        if len(y.shape) != rank - 1:
            raise ValueError(
                f"Labels of shape {tuple(y.shape)} do not fit student outputs of shape {tuple(logits.shape)}: "
                f"expected sparse class ids of shape {tuple(logits.shape[:-1])} or one-hot labels of shape "
                f"{tuple(logits.shape)}."
            )
        return "sparse"

    def _student_loss_values(self, y, logits):
        """Per-element student loss (float32) and the padding mask (None when nothing is masked)."""
        logits32 = tf.cast(logits, tf.float32)
        if self._student_loss_fn is not None:
            fn = self._student_loss_fn
            ignore_class = None
            if isinstance(fn, keras.losses.Loss):
                config = fn.get_config()
                ignore_class = config.get("ignore_class")
                config["reduction"] = "none"
                values = fn.__class__.from_config(config)(y, logits32)
            else:
                values = fn(y, logits32)
            # Positions the loss ignores (Keras' ignore_class, or a mask it attaches to its values) and
            # ignore_index padding count in neither term: both means are over the real tokens, as in Keras.
            mask = getattr(values, "_keras_mask", None)
            mask = None if mask is None else tf.cast(mask, tf.float32)
            if ignore_class is not None:
                ignored = tf.cast(tf.not_equal(y, tf.cast(ignore_class, y.dtype)), tf.float32)
                mask = ignored if len(ignored.shape) == len(values.shape) else mask
            padding = self._label_mask(y, len(logits.shape))
            if padding is not None and len(padding.shape) == len(values.shape):
                mask = padding if mask is None else mask * padding
            return tf.cast(values, tf.float32), mask
        kind = self._check_labels(y, logits)
        if kind == "categorical":
            return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, tf.float32), logits32), None
        if len(y.shape) == len(logits.shape):
            y = tf.squeeze(y, -1)
        classes = logits.shape[-1]
        whole = sparse_labels_are_whole(y)
        labels = tf.cast(y, tf.int32)
        mask = self._label_mask(labels, len(logits.shape))
        safe_labels = labels if mask is None else tf.where(mask > 0, labels, tf.zeros_like(labels))
        checks = whole
        if classes is not None:
            # One comparison checks both ends: as uint32 a negative id wraps to above any class count.
            in_range = tf.reduce_all(tf.less(tf.cast(safe_labels, tf.uint32), tf.constant(classes, tf.uint32)))
            checks = checks + [tf.debugging.Assert(in_range, [
                f"keras_kd: labels must be class ids in [0, {classes}) (or ignore_index {self.ignore_index} for "
                f"padding); found a label that is negative or >= {classes}. The student has too few outputs for "
                "these labels, or the labels are not 0-based."])]
        if checks:
            # The cross-entropy kernel rejects bad labels with its own message; make it wait for ours.
            with tf.control_dependencies(checks):
                safe_labels = tf.identity(safe_labels)
        values = tf.nn.sparse_softmax_cross_entropy_with_logits(safe_labels, logits32)
        return values, mask

    @staticmethod
    def _global_mean(values, weights):
        """This replica's share of the mean over the global batch (sums to the mean across replicas)."""
        values = tf.cast(values, tf.float32)
        if weights is None:
            local_sum = tf.reduce_sum(values)
            count = tf.cast(tf.size(values), tf.float32)
        else:
            weights = tf.broadcast_to(tf.cast(weights, tf.float32), tf.shape(values))
            local_sum = tf.reduce_sum(values * weights)
            count = tf.reduce_sum(weights)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce("sum", count)
        return tf.math.divide_no_nan(local_sum, count)

    def compute_distillation_losses(self, x, y, student_outputs, teacher_outputs, sample_weight=None, mix=None):
        """Computes this replica's share of every loss term.

        Returns a dict with `loss`, `student_loss`, `distillation_loss` and one
        entry per distillation loss (`<loss name>`), each already divided by the
        global batch size (under tf.distribute they sum to the global mean).

        `mix` is `(partner, weight)` when the inputs were mixed (see
        `keras_kd.augment`): the student loss is then `weight * L(y) +
        (1 - weight) * L(y[partner])` and losses that read labels get the label
        of the larger part.
        """
        logits = student_outputs[FINAL_OUTPUT]
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        weights = None
        terms = {}
        labels = y
        if y is not None and mix is not None:
            labels = self._dominant_labels(y, mix)
            if sample_weight is not None:
                partner, share = mix
                sw = tf.cast(sample_weight, tf.float32)
                sample_weight = kd_augment.blend(sw, tf.gather(sw, partner), share)
        if y is not None:
            values, weights = self._student_loss_values(y, logits)
            if mix is not None:
                partner, share = mix
                partner_values, partner_weights = self._student_loss_values(tf.gather(y, partner), logits)
                values = kd_augment.blend(values, partner_values, share)
                if weights is not None and partner_weights is not None:
                    weights = tf.maximum(weights, partner_weights)
            if sample_weight is not None:
                sw = tf.cast(sample_weight, tf.float32)
                while len(sw.shape) < len(values.shape):
                    sw = tf.expand_dims(sw, -1)
                weights = sw if weights is None else weights * sw
            if len(values.shape) == 0:
                student_loss = values / num_replicas
            else:
                student_loss = self._global_mean(values, weights)
        else:
            student_loss = tf.constant(0.0)
        weighted = []
        for index, (loss, state) in enumerate(zip(self._distillation_losses, self._states)):
            temperature = self._temperature_variables[index]
            t = teacher_outputs[loss.teacher_layer_name or FINAL_OUTPUT]
            s = student_outputs[loss.student_layer_name or FINAL_OUTPUT]
            extra = ({"input_tape": self._input_gradient_tape, "teacher_model": self.teacher}
                     if loss.uses_input_gradients else {})
            values = loss.compute(t, s, temperature=None if temperature is None else tf.cast(temperature, tf.float32),
                                  labels=labels, state=state, inputs=x, **extra)
            values = tf.cast(values, tf.float32)
            if len(values.shape) == 0:  # a loss that reduced itself (keras.distillation custom losses)
                term = values / num_replicas
            else:
                term = self._global_mean(values, weights if weights is not None and
                                         len(weights.shape) <= len(values.shape) else None)
            terms[loss.name] = term
            weighted.append(tf.cast(self._loss_weight_variables[index], tf.float32) * term)
        distillation_total = weighted[0] if len(weighted) == 1 else tf.add_n(weighted)
        alpha = tf.cast(self.alpha, tf.float32)
        total = alpha * distillation_total + (1.0 - alpha) * student_loss
        regularization = self.student.losses + [l for state in self.loss_states for l in state.losses]
        if regularization:
            total += tf.add_n([tf.cast(r, tf.float32) for r in regularization]) / num_replicas
        terms.update(loss=total, student_loss=student_loss, distillation_loss=distillation_total)
        return terms

    # ----------------------------------------------------------------- steps
    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = None
        if isinstance(y, dict) and "teacher_outputs" in y and set(y) <= set(_CACHE_KEYS):
            teacher_outputs = y["teacher_outputs"]
            if not isinstance(teacher_outputs, dict):
                teacher_outputs = {FINAL_OUTPUT: teacher_outputs}
            teacher_outputs = {k: tf.cast(v, tf.float32) for k, v in teacher_outputs.items()}
            y = y.get("labels")
        return x, y, sample_weight, teacher_outputs

    def _variables_to_train(self):
        variables = list(self.student.trainable_variables)
        for state in self.loss_states:
            variables.extend(state.trainable_variables)
        return variables

    def _update_trackers(self, terms, num_replicas, finite=None):
        # The means hold the per-replica values scaled back to a mean, as Keras does for its own loss. A skipped
        # (non-finite) step counts in non_finite_steps and is left out of the means.
        values = tf.stack([terms["loss"], terms["student_loss"], terms["distillation_loss"]]) * num_replicas
        if finite is None:
            self.total_loss_tracker.update_state(values)
            return
        weight = tf.cast(finite, tf.float32)
        self.total_loss_tracker.update_state(tf.where(finite, values, tf.zeros_like(values)), sample_weight=weight)
        if self.non_finite_steps_tracker is not None:
            # `finite` is agreed across replicas, and Keras reads a metric's replicas as one value (not their
            # sum): each replica counts the whole step.
            self.non_finite_steps_tracker.update_state(1.0 - weight)

    def _logs(self, x, y, y_pred, sample_weight):
        # Every metric's result, the loss means included (computed once: the logs reuse them).
        if y is not None:
            logs = dict(self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        else:
            logs = dict(self.get_metrics_result())
        for tracker in (self.total_loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker,
                        self.non_finite_steps_tracker):
            if tracker is not None and tracker.name not in logs:  # a compute_metrics override may leave them out
                logs[tracker.name] = tracker.result()
        logs["loss"] = logs["total_loss"]
        logs["temperature"] = tf.convert_to_tensor(self.temperature)
        logs["alpha"] = tf.convert_to_tensor(self.alpha)
        if not LEGACY_KERAS and isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces fit's logs with strategy.reduce("MEAN", v, axis=0) under this strategy, which
            # rejects scalars (keras-team/keras#20585); a length-1 vector reduces to the same scalar.
            logs = {key: tf.reshape(value, [1]) for key, value in logs.items()}
        return logs

    def _is_finite(self, loss, gradients):
        """One scalar: the loss and every gradient are finite (a NaN or inf anywhere makes their sum non-finite).

        One reduction per gradient, cheaper than an elementwise check. Under a loss-scale optimizer an inf
        gradient is its own business (it lowers the scale and skips the step), so only the loss is checked.
        """
        total = tf.cast(loss, tf.float32)
        if not _is_loss_scale_optimizer(self.optimizer):
            sums = [tf.reduce_sum(tf.cast(g.values if isinstance(g, tf.IndexedSlices) else g, tf.float32))
                    for g in gradients if g is not None]
            if sums:
                total += tf.add_n(sums)
        return tf.math.is_finite(total)

    def _raise_unless_finite(self, finite, gradients):
        """The gradients, usable only after the check passed: a failing step raises before any update."""
        check = tf.debugging.Assert(
            finite,
            ["keras_kd: the loss or its gradients became non-finite (NaN or inf) at step", self.optimizer.iterations,
             "(counted from 0); the weights were not updated by it. Check the inputs for NaN/inf, lower the "
             "learning rate or clip gradients (optimizer clipnorm=1.0); or pass check_finite='skip' to skip such "
             "steps."],
        )
        with tf.control_dependencies([check]):
            return [None if g is None else tf.nest.map_structure(tf.identity, g, expand_composites=True)
                    for g in gradients]

    def _apply_if_finite(self, finite, gradients, variables):
        """Applies the gradients only when `finite` holds on every replica; otherwise the step is skipped."""
        optimizer = self.optimizer
        if hasattr(optimizer, "built") and not optimizer.built:
            optimizer.build(variables)  # variables cannot be created inside a branch of tf.cond

        def apply():
            apply_gradients(optimizer, gradients, variables)

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            tf.cond(finite, apply, lambda: None)
            return finite
        # Every replica must take the same branch: the update all-reduces the gradients.
        finite = tf.equal(context.all_reduce("sum", 1.0 - tf.cast(finite, tf.float32)), 0.0)
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, apply, lambda: None)
            return finite

        # A cond whose branch calls merge_call (as apply_gradients does) must run in cross-replica context,
        # as keras.optimizers.LossScaleOptimizer does it.
        def cross_replica(strategy, finite_per_replica, gradients):
            agreed = strategy.experimental_local_results(finite_per_replica)[0]

            def apply_on_replicas():
                strategy.extended.call_for_each_replica(
                    lambda grads: apply_gradients(optimizer, grads, variables), args=(gradients,))

            tf.cond(agreed, apply_on_replicas, lambda: None)

        context.merge_call(cross_replica, args=(finite, gradients))
        return finite

    def _augmented(self, x):
        """The batch's one view for both models: `augment`, then `mixing` (`mix` is None without mixing)."""
        return kd_augment.augmented_view(self.augment, self.mixing, x, self._mixing_seed, self.optimizer.iterations)

    @staticmethod
    def _dominant_labels(y, mix):
        """Per example, the label of the larger part of a mixed input (for metrics and label-reading losses)."""
        partner, share = mix
        own = kd_augment.per_example(share >= 0.5, y)
        return tf.where(own, y, tf.gather(y, partner))

    def _refuse_augmenting_cached(self):
        raise ValueError(
            f"This Distiller has augment={self.augment!r} and mixing={self.mixing!r}, but the data carries cached "
            "teacher outputs (from keras_kd.cache_teacher_outputs): a cached teacher labelled the un-augmented "
            "inputs and cannot see the new view of each step. Train on the raw (x, y) data so the teacher runs on "
            "the augmented batch, or drop augment=/mixing= to use the cache."
        )

    def train_step(self, data):
        x, y, sample_weight, teacher_outputs = self._unpack(data)
        mix = None
        if self.augment is not None or self.mixing is not None:
            if teacher_outputs is not None:
                self._refuse_augmenting_cached()
            x, mix = self._augmented(x)
        if teacher_outputs is None:
            teacher_outputs = self.teacher_runner(x)
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self._variables_to_train()
        with tf.GradientTape() as tape:
            student_outputs = self._student_outputs(x, training=True)
            terms = self.compute_distillation_losses(x, y, student_outputs, teacher_outputs, sample_weight, mix=mix)
            scaled = scale_loss(self.optimizer, terms["loss"])
        gradients = tape.gradient(scaled, variables)
        finite = None
        if self.check_finite == "raise":
            gradients = self._raise_unless_finite(self._is_finite(terms["loss"], gradients), gradients)
        if self.check_finite == "skip":
            finite = self._apply_if_finite(self._is_finite(terms["loss"], gradients), gradients, variables)
        else:
            apply_gradients(self.optimizer, gradients, variables)
        self._update_trackers(terms, num_replicas, finite)
        if mix is not None and y is not None:
            y = self._dominant_labels(y, mix)
        return self._logs(x, y, student_outputs[FINAL_OUTPUT], sample_weight)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; with `check_finite="skip"` it warns at the end of an epoch that skipped steps."""
        if self.check_finite == "skip":
            position = 5  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
            if len(args) > position:
                args = list(args)
                args[position] = list(args[position] or []) + [_SkippedStepsWarning()]
            else:
                kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [_SkippedStepsWarning()]
        return super().fit(*args, **kwargs)

    def test_step(self, data):
        x, y, sample_weight, teacher_outputs = self._unpack(data)
        if teacher_outputs is None:
            teacher_outputs = self.teacher_runner(x)
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        student_outputs = self._student_outputs(x, training=False)
        terms = self.compute_distillation_losses(x, y, student_outputs, teacher_outputs, sample_weight)
        self._update_trackers(terms, num_replicas)
        return self._logs(x, y, student_outputs[FINAL_OUTPUT], sample_weight)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 builds by reducing a whole nested batch with strategy.reduce, which
        # MultiWorkerMirroredStrategy rejects (keras-team/keras#20585), so Keras 3 `fit` fails under it.
        # The shapes are all that matter for that build: take this worker's first local replica instead.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(x, training=False)

    def reset_metrics(self):
        super().reset_metrics()
        for tracker in (self.total_loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker,
                        self.non_finite_steps_tracker):
            if tracker is not None:
                tracker.reset_state()

    # ---------------------------------------------------------------- config
    def get_compile_config(self):
        """The compile arguments, with the student loss, so a saved Distiller loads compiled."""
        config = super().get_compile_config()
        if config:
            config = dict(config)
            student_loss = self._student_loss_config
            config["student_loss"] = (student_loss if isinstance(student_loss, str)
                                      else keras.saving.serialize_keras_object(student_loss))
            # Whether the saved file holds the optimizer's slots, so loading builds it only then.
            config["optimizer_built"] = _optimizer_built(getattr(self, "optimizer", None))
        return config

    def compile_from_config(self, config):
        """Compiles as `compile()` did before saving (alpha, temperature and weights come from the weights)."""
        config = dict(keras.saving.deserialize_keras_object(config))
        config.pop("loss", None)
        config.pop("loss_weights", None)
        optimizer_built = config.pop("optimizer_built", True)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built and optimizer_built:
            # Built over the variables train_step updates, in that order, so the saved slots load onto them.
            self.optimizer.build(self._variables_to_train())

    def get_config(self):
        self._ensure_losses()
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [keras.saving.serialize_keras_object(l) for l in self._losses_as_given],
            "distillation_loss_weights": self.distillation_loss_weights,
            **({"student_loss_weight": self.student_loss_weight} if self._as_given.student_loss_weight is not None
               else {"alpha": self._as_given.read(self.alpha)}),
            # None when the losses' own temperatures set them: from_config then rebuilds the same per-loss
            # temperatures (a scheduled value lives in the weights, which load_model restores).
            "temperature": self.temperature.numpy().item() if self._temperature_given else None,
            "teacher_dtype": self.teacher_dtype,
            "ignore_index": self.ignore_index,
            "check_finite": self.check_finite,
            "augment": kd_augment.serialize_augment(self.augment),
            "mixing": None if self.mixing is None else keras.saving.serialize_keras_object(self.mixing),
            # The teacher's or student's own optimizer, from training before distillation, is saved with them;
            # from_config builds it only when it had been built, so its saved state loads.
            "built_optimizers": [role for role, model in (("teacher", self.teacher), ("student", self.student))
                                 if _optimizer_built(getattr(model, "optimizer", None))],
        }

    @staticmethod
    def _deserialize_model(config, custom_objects, optimizer_built):
        """Rebuilds the teacher or student compiled, its optimizer built exactly when the saved one was.

        A teacher compiled and trained before distillation is saved with its optimizer's slots, built while it
        was trainable. Keras would compile the loaded (frozen) copy with an optimizer built over no variables,
        then skip its saved state with a warning; building it over the model's variables, as when they were
        trainable, restores that state. An optimizer saved unbuilt stays unbuilt (nothing to restore).
        """
        compile_config = config.get("compile_config") if isinstance(config, dict) else None
        if not compile_config:
            return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
        config = {key: value for key, value in config.items() if key != "compile_config"}
        model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
        if not optimizer_built:
            with keras.saving.custom_object_scope(custom_objects or {}):
                model.compile(**keras.saving.deserialize_keras_object(compile_config))
            return model
        layers, stack = [], [model]
        while stack:
            layer = stack.pop()
            layers.append(layer)
            stack.extend(getattr(layer, "layers", []))
        frozen = [(layer, layer.trainable) for layer in layers]
        for layer, _ in frozen:
            layer.trainable = True
        try:
            with keras.saving.custom_object_scope(custom_objects or {}):
                model.compile_from_config(compile_config)
        finally:
            for layer, trainable in frozen:
                layer.trainable = trainable
        return model

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        built = config.pop("built_optimizers", ("teacher", "student"))
        config["teacher"] = cls._deserialize_model(config["teacher"], custom_objects, "teacher" in built)
        config["student"] = cls._deserialize_model(config["student"], custom_objects, "student" in built)
        for key in ("augment", "mixing"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(l, custom_objects=custom_objects) if isinstance(l, dict) else l
            for l in config["distillation_losses"]
        ]
        return cls(**config)
