"""What a keras_kd Distiller keeps so that code written for `keras.distillation` reads back what it wrote.

`keras.distillation` code passes Python numbers and Keras loss objects and
compares what it reads back with them: `distiller.student_loss_weight == 0.7`,
`distiller.distillation_losses[0].temperature == 2.0`. The Distiller trains
with float32 Variables (which hold 0.7 as 0.699999988, and
1 - float32(0.3) is not 0.7) and with keras_kd losses, so it keeps the values
and objects as given here, apart from its training state. The loss adapters
themselves are in `keras_kd.losses._compat`. Plumbing: not part of
`keras_kd.__all__`.
"""

from keras_kd import losses as kd_losses

__all__ = ["AsGiven", "resolve_losses"]


def _is_keras_loss_object(loss):
    """True for a loss object from Keras' own modules (a `keras.distillation` loss), not a keras_kd one."""
    return not isinstance(loss, (str, dict, kd_losses.DistillationLoss)) and type(loss).__module__.startswith("keras")


def _resolve(loss):
    if not isinstance(loss, kd_losses.DistillationLoss) and type(loss).__module__.startswith("keras"):
        from keras_kd.losses._compat import from_keras_distillation_loss

        adapted = from_keras_distillation_loss(loss)
        if adapted is not None:
            return adapted
    return kd_losses.get(loss)


def resolve_losses(given):
    """The keras_kd losses that train for `given` (names, configs, keras_kd or `keras.distillation` losses).

    Returns `(resolved, as_given)`: `as_given` keeps each `keras.distillation`
    object as the user gave it (code written for Keras inspects and serializes
    it) and holds the resolved loss otherwise.
    """
    resolved = [_resolve(loss) for loss in given]
    as_given = [loss if _is_keras_loss_object(loss) else adapted for loss, adapted in zip(given, resolved)]
    return resolved, as_given


class AsGiven:
    """The Python numbers given for the Distiller's float32 Variables, read back while a Variable still holds them.

    Also keeps `student_loss_weight` (the `keras.distillation` spelling of
    `1 - alpha`) when alpha was given that way, so it reads back unchanged
    and `get_config` writes it in the same spelling.
    """

    def __init__(self):
        self._numbers = {}
        self.student_loss_weight = None

    def assign(self, variable, value):
        """Assigns `value` to `variable` and remembers the Python number."""
        variable.assign(value)
        self._numbers[id(variable)] = (value, variable.numpy().item())

    def read(self, variable):
        """The variable's value: the Python number last given while it still holds it, else its float."""
        current = variable.numpy().item()
        given = self._numbers.get(id(variable))
        return given[0] if given is not None and given[1] == current else current

    def assign_student_loss_weight(self, alpha_variable, student_loss_weight):
        """Sets alpha to `1 - student_loss_weight`, keeping `student_loss_weight` as given."""
        self.student_loss_weight = float(student_loss_weight)
        self.assign(alpha_variable, 1.0 - self.student_loss_weight)

    def read_student_loss_weight(self, alpha_variable):
        """`1 - alpha`, or `student_loss_weight` as given while alpha still holds `1 - ` it."""
        alpha = self.read(alpha_variable)
        given = self._numbers.get(id(alpha_variable))
        if self.student_loss_weight is not None and given is not None and alpha == given[0]:
            return self.student_loss_weight
        return 1.0 - alpha
