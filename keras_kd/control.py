"""Does distillation help? The distilled student against its control, over seeds.

A distilled student is only worth its teacher when it beats the *same* student
trained as well without one: the same initial weights, augmentation, epochs,
batch size, optimizer and learning-rate schedule, on labels alone.
`compare_with_control` trains both (and any number of distillation variants)
that way over several seeds and reports test errors, their mean and spread,
and the fraction of the control-to-teacher error gap each variant closes:

    gap closed = (errors(control) - errors(variant)) / (errors(control) - errors(teacher))

1.0 means the student reached the teacher; 0 means the teacher did not help;
negative means it hurt. One seed proves little: with 1,000 test images a
difference of 10 errors is within the noise of a single run.

The report also gives the share of training views the teacher gets wrong
(`teacher_train_error_rate`). On those views distillation replaces a correct
label with a wrong target, so a teacher that does not fit its own training
data much better than the student can teach little: in our benchmark, a
Fashion-MNIST teacher wrong on 9.3 % of its training views made every logit
distillation setting worse than the control.

Example:

```python
import keras, numpy as np, keras_kd

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
teacher.fit(x, y, epochs=3, verbose=0)
build = lambda seed: keras.Sequential([keras.Input((8,)), keras.layers.Dense(
    2, kernel_initializer=keras.initializers.GlorotUniform(seed))])
report = keras_kd.compare_with_control(teacher, build, (x, y), (x, y), seeds=(0, 1), epochs=2)
print(report)
```
"""

import dataclasses
import math
import time

import numpy as np

from keras_kd import augment as kd_augment
from keras_kd.backend import keras, tf

__all__ = ["compare_with_control", "ControlReport", "CONTROL"]

#: Name of the control row: the student trained on labels alone.
CONTROL = "control"


@dataclasses.dataclass
class ControlReport:
    """Test errors of the teacher, the control and each distillation variant, per seed.

    Attributes:
        num_test: number of test examples.
        teacher_errors: the teacher's test errors.
        errors: variant name -> test errors per seed (`CONTROL` first).
        seconds_per_epoch: variant name -> mean wall seconds per training epoch.
        seeds: the seeds, in the order of the error lists.
        epochs: training epochs of every run.
        teacher_train_error_rate: share of training examples (up to
            `TRAIN_VIEWS`, each seen once through the shared `augment`) the
            teacher classifies wrongly; nan when not measured.
    """

    num_test: int
    teacher_errors: int
    errors: dict
    seconds_per_epoch: dict
    seeds: tuple
    epochs: int
    teacher_train_error_rate: float = math.nan

    def mean_errors(self, name):
        return float(np.mean(self.errors[name]))

    def std_errors(self, name):
        return float(np.std(self.errors[name], ddof=1)) if len(self.errors[name]) > 1 else 0.0

    def gap_closed(self, name):
        """Mean over seeds of the fraction of the control-to-teacher gap closed (nan when there is no gap)."""
        gap = self.mean_errors(CONTROL) - self.teacher_errors
        if gap <= 0:
            return math.nan
        return (self.mean_errors(CONTROL) - self.mean_errors(name)) / gap

    def to_dict(self):
        return {
            "num_test": self.num_test, "teacher_errors": self.teacher_errors, "seeds": list(self.seeds),
            "epochs": self.epochs, "teacher_train_error_rate": self.teacher_train_error_rate,
            "variants": {name: {"errors": [int(e) for e in errors], "mean_errors": self.mean_errors(name),
                                "std_errors": self.std_errors(name), "gap_closed": self.gap_closed(name),
                                "seconds_per_epoch": self.seconds_per_epoch[name]}
                         for name, errors in self.errors.items()},
        }

    def __str__(self):
        train = ("" if math.isnan(self.teacher_train_error_rate)
                 else f", wrong on {self.teacher_train_error_rate:.1%} of the training views")
        lines = [f"{len(self.seeds)} seeds, {self.epochs} epochs, {self.num_test} test examples; "
                 f"teacher: {self.teacher_errors} errors{train}",
                 f"{'variant':28s} {'errors (mean +- std)':>22s} {'accuracy':>9s} {'gap closed':>11s} {'s/epoch':>8s}"]
        for name in self.errors:
            mean, std = self.mean_errors(name), self.std_errors(name)
            gap = self.gap_closed(name)
            lines.append(f"{name:28s} {mean:12.1f} +- {std:6.1f} {1 - mean / self.num_test:9.2%} "
                         f"{'' if math.isnan(gap) else f'{gap:+.0%}':>11s} {self.seconds_per_epoch[name]:8.2f}")
        return "\n".join(lines)


class _Control(keras.Model):
    """The student trained on labels alone, seeing the views a Distiller with the same `augment`/`mixing` gives."""

    def __init__(self, student, augment=None, mixing=None, seed=0):
        super().__init__(name="control")
        self.student = student
        self.augment = augment
        self.mixing = mixing
        self.seed = seed
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, mix = kd_augment.augmented_view(self.augment, self.mixing, x, self.seed, self.optimizer.iterations)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.student(x, training=True), tf.float32)
            values = _cross_entropy(y, logits)
            if mix is not None:
                partner, share = mix
                values = kd_augment.blend(values, _cross_entropy(tf.gather(y, partner), logits), share)
            loss = tf.reduce_mean(values) + tf.add_n([tf.cast(l, tf.float32) for l in self.student.losses] or [0.0])
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def _fresh(augment):
    """A new copy of a Keras augmentation layer (its random state drawn anew from the global seed), else `augment`."""
    if not isinstance(augment, keras.layers.Layer):
        return augment
    try:
        return augment.__class__.from_config(augment.get_config())
    except (NotImplementedError, TypeError, ValueError):
        return augment  # a layer that cannot be rebuilt from its config keeps one random stream


def _cross_entropy(y, logits):
    y = tf.reshape(tf.cast(y, tf.int32), [-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)


#: How many training examples the teacher's training-view error rate is measured on (evenly spaced).
TRAIN_VIEWS = 10_000


def _teacher_train_error_rate(teacher, x, y, augment, batch_size):
    """The share of training views (one augmented view per example, up to `TRAIN_VIEWS`) the teacher gets wrong."""
    index = np.linspace(0, len(x) - 1, num=min(len(x), TRAIN_VIEWS)).astype(int)
    augment = _fresh(augment)  # its own random stream: the runs' views stay as they are
    wrong = 0
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        batch = tf.convert_to_tensor(x[chunk])
        if augment is not None:
            batch = kd_augment.apply_augment(augment, batch)
        predicted = np.argmax(np.asarray(teacher(batch, training=False)), axis=-1)
        wrong += int(np.sum(predicted != np.reshape(y[chunk], [-1])))
    return wrong / len(index)


def _test_errors(model, x, y, batch_size):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return int(np.sum(np.argmax(logits, axis=-1) != np.reshape(y, [-1])))


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _optimizer(learning_rate, decay_steps):
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=decay_steps)
    return keras.optimizers.Adam(schedule)


def _check_arrays(data, what):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{what} must be an (x, y) pair of arrays, got {type(data).__name__}.")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what}: x has {len(x)} examples and y has {len(y)}; they must match and not be empty.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: y must be integer class ids (sparse labels), got dtype {y.dtype}.")
    return x, y


def compare_with_control(teacher, build_student, train, test, *, variants=None, seeds=(0, 1, 2), epochs=10,
                         batch_size=128, learning_rate=1e-3, augment=None, mixing=None, callbacks=None, verbose=0):
    """Trains the control and each distilled variant the same way, over seeds; returns a `ControlReport`.

    Every run of a seed starts from the same student weights (`build_student(seed)`
    after `keras.utils.set_random_seed(seed)`), draws the same batches, and uses
    Adam with a cosine-decayed learning rate over the whole run. The control
    trains on labels with the same `augment` and `mixing` as the variants
    (mixed labels, weighted as in the Distiller); each variant is a
    `keras_kd.Distiller` built with `augment` and `mixing`.

    Args:
        teacher: a trained `keras.Model` giving logits.
        build_student: `seed -> keras.Model`, a new student (logits) each call.
        train: `(x, y)` arrays, y sparse integer class ids.
        test: `(x, y)` arrays the errors are counted on.
        variants: name -> Distiller settings: a dict of `keras_kd.Distiller`
            keyword arguments (`alpha`, `temperature`, ...; `distillation_losses`
            may be a callable returning fresh losses, since losses that own
            state cannot be shared between runs), or a callable
            `(teacher, student) -> Distiller`. Default: `{"distilled": {}}`,
            the Distiller's defaults.
        seeds: one control and one run per variant for each seed (at least 2
            to see the spread; 3 or more to claim a gain).
        epochs, batch_size, learning_rate: the shared training schedule.
        augment, mixing: the shared view, as in `keras_kd.Distiller`.
        callbacks: `() -> list of callbacks` for each distillation run (for
            example a `TemperatureScheduler`); the control gets none.
        verbose: 1 prints each run's result as it finishes.

    Returns:
        A `ControlReport`; `print(report)` gives the table.
    """
    from keras_kd.distiller import Distiller

    x_train, y_train = _check_arrays(train, "train")
    x_test, y_test = _check_arrays(test, "test")
    variants = {"distilled": {}} if variants is None else dict(variants)
    if CONTROL in variants:
        raise ValueError(f"{CONTROL!r} is the name of the labels-only row; name the variant differently.")
    if not variants:
        raise ValueError("variants is empty: give at least one distillation setting to compare with the control.")
    for name, setting in variants.items():
        if not (isinstance(setting, dict) or callable(setting)):
            raise ValueError(f"variant {name!r} must be a dict of Distiller arguments or a callable "
                             f"(teacher, student) -> Distiller, got {type(setting).__name__}.")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (3 or more to claim a gain).")
    augment = kd_augment.check_augment(augment)
    mixing = kd_augment.get_mixing(mixing)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    teacher_errors = _test_errors(teacher, x_test, y_test, batch_size)
    keras.utils.set_random_seed(seeds[0])
    teacher_train_error_rate = _teacher_train_error_rate(teacher, x_train, y_train, augment, batch_size)
    errors = {name: [] for name in (CONTROL, *variants)}
    seconds = {name: [] for name in errors}
    for seed in seeds:
        for name in errors:
            keras.utils.set_random_seed(seed)
            student = build_student(seed)
            # A fresh augment layer per run, seeded alike, and the same mixing seed: every run of a seed sees
            # the same views (a paired comparison) instead of continuing one random stream.
            run_augment = _fresh(augment)
            if name == CONTROL:
                model = _Control(student, run_augment, mixing, int(np.random.randint(0, 2**31 - 1)))
            else:
                setting = variants[name]
                if callable(setting):
                    model = setting(teacher, student)
                else:
                    setting = dict(setting)
                    if callable(setting.get("distillation_losses")):
                        setting["distillation_losses"] = setting["distillation_losses"]()
                    setting.setdefault("augment", run_augment)
                    setting.setdefault("mixing", mixing)
                    model = Distiller(teacher, student, **setting)
            model.compile(optimizer=_optimizer(learning_rate, steps))
            timer = _EpochTimer()
            keras.utils.set_random_seed(seed)
            extra = list(callbacks()) if callbacks is not None and name != CONTROL else []
            model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                      callbacks=[timer, *extra])
            errors[name].append(_test_errors(student, x_test, y_test, batch_size))
            # The first epoch also traces the step function.
            seconds[name].append(float(np.mean(timer.seconds[1:] or timer.seconds)))
            if verbose:
                print(f"seed {seed} {name:28s} {errors[name][-1]} errors", flush=True)
    return ControlReport(num_test=len(x_test), teacher_errors=teacher_errors, errors=errors,
                         seconds_per_epoch={k: float(np.mean(v)) for k, v in seconds.items()}, seeds=seeds,
                         epochs=epochs, teacher_train_error_rate=teacher_train_error_rate)
