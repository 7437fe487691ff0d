"""The Distiller: a `keras.Model` that trains a student from a frozen teacher."""

import math
import warnings

import numpy as np

from keras_kd import augment as kd_augment
from keras_kd import losses as kd_losses
from keras_kd.backend import LEGACY_KERAS, apply_gradients, keras, scale_loss, tf
from keras_kd.losses._base import describe, is_number

__all__ = ["Distiller"]

FINAL_OUTPUT = "final_output"
_CACHE_KEYS = ("teacher_outputs", "labels")
_REDUCED_DTYPES = ("bfloat16", "float16")


_WEIGHT_FORMULAS = {
    "alpha": "It weights the distillation term: loss = alpha * distillation_loss + (1 - alpha) * student_loss.",
    "student_loss_weight": "It weights the student term: loss = student_loss_weight * student_loss + "
                           "(1 - student_loss_weight) * distillation_loss.",
    "alpha (keras.io spelling)": "With student_loss_fn/distillation_loss_fn (the keras.io example) it weights the "
                                 "student term: loss = alpha * student_loss + (1 - alpha) * distillation_loss.",
}


def _validate_alpha(alpha, what="alpha"):
    if not is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{what.split()[0]} must be a number in [0, 1], got {describe(alpha)}. "
                         f"{_WEIGHT_FORMULAS[what]}")
    return float(alpha)


def _validate_temperature(temperature):
    if not is_number(temperature) or not math.isfinite(float(temperature)) or float(temperature) <= 0.0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {describe(temperature)}. Typical values are 1 to 10 "
            "(higher gives softer teacher targets)."
        )
    return float(temperature)


_CHECK_FINITE = {True: "raise", "raise": "raise", "skip": "skip", False: False}


def _validate_check_finite(check_finite):
    try:
        return _CHECK_FINITE[check_finite]
    except (KeyError, TypeError):
        raise ValueError(
            f"check_finite must be 'raise' (or True), 'skip' or False, got {describe(check_finite)}. 'raise' stops "
            "at a step whose loss or gradients are NaN/inf, 'skip' skips such steps, False does not check."
        ) from None


def _validate_loss_weights(weights):
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ValueError(f"distillation_loss_weights must be a list with one number per loss, got {describe(weights)}.")
    weights = list(weights)
    for weight in weights:
        if not is_number(weight) or not math.isfinite(float(weight)) or weight < 0:
            raise ValueError(f"distillation_loss_weights must be finite numbers >= 0, got {weights!r}.")
    return [float(w) for w in weights]


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


def _is_built(model):
    return bool(model.built) and len(model.weights) > 0


def _require_built_teacher(teacher):
    """Raises when `teacher` has no weights yet: its first call would teach from random weights."""
    if not _is_built(teacher):
        raise ValueError(
            f"The teacher {teacher.name!r} is not built (it has no weights yet), so it has nothing to "
            "teach: its first call would create random weights. Train or load the teacher first, or call "
            "teacher.build(input_shape) and load its weights."
        )


def _single_output_shape(model):
    """The static shape of a model's only output, or None when unknown or several."""
    outputs = getattr(model, "outputs", None)
    try:
        if outputs and len(outputs) == 1:
            return tuple(outputs[0].shape)
    except (AttributeError, ValueError):
        pass
    return None


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


def _is_keras_loss_object(loss):
    """True for a loss object from Keras' own modules (a `keras.distillation` loss), not a keras_kd one."""
    return not isinstance(loss, (str, dict, kd_losses.DistillationLoss)) and type(loss).__module__.startswith("keras")


def _adapt_keras_distillation_loss(loss):
    """Accepts `keras.distillation` loss objects (Keras >= 3.12) with the same meaning."""
    module = type(loss).__module__
    if not module.startswith("keras"):
        return None
    from keras_kd.losses._compat import from_keras_distillation_loss

    return from_keras_distillation_loss(loss)


def _optimizer_built(optimizer):
    return bool(getattr(optimizer, "built", False)) and len(getattr(optimizer, "variables", ())) > 0


def _is_loss_scale_optimizer(optimizer):
    classes = tuple(cls for cls in (getattr(keras.optimizers, "LossScaleOptimizer", None),
                                    getattr(keras.mixed_precision, "LossScaleOptimizer", None)) if cls is not None)
    return bool(classes) and isinstance(optimizer, classes)


def _broadcast_share(share, like):
    """A per-example `share` of shape (batch,) reshaped to broadcast against `like` (batch, ...)."""
    return tf.reshape(share, [-1] + [1] * (len(like.shape) - 1))


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

    `distiller.temperature`, `distiller.alpha` and the per-loss weights are
    non-trainable Variables: callbacks such as
    `keras_kd.callbacks.TemperatureScheduler` assign them during `fit` without
    retracing, and checkpoints keep them.

    The teacher is frozen (`teacher.trainable = False`) and called with
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

    Losses configured at different temperatures (as `keras.distillation`
    allows) each keep their own: `distiller.temperature` is the first one's and
    the others keep their ratio to it, so a `TemperatureScheduler` scales them
    all. A `temperature=` given to the constructor or `compile()` applies to
    every loss.

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
            alpha = 1.0 - _validate_alpha(student_loss_weight, "student_loss_weight")
        self._alpha_from_student_loss_weight = student_loss_weight is not None
        self._weights_given = student_loss_weight is not None or alpha is not None
        # Python values as given, returned by the properties while the Variables still hold them (the
        # Variables are float32: 1 - float32(0.3) is not 0.7, and keras.distillation code compares them).
        self._given_values = {}
        self._given_student_loss_weight = None if student_loss_weight is None else float(student_loss_weight)
        if teacher_dtype is not None and teacher_dtype not in _REDUCED_DTYPES:
            raise ValueError(f"teacher_dtype must be None, 'bfloat16' or 'float16', got {teacher_dtype!r}.")
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
        self._explicit_temperature = temperature is not None
        self.alpha = self.add_weight(
            name="alpha", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(_validate_alpha(0.5 if alpha is None else alpha)),
        )
        self.temperature = self.add_weight(
            name="temperature", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(_validate_temperature(3.0 if temperature is None else temperature)),
        )
        self._remember(self.alpha, _validate_alpha(0.5 if alpha is None else alpha))
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.non_finite_steps_tracker = (keras.metrics.Sum(name="non_finite_steps")
                                         if self.check_finite == "skip" else None)
        self._reduced_teacher = None
        self._student_loss_config = "auto"
        self._student_loss_fn = None
        self._distillation_losses = None
        self._given_losses = None
        self._temperature_ratios = None
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

    def _check_teacher_built(self):
        # Checked when the teacher is about to teach, not in the constructor: keras.distillation accepts an
        # unbuilt teacher there (and from_config rebuilds one before load_model restores its weights).
        _require_built_teacher(self.teacher)

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
        resolved = []
        for loss in distillation_losses:
            adapted = _adapt_keras_distillation_loss(loss) if not isinstance(loss, kd_losses.DistillationLoss) else None
            resolved.append(adapted if adapted is not None else kd_losses.get(loss))
        if weights is None:
            weights = [1.0] * len(resolved)
        weights = _validate_loss_weights(weights)
        if len(weights) != len(resolved):
            raise ValueError(
                f"distillation_loss_weights has {len(weights)} values but there are {len(resolved)} "
                "distillation losses; give one weight per loss."
            )
        self._distillation_losses = resolved
        # keras.distillation objects are kept as the user gave them (code written for Keras inspects and
        # serializes them); training uses their keras_kd equivalents in self._distillation_losses.
        self._given_losses = [given if _is_keras_loss_object(given) else loss
                              for given, loss in zip(distillation_losses, resolved)]
        self._initial_loss_weights = [float(w) for w in weights]
        self._loss_weight_variables = [
            self.add_weight(name=f"distillation_loss_weight_{i}", shape=(), dtype="float32", trainable=False,
                            initializer=keras.initializers.Constant(w))
            for i, w in enumerate(self._initial_loss_weights)
        ]
        for variable, weight in zip(self._loss_weight_variables, self._initial_loss_weights):
            self._remember(variable, weight)
        configured = [l.temperature for l in resolved if l.uses_temperature and hasattr(l, "temperature")]
        if configured and not self._explicit_temperature:
            self.temperature.assign(configured[0])
        self._update_temperature_ratios()
        self._build_taps()
        self._warn_if_teacher_gives_probabilities()

    def _warn_if_teacher_gives_probabilities(self):
        """Warns when a softmax teacher feeds a loss that expects logits (softmax(p / T) is nearly uniform)."""
        if not _output_activation_is_softmax(self.teacher):
            return
        on_logits = [loss.name for loss in self._distillation_losses
                     if loss.teacher_layer_name is None and not getattr(loss, "from_probabilities", False)]
        if on_logits:
            warnings.warn(
                f"The teacher {self.teacher.name!r} ends in a softmax, so it gives probabilities, but the "
                f"distillation losses {on_logits} expect logits: softmax(p / T) of probabilities is nearly "
                "uniform, so the student would learn from flattened targets. Build the teacher's last layer with "
                "activation=None (and copy its weights), or use losses that take probabilities, e.g. "
                "distillation_losses=keras_kd.losses.SoftTargetKLDivergence(from_probabilities=True), which "
                "works from log(p) (softmax(log(p) / T) is the teacher's softened distribution).", stacklevel=4,
            )

    def _update_temperature_ratios(self):
        """Each temperature-using loss's temperature as a multiple of `self.temperature`.

        All 1.0 when the losses agree or a temperature was given explicitly. When
        they were configured at different temperatures (as `keras.distillation`
        allows), each keeps its own: the Distiller's temperature is the first
        one's and the others keep their ratio to it, so a schedule scales them all.
        """
        configured = [float(l.temperature) if l.uses_temperature and hasattr(l, "temperature") else None
                      for l in self._distillation_losses]
        known = [t for t in configured if t is not None]
        if self._explicit_temperature or len(set(known)) <= 1:
            self._temperature_ratios = [1.0] * len(configured)
        else:
            self._temperature_ratios = [1.0 if t is None else t / known[0] for t in configured]

    def _build_taps(self):
        """Builds one multi-output view of each model so every layer a loss reads comes from one pass."""
        teacher_names, student_names = [], []
        for loss in self._distillation_losses:
            if loss.teacher_layer_name and loss.teacher_layer_name not in teacher_names:
                teacher_names.append(loss.teacher_layer_name)
            if loss.student_layer_name and loss.student_layer_name not in student_names:
                student_names.append(loss.student_layer_name)
        self._teacher_feature_extractor, teacher_shapes = self._make_tap(self.teacher, teacher_names, "teacher")
        self._student_feature_extractor, student_shapes = self._make_tap(self.student, student_names, "student")
        states = []
        for loss in self._distillation_losses:
            t_shape = teacher_shapes.get(loss.teacher_layer_name or FINAL_OUTPUT)
            s_shape = student_shapes.get(loss.student_layer_name or FINAL_OUTPUT)
            loss.validate_shapes(t_shape, s_shape)
            states.append(loss.create_state(t_shape, s_shape))
        # Layers owned by the Distiller: trained with the student, never part of it.
        self.loss_states = [s for s in states if s is not None]
        self._states = states

    @staticmethod
    def _make_tap(model, layer_names, role):
        """A multi-output view of `model` and the static shape of each output it gives."""
        if not layer_names:
            return None, {FINAL_OUTPUT: _single_output_shape(model)}
        if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
            raise ValueError(
                f"Distillation losses read layers {layer_names} of the {role} {model.name!r}, but it is a "
                "subclassed model with no symbolic inputs/outputs. Build it as a Functional or Sequential "
                "model, or use losses on the final outputs only."
            )
        outputs = {FINAL_OUTPUT: model.outputs[0] if len(model.outputs) == 1 else model.outputs}
        for layer_name in layer_names:
            try:
                layer = model.get_layer(name=layer_name)
            except ValueError:
                known = [layer.name for layer in model.layers]
                raise ValueError(
                    f"The {role} {model.name!r} has no layer named {layer_name!r}. Its layers are: {known}."
                ) from None
            outputs[layer_name] = layer.output
        shapes = {name: tuple(t.shape) if hasattr(t, "shape") else None for name, t in outputs.items()}
        return keras.Model(model.inputs, outputs, name=f"{model.name}_{role}_taps"), shapes

    def _reduced_precision_teacher(self):
        """A copy of the teacher whose layers compute (and keep weights) in `teacher_dtype`."""
        if self._reduced_teacher is None:
            source = self._teacher_feature_extractor or self.teacher
            if not getattr(source, "inputs", None):
                raise ValueError(
                    f"teacher_dtype={self.teacher_dtype!r} needs a Functional or Sequential teacher to clone "
                    f"in {self.teacher_dtype}; {self.teacher.name!r} is subclassed. Set its dtype policy "
                    "yourself or use teacher_dtype=None."
                )
            dtype = self.teacher_dtype

            def clone_layer(layer):
                config = layer.get_config()
                config["dtype"] = dtype
                return layer.__class__.from_config(config)

            # fit() and evaluate() make the copy before tracing (make_train_function); a first call inside a
            # tf.function (the cache's) needs eager mode for cloning and get_weights(), so lift it out of the graph.
            with tf.init_scope():
                with keras.utils.custom_object_scope({}):
                    clone = keras.models.clone_model(source, clone_function=clone_layer)
                clone.set_weights([w.astype(dtype) if hasattr(w, "astype") else w for w in source.get_weights()])
                clone.trainable = False
            self._reduced_teacher = clone
        return self._reduced_teacher

    def _prepare_reduced_teacher(self):
        """Makes the reduced-precision teacher in cross-replica context, before a step is traced.

        Made lazily while one replica traces the step (MirroredStrategy), its `set_weights` would reach that
        replica's copy of the variables only: the others would teach from random weights.
        """
        if self.teacher_dtype is None or self._reduced_teacher is not None or not _is_built(self.teacher):
            return
        self._ensure_losses()
        strategy = getattr(self, "distribute_strategy", None) or tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Its variables would be broadcast from worker 0 by a collective that rejects bfloat16 on CPU.
            # Outside the scope each worker keeps one local copy (one replica per worker), set from its own
            # (identical) teacher here, in cross-replica context.
            self._reduced_precision_teacher()
            return
        with strategy.scope():
            self._reduced_precision_teacher()

    def make_train_function(self, *args, **kwargs):
        self._prepare_reduced_teacher()
        return super().make_train_function(*args, **kwargs)

    def make_test_function(self, *args, **kwargs):
        self._prepare_reduced_teacher()
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
                student_loss_weight = _validate_alpha(0.1 if alpha is None else alpha, "alpha (keras.io spelling)")
                self._remember(self.alpha, 1.0 - student_loss_weight)
                self._alpha_from_student_loss_weight = True
                self._given_student_loss_weight = student_loss_weight
                alpha = None
            if temperature is None and not self._explicit_temperature:
                temperature = 3.0  # the example's default
            if distillation_loss_fn is not None:
                from keras_kd.losses._compat import from_keras_io_distillation_loss_fn

                distillation_loss = from_keras_io_distillation_loss_fn(
                    distillation_loss_fn, _validate_temperature(temperature or float(self.temperature.numpy())))
        if loss is not None and student_loss is not None:
            raise ValueError("Pass the student's loss as student_loss=... or as loss=... (keras spelling), not both.")
        if kwargs.get("loss_weights") is not None:
            raise ValueError("loss_weights is not used by the Distiller; use alpha and distillation_loss_weights.")
        kwargs.pop("loss_weights", None)
        if metrics is not None and not isinstance(metrics, (list, tuple, dict)):
            metrics = [metrics]
        if alpha is not None:
            if self._alpha_from_student_loss_weight:
                raise ValueError(
                    "This Distiller was built with student_loss_weight (= 1 - alpha); pass alpha to compile() "
                    "only when the constructor did not get student_loss_weight."
                )
            self._remember(self.alpha, _validate_alpha(alpha))
        if distillation_loss is not None:
            self._set_distillation_losses(distillation_loss, distillation_loss_weights)
        else:
            self._ensure_losses()
            if distillation_loss_weights is not None:
                distillation_loss_weights = _validate_loss_weights(distillation_loss_weights)
                if len(distillation_loss_weights) != len(self._loss_weight_variables):
                    raise ValueError(
                        f"distillation_loss_weights has {len(distillation_loss_weights)} values but there are "
                        f"{len(self._loss_weight_variables)} distillation losses; give one weight per loss."
                    )
                for variable, weight in zip(self._loss_weight_variables, distillation_loss_weights):
                    self._remember(variable, float(weight))
        if temperature is not None:
            self._explicit_temperature = True
            self.temperature.assign(_validate_temperature(temperature))
            self._update_temperature_ratios()
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
    def _remember(self, variable, value):
        """Assigns `value` to `variable` and remembers the Python value for the properties."""
        variable.assign(value)
        self._given_values[id(variable)] = (value, variable.numpy().item())

    def _python_value(self, variable):
        """The variable's value: the Python number last given while it still holds it, else its float."""
        current = variable.numpy().item()
        given = self._given_values.get(id(variable))
        return given[0] if given is not None and given[1] == current else current

    @property
    def distillation_losses(self):
        """The distillation losses as given: keras_kd losses, or `keras.distillation` objects kept as they were."""
        self._ensure_losses()
        return list(self._given_losses)

    @property
    def distillation_loss_names(self):
        """The name each distillation loss logs under (and that `LossWeightScheduler` accepts)."""
        self._ensure_losses()
        return [loss.name for loss in self._distillation_losses]

    @property
    def distillation_loss_weights(self):
        """The current weight of each distillation loss, as Python floats."""
        self._ensure_losses()
        return [self._python_value(v) for v in self._loss_weight_variables]

    @property
    def distillation_loss_weight_variables(self):
        """The non-trainable Variables holding each distillation loss's weight (for schedulers)."""
        self._ensure_losses()
        return list(self._loss_weight_variables)

    @property
    def student_loss_weight(self):
        """`1 - alpha`, the `keras.distillation` view of the weights."""
        alpha = self._python_value(self.alpha)
        if self._given_student_loss_weight is not None and alpha == self._given_values[id(self.alpha)][0]:
            return self._given_student_loss_weight
        return 1.0 - alpha

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

    def _teacher_outputs(self, x):
        self._check_teacher_built()
        if self.teacher_dtype is not None:
            model = self._reduced_precision_teacher()
            outputs = model(tf.nest.map_structure(lambda t: tf.cast(t, self.teacher_dtype)
                                                  if t.dtype.is_floating else t, x), training=False)
        elif self._teacher_feature_extractor is not None:
            outputs = self._teacher_feature_extractor(x, training=False)
        else:
            outputs = self.teacher(x, training=False)
        if not isinstance(outputs, dict):
            outputs = {FINAL_OUTPUT: outputs}
        return tf.nest.map_structure(lambda t: tf.stop_gradient(tf.cast(t, tf.float32)), outputs)

    def _student_outputs(self, x, training):
        if any(getattr(loss, "uses_input_gradients", False) for loss in self._distillation_losses or ()):
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
            checks = checks + [
                tf.debugging.assert_non_negative(
                    safe_labels, message=f"keras_kd: labels must be class ids in [0, {classes}) (or ignore_index "
                    f"{self.ignore_index} for padding); found a negative label. Check the labels or the student's "
                    "number of outputs."),
                tf.debugging.assert_less(
                    safe_labels, tf.constant(classes, tf.int32),
                    message=f"keras_kd: labels must be class ids in [0, {classes}); found a label >= {classes}. "
                    "The student has too few outputs for these labels, or the labels are not 0-based."),
            ]
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
            weights = tf.ones_like(values)
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
                share = tf.cast(share, tf.float32)
                sw = tf.cast(sample_weight, tf.float32)
                sample_weight = _broadcast_share(share, sw) * sw + (1 - _broadcast_share(share, sw)) * tf.gather(
                    sw, partner)
        if y is not None:
            values, weights = self._student_loss_values(y, logits)
            if mix is not None:
                partner, share = mix
                partner_values, partner_weights = self._student_loss_values(tf.gather(y, partner), logits)
                share = _broadcast_share(tf.cast(share, tf.float32), values)
                values = share * values + (1 - share) * partner_values
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
        distillation_total = tf.constant(0.0)
        temperature = tf.cast(self.temperature, tf.float32)
        for index, (loss, state) in enumerate(zip(self._distillation_losses, self._states)):
            ratio = self._temperature_ratios[index]
            loss_temperature = temperature if ratio == 1.0 else temperature * ratio
            t = teacher_outputs[loss.teacher_layer_name or FINAL_OUTPUT]
            s = student_outputs[loss.student_layer_name or FINAL_OUTPUT]
            extra = ({"input_tape": getattr(self, "_input_gradient_tape", None), "teacher_model": self.teacher}
                     if getattr(loss, "uses_input_gradients", False) else {})
            values = loss.compute(t, s, temperature=loss_temperature if loss.uses_temperature else None,
                                  labels=labels, state=state, inputs=x, **extra)
            values = tf.cast(values, tf.float32)
            if len(values.shape) == 0:  # a loss that reduced itself (keras.distillation custom losses)
                term = values / num_replicas
            else:
                term = self._global_mean(values, weights if weights is not None and
                                         len(weights.shape) <= len(values.shape) else None)
            terms[loss.name] = term
            distillation_total += tf.cast(self._loss_weight_variables[index], tf.float32) * term
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
        # Trackers hold the per-replica value scaled back to a mean, as Keras does for its own loss. A skipped
        # (non-finite) step counts in non_finite_steps and is left out of the means.
        weight = None if finite is None else tf.cast(finite, tf.float32)
        for tracker, key in ((self.total_loss_tracker, "loss"), (self.student_loss_tracker, "student_loss"),
                             (self.distillation_loss_tracker, "distillation_loss")):
            value = terms[key] * num_replicas
            if finite is None:
                tracker.update_state(value)
            else:
                tracker.update_state(tf.where(finite, value, tf.zeros_like(value)), sample_weight=weight)
        if finite is not None and self.non_finite_steps_tracker is not None:
            # `finite` is agreed across replicas, and Keras reads a metric's replicas as one value (not their
            # sum): each replica counts the whole step.
            self.non_finite_steps_tracker.update_state(1.0 - weight)

    def _logs(self, x, y, y_pred, sample_weight):
        logs = {}
        if y is not None:
            logs.update(self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        logs["loss"] = logs["total_loss"] = self.total_loss_tracker.result()
        logs["student_loss"] = self.student_loss_tracker.result()
        logs["distillation_loss"] = self.distillation_loss_tracker.result()
        logs["temperature"] = tf.identity(self.temperature)
        logs["alpha"] = tf.identity(self.alpha)
        if self.non_finite_steps_tracker is not None:
            logs["non_finite_steps"] = self.non_finite_steps_tracker.result()
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
        own = _broadcast_share(share >= 0.5, y)
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
            teacher_outputs = self._teacher_outputs(x)
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
            teacher_outputs = self._teacher_outputs(x)
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
            "distillation_losses": [keras.saving.serialize_keras_object(l) for l in self._given_losses],
            "distillation_loss_weights": self.distillation_loss_weights,
            **({"student_loss_weight": self.student_loss_weight} if self._alpha_from_student_loss_weight
               else {"alpha": self._python_value(self.alpha)}),
            # None when the losses' own temperatures set it: from_config then rebuilds the same per-loss
            # temperatures (a scheduled value lives in the weights, which load_model restores).
            "temperature": self.temperature.numpy().item() if self._explicit_temperature else None,
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
