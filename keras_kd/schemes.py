"""Distillation schemes: small entry points that chain or pair models around the Distiller.

* `born_again`: each generation's student teaches the next (Furlanello et al., 2018).
* `teacher_assistant_chain`: teacher -> assistant(s) -> student (Mirzadeh et al., 2020).
* `mutual_learning` / `MutualLearning`: students train together and teach
  each other, no pre-trained teacher (Zhang et al., 2018).

`data` is `(x, y)` NumPy arrays or a batched `tf.data.Dataset` of `(x, y)`.

Every scheme takes `callbacks` (passed to each `fit`) and returns the same
shape, `(models, histories)`: the trained models in order, and one
`keras.callbacks.History` per `fit` run (one per generation or chain link; one
for mutual learning, whose students train together).
"""

import contextlib

from keras_kd import losses as kd_losses
from keras_kd.backend import apply_gradients, keras, scale_loss, tf
from keras_kd.distiller import Distiller, sparse_labels_are_whole

__all__ = ["born_again", "teacher_assistant_chain", "distill", "MutualLearning", "mutual_learning"]


def _fit_args(data, batch_size, validation_data):
    if isinstance(data, tf.data.Dataset):
        return (data,), {"validation_data": validation_data, "shuffle": False}
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"data must be (x, y) arrays or a tf.data.Dataset of (x, y) batches, got {type(data).__name__}."
        )
    return tuple(data), {"batch_size": batch_size, "validation_data": validation_data}


def distill(teacher, student, data, epochs=1, batch_size=32, optimizer="adam", alpha=None, temperature=None,
            distillation_losses=None, distillation_loss_weights=None, teacher_dtype=None, augment=None, mixing=None,
            validation_data=None, callbacks=None, verbose=0, metrics=None, initial_epoch=0, strategy=None):
    """Trains `student` from `teacher` with a `keras_kd.Distiller` and returns the fit History.

    The one function entry point: the schemes below, `keras_kd.quickstart`
    and `keras-kd distill` all train through it. `history.model` is the
    Distiller (its `student`, `optimizer` and Variables).

    Args:
        teacher, student: as for `keras_kd.Distiller`.
        data: `(x, y)` arrays or a batched `tf.data.Dataset` of `(x, y)`.
        epochs, batch_size, initial_epoch: as for `fit` (`batch_size` is
            ignored for a Dataset).
        optimizer: a name, an optimizer (its config is copied) or a
            zero-argument factory.
        alpha, temperature, distillation_losses, distillation_loss_weights,
        teacher_dtype, augment, mixing: as for `keras_kd.Distiller`; `None`
            keeps its default.
        validation_data, callbacks, verbose: passed to `fit`.
        metrics: passed to `compile`.
        strategy: a `tf.distribute.Strategy` whose scope builds and compiles
            the Distiller (build the teacher and student in it too); `None`
            for the current one.

    Example:

    ```python
    history = distill(teacher, student, (x, y), epochs=5, alpha=0.7, temperature=4.0)
    ```
    """
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        distiller = Distiller(teacher, student, distillation_losses=distillation_losses,
                              distillation_loss_weights=distillation_loss_weights, alpha=alpha,
                              temperature=temperature, teacher_dtype=teacher_dtype, augment=augment, mixing=mixing)
        distiller.compile(optimizer=_optimizer_factory(optimizer)(), metrics=metrics)
    args, kwargs = _fit_args(data, batch_size, validation_data)
    return distiller.fit(*args, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                         **kwargs)


def _optimizer_factory(optimizer):
    """A zero-argument callable making a fresh optimizer (each model needs its own)."""
    if callable(optimizer) and not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        return lambda: keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        return lambda: optimizer.__class__.from_config(config)
    raise TypeError(f"optimizer must be a name, an optimizer or a factory, got {type(optimizer).__name__}.")


def _chain(models, data, epochs, batch_size, optimizer, alpha, temperature, distillation_losses, validation_data,
           verbose, metrics, callbacks):
    make_optimizer = _optimizer_factory(optimizer)
    histories = []
    for teacher, student in zip(models[:-1], models[1:]):
        history = distill(teacher, student, data, epochs=epochs, batch_size=batch_size, optimizer=make_optimizer,
                          alpha=alpha, temperature=temperature, distillation_losses=distillation_losses,
                          validation_data=validation_data, callbacks=callbacks, verbose=verbose, metrics=metrics)
        histories.append(history)
    return histories


def born_again(make_student, teacher, data, generations=2, epochs=1, batch_size=32, optimizer="adam", alpha=None,
               temperature=None, distillation_losses=None, validation_data=None, verbose=0, metrics=None,
               callbacks=None):
    """Born-again networks: generation `k` is distilled from generation `k - 1`.

    Generation 1 learns from `teacher`; each later generation learns from the
    previous (now trained) student, usually of the same architecture as the
    teacher. The paper reports that later generations can beat the teacher.

    Paper: T. Furlanello, Z. Lipton, M. Tschannen, L. Itti, A. Anandkumar,
    "Born-Again Neural Networks", ICML 2018.

    Args:
        make_student: zero-argument callable returning a fresh (untrained)
            `keras.Model` giving logits.
        teacher: the trained generation-0 model.
        data: `(x, y)` or a `tf.data.Dataset`.
        generations: number of students to train, >= 1.
        epochs, batch_size: per generation.
        optimizer: a name, an optimizer (its config is copied for each
            generation) or a factory.
        alpha, temperature, distillation_losses: as for `keras_kd.Distiller`.
        validation_data, verbose, metrics: passed to `fit`/`compile`.
        callbacks: passed to every generation's `fit`.

    Returns:
        `(students, histories)`: the trained students, generation 1 first
        (`students[-1]` is the last generation), and each generation's
        History.

    Example:

    ```python
    students, histories = born_again(lambda: build_cnn(width=32), teacher, (x, y), generations=3, epochs=5)
    ```
    """
    if isinstance(make_student, keras.Model) or not callable(make_student):
        raise TypeError("make_student must be a callable returning a new keras.Model (a factory, not a model).")
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations must be an int >= 1, got {generations!r}.")
    students = []
    for _ in range(generations):
        student = make_student()
        if student is teacher or any(student is s for s in students):
            raise ValueError("make_student returned a model it had returned before; it must build a new one.")
        students.append(student)
    histories = _chain([teacher] + students, data, epochs, batch_size, optimizer, alpha, temperature,
                       distillation_losses, validation_data, verbose, metrics, callbacks)
    return students, histories


def teacher_assistant_chain(teacher, assistants, student, data, epochs=1, batch_size=32, optimizer="adam",
                            alpha=None, temperature=None, distillation_losses=None, validation_data=None, verbose=0,
                            metrics=None, callbacks=None):
    """Teacher-assistant KD: teacher -> assistant_1 -> ... -> student, each step a distillation.

    An intermediate-size assistant bridges a large capacity gap between the
    teacher and a small student.

    Paper: S. I. Mirzadeh, M. Farajtabar, A. Li, N. Levine, A. Matsukawa,
    H. Ghasemzadeh, "Improved Knowledge Distillation via Teacher Assistant",
    AAAI 2020.

    Args:
        teacher: the trained teacher.
        assistants: one model or a list of untrained models, largest first.
        student: the untrained final student.
        data, epochs, batch_size, optimizer, alpha, temperature,
        distillation_losses, validation_data, verbose, metrics, callbacks: as
            for `born_again` (applied at every step).

    Returns:
        `(models, histories)`: the trained models in chain order,
        `[*assistants, student]`, and the History of each step.

    Example:

    ```python
    (assistant, student), histories = teacher_assistant_chain(teacher, [medium_cnn], small_cnn, (x, y), epochs=5)
    ```
    """
    if isinstance(assistants, keras.Model):
        assistants = [assistants]
    chain = [teacher] + list(assistants) + [student]
    if len({id(m) for m in chain}) != len(chain):
        raise ValueError("teacher, assistants and student must be distinct model objects.")
    histories = _chain(chain, data, epochs, batch_size, optimizer, alpha, temperature, distillation_losses,
                       validation_data, verbose, metrics, callbacks)
    return chain[1:], histories


@keras.saving.register_keras_serializable(package="keras_kd")
class MutualLearning(keras.Model):
    """Deep mutual learning: two or more students trained together, each distilled from its peers.

    Student `k` minimises

        L_k = CE(y, z_k) + 1/(K-1) * sum_{j != k} T**2 * KL(p_j || p_k)

    with `p = softmax(z / T)` and the peers' predictions treated as fixed
    targets (stop-gradient) within the step, so all students update at once
    from the same batch. The logs hold `loss` (sum over students) and, per
    student, `student_<k>_loss`, `student_<k>_ce`, `student_<k>_kl` and
    metrics as `student_<k>_<metric>`.

    Paper: Y. Zhang, T. Xiang, T. M. Hospedales, H. Lu, "Deep Mutual
    Learning", CVPR 2018.

    Args:
        students: a list of at least two `keras.Model`s giving logits of the
            same shape.
        temperature: softening of the peer targets (paper: 1).
        name: model name.

    Example:

    ```python
    ml = MutualLearning([cnn_a, cnn_b])
    ml.compile(optimizer="adam", metrics=["accuracy"])
    ml.fit(x, y, epochs=5)
    ```
    """

    def __init__(self, students, temperature=1.0, name="mutual_learning", **kwargs):
        super().__init__(name=name, **kwargs)
        students = list(students)
        if len(students) < 2:
            raise ValueError(f"MutualLearning needs at least two students, got {len(students)}.")
        if len({id(s) for s in students}) != len(students):
            raise ValueError("MutualLearning got the same model object twice; each student must be its own model.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.students = students
        self.temperature = float(temperature)
        count = len(students)
        self._student_trackers = [
            {part: keras.metrics.Mean(name=f"student_{k}_{part}") for part in ("loss", "ce", "kl")}
            for k in range(count)
        ]
        self._total_tracker = keras.metrics.Mean(name="loss")
        self._student_metrics = None

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Configures one optimizer over all students and per-student metrics, logged as `student_<k>_<name>`.

        Args:
            optimizer: the (single) optimizer over all students.
            metrics: `"accuracy"` or `keras.metrics.Metric` instances; each
                student gets its own copy.
            **kwargs: passed to `keras.Model.compile`.
        """
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self._student_metrics = [[self._new_metric(m, f"student_{k}_") for m in metrics or []]
                                 for k in range(len(self.students))]
        super().compile(optimizer=optimizer, **kwargs)
        return self

    @staticmethod
    def _new_metric(metric, prefix):
        # The name is given at construction: Keras 3 reads metric.name, so renaming a built metric is ignored.
        if metric in ("accuracy", "acc"):
            return keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}accuracy")
        if isinstance(metric, keras.metrics.Metric):
            config = metric.get_config()
            config["name"] = f"{prefix}{metric.name}"
            return metric.__class__.from_config(config)
        raise ValueError(
            f"MutualLearning metrics are 'accuracy' or keras.metrics.Metric instances (one copy is made per "
            f"student), got {metric!r}."
        )

    @property
    def metrics(self):
        metrics = [self._total_tracker]
        for trackers in self._student_trackers:
            metrics.extend(trackers.values())
        for group in self._student_metrics or []:
            metrics.extend(group)
        return metrics

    def call(self, inputs, training=None):
        """The students' logits, stacked: `(batch, students, classes)`."""
        return tf.stack([s(inputs, training=training) for s in self.students], axis=1)

    def _peer_losses(self, y, logits):
        temperature = tf.constant(self.temperature, tf.float32)
        logits = [tf.cast(z, tf.float32) for z in logits]
        y = tf.reshape(y, [-1]) if len(y.shape) > 1 and y.shape[-1] == 1 else y
        with tf.control_dependencies(sparse_labels_are_whole(y)):
            labels = tf.cast(y, tf.int32)
        per_student = []
        for k, z_k in enumerate(logits):
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z_k))
            peers = [tf.stop_gradient(z_j) for j, z_j in enumerate(logits) if j != k]
            kl = tf.add_n([tf.reduce_mean(kd_losses.soft_target_kl_divergence(z_j, z_k, temperature))
                           for z_j in peers]) / len(peers)
            per_student.append((ce + kl, ce, kl))
        return per_student

    def _record(self, y, logits, per_student):
        for k, (loss, ce, kl) in enumerate(per_student):
            self._student_trackers[k]["loss"].update_state(loss)
            self._student_trackers[k]["ce"].update_state(ce)
            self._student_trackers[k]["kl"].update_state(kl)
            for metric in (self._student_metrics or [[]] * len(logits))[k]:
                metric.update_state(y, logits[k])
        self._total_tracker.update_state(tf.add_n([p[0] for p in per_student]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = [v for s in self.students for v in s.trainable_variables]
        with tf.GradientTape() as tape:
            logits = [s(x, training=True) for s in self.students]
            per_student = self._peer_losses(y, logits)
            total = tf.add_n([p[0] for p in per_student])
            regularization = [l for s in self.students for l in s.losses]
            if regularization:
                total += tf.add_n(regularization)
            scaled = scale_loss(self.optimizer, total)
        apply_gradients(self.optimizer, tape.gradient(scaled, variables), variables)
        return self._record(y, logits, per_student)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = [s(x, training=False) for s in self.students]
        return self._record(y, logits, self._peer_losses(y, logits))

    def get_config(self):
        return {"name": self.name, "temperature": self.temperature,
                "students": [keras.saving.serialize_keras_object(s) for s in self.students]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s, custom_objects=custom_objects)
                              for s in config["students"]]
        return cls(**config)


def mutual_learning(students, data, epochs=1, batch_size=32, optimizer="adam", temperature=1.0, metrics=None,
                    validation_data=None, verbose=0, callbacks=None):
    """Trains `students` together with deep mutual learning (see `MutualLearning`).

    Args:
        students: two or more `keras.Model`s giving logits.
        data: `(x, y)` with sparse labels, or a `tf.data.Dataset`.
        epochs, batch_size: as for `fit`.
        optimizer: the (single) optimizer over all students.
        temperature: softening of the peer targets.
        metrics: per-student metrics (e.g. `["accuracy"]`).
        validation_data, verbose, callbacks: passed to `fit`.

    Returns:
        `(students, histories)`: the same student objects, now trained, and a
        one-element list with the History of their joint training
        (`student_<k>_loss`, `student_<k>_<metric>`, ...), the shape every
        scheme returns.

    Example:

    ```python
    (a, b), (history,) = mutual_learning([cnn_a, cnn_b], (x, y), epochs=5, metrics=["accuracy"])
    history.history["student_1_accuracy"]
    ```
    """
    model = MutualLearning(students, temperature=temperature)
    model.compile(optimizer=_optimizer_factory(optimizer)(), metrics=metrics)
    args, kwargs = _fit_args(data, batch_size, validation_data)
    history = model.fit(*args, epochs=epochs, verbose=verbose, callbacks=callbacks, **kwargs)
    return model.students, [history]
