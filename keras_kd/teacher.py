"""Running a frozen teacher: every output the losses read, from one forward pass, in float32.

`TeacherRunner` is the one place that calls the teacher. The Distiller runs it
each step and `keras_kd.cache_teacher_outputs` runs it once over a dataset, so
both give the same outputs: the layer taps feature losses read, the
reduced-precision (`teacher_dtype`) copy, and the refusal to teach from a
teacher that has no weights yet.
"""

from keras_kd.backend import keras, tf

__all__ = ["TeacherRunner", "FINAL_OUTPUT", "REDUCED_DTYPES", "layer_taps", "require_built"]

#: The key of a model's final output in the dicts of outputs the losses read.
FINAL_OUTPUT = "final_output"
#: The `teacher_dtype` values a teacher can run in (None runs it as it is).
REDUCED_DTYPES = ("bfloat16", "float16")


def is_built(model):
    """True when `model` has its weights (a built model with no weights has nothing to teach)."""
    return bool(model.built) and len(model.weights) > 0


def require_built(teacher):
    """Raises when `teacher` has no weights yet: its first call would teach from random weights."""
    if not is_built(teacher):
        raise ValueError(
            f"The teacher {teacher.name!r} is not built (it has no weights yet), so it has nothing to "
            "teach: its first call would create random weights. Train or load the teacher first, or call "
            "teacher.build(input_shape) and load its weights."
        )


def single_output_shape(model):
    """The static shape of a model's only output, or None when unknown or several."""
    outputs = getattr(model, "outputs", None)
    try:
        if outputs and len(outputs) == 1:
            return tuple(outputs[0].shape)
    except (AttributeError, ValueError):
        pass
    return None


def layer_taps(model, layer_names, role):
    """A multi-output view of `model` giving its final output and `layer_names`, and each output's static shape.

    Returns `(None, {FINAL_OUTPUT: shape})` when no layer is named: the model
    itself is then called.
    """
    if not layer_names:
        return None, {FINAL_OUTPUT: single_output_shape(model)}
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise ValueError(
            f"Distillation losses read layers {list(layer_names)} of the {role} {model.name!r}, but it is a "
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


class TeacherRunner:
    """Runs a frozen teacher with `training=False` and returns its outputs as a dict of float32 tensors.

    Args:
        teacher: the teacher `keras.Model` (frozen by whoever owns it).
        layer_names: teacher layers whose outputs feature losses read; they
            come from the same forward pass as the final output.
        dtype: None, `"bfloat16"` or `"float16"`: run the forward pass on a
            copy of the teacher whose layers compute and keep their weights in
            that dtype (a Functional or Sequential teacher). The outputs are
            cast back to float32.

    Attributes:
        taps: the multi-output view of the teacher when layers are named, else None.
        output_shapes: the static shape of each output, by name
            (`FINAL_OUTPUT` for the final one).

    The teacher must be built when it runs (`check_built()`), not when the
    runner is made: `keras.distillation` accepts an unbuilt teacher that is
    loaded later.

    Example:

    ```python
    runner = keras_kd.teacher.TeacherRunner(teacher, layer_names=["features"])
    outputs = runner(x)  # {"final_output": logits, "features": ...}, float32, no gradient
    ```
    """

    def __init__(self, teacher, layer_names=(), dtype=None):
        if dtype is not None and dtype not in REDUCED_DTYPES:
            raise ValueError(f"teacher_dtype must be None, 'bfloat16' or 'float16', got {dtype!r}.")
        self.teacher = teacher
        self.dtype = dtype
        self.layer_names = list(layer_names)
        self.taps, self.output_shapes = layer_taps(teacher, self.layer_names, "teacher")
        self._reduced_model = None

    def check_built(self):
        """Raises ValueError when the teacher has no weights yet."""
        require_built(self.teacher)

    @property
    def model(self):
        """The model the runner calls: the reduced-precision copy, the layer taps, or the teacher itself."""
        if self.dtype is not None:
            return self.reduced_precision_model()
        return self.taps if self.taps is not None else self.teacher

    def reduced_precision_model(self):
        """The copy of the teacher (with its taps) whose layers compute, and keep weights, in `dtype`."""
        if self._reduced_model is None:
            source = self.taps or self.teacher
            if not getattr(source, "inputs", None):
                raise ValueError(
                    f"teacher_dtype={self.dtype!r} needs a Functional or Sequential teacher to clone "
                    f"in {self.dtype}; {self.teacher.name!r} is subclassed. Set its dtype policy "
                    "yourself or use teacher_dtype=None."
                )
            dtype = self.dtype

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
            self._reduced_model = clone
        return self._reduced_model

    def prepare(self, strategy=None):
        """Makes the reduced-precision copy in cross-replica context, before a step that runs it is traced.

        Made lazily while one replica traces the step (MirroredStrategy), its `set_weights` would reach that
        replica's copy of the variables only: the others would teach from random weights.
        """
        if self.dtype is None or self._reduced_model is not None or not is_built(self.teacher):
            return
        strategy = strategy or tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Its variables would be broadcast from worker 0 by a collective that rejects bfloat16 on CPU.
            # Outside the scope each worker keeps one local copy (one replica per worker), set from its own
            # (identical) teacher here, in cross-replica context.
            self.reduced_precision_model()
            return
        with strategy.scope():
            self.reduced_precision_model()

    def __call__(self, x):
        """`{output name: float32 tensor}` for the batch `x`, with no gradient to the teacher."""
        self.check_built()
        if self.dtype is not None:
            x = tf.nest.map_structure(lambda t: tf.cast(t, self.dtype) if t.dtype.is_floating else t, x)
        outputs = self.model(x, training=False)
        if not isinstance(outputs, dict):
            outputs = {FINAL_OUTPUT: outputs}
        return tf.nest.map_structure(lambda t: tf.stop_gradient(tf.cast(t, tf.float32)), outputs)
