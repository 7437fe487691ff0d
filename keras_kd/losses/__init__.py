"""Distillation losses: each a pure function plus a serializable `keras.losses.Loss`.

This package is the one public surface; the family modules (`_response.py`,
`_feature.py`, ...) are private. A loss is a pure function and a
`@register_loss` class with `function = staticmethod(...)` in its family
module, both named in that module's `__all__`, plus its golden row in
`tests/test_losses.py`. `__all__` here is the union of the family modules'
`__all__`, and the table below is made from the registry, so neither is
edited by hand; `tests/test_losses.py` checks both against the registry.

"""

# The registry keeps the order of registration: these imports set the order of the table below.
from keras_kd.losses import _base, _response, _regression, _sequence, _multi_teacher
from keras_kd.losses import _feature, _relation, _information, _gradient
from keras_kd.losses._base import *  # noqa: F401,F403
from keras_kd.losses._response import *  # noqa: F401,F403
from keras_kd.losses._regression import *  # noqa: F401,F403
from keras_kd.losses._sequence import *  # noqa: F401,F403
from keras_kd.losses._multi_teacher import *  # noqa: F401,F403
from keras_kd.losses._feature import *  # noqa: F401,F403
from keras_kd.losses._relation import *  # noqa: F401,F403
from keras_kd.losses._information import *  # noqa: F401,F403
from keras_kd.losses._gradient import *  # noqa: F401,F403

# `__all__ += module.__all__` is the form type checkers follow, so the star imports above stay visible to them.
__all__ = []
__all__ += _base.__all__
__all__ += _response.__all__
__all__ += _regression.__all__
__all__ += _sequence.__all__
__all__ += _multi_teacher.__all__
__all__ += _feature.__all__
__all__ += _relation.__all__
__all__ += _information.__all__
__all__ += _gradient.__all__

# Not in __all__: the multi-teacher loss's errors point here for the teacher model it expects.
from keras_kd.losses._multi_teacher import stack_teachers  # noqa: E402,F401


def _registry_table():
    """The registered losses as a Markdown table: family (the module's name), name, class, function."""
    rows = ["| family | registered name | class | function |", "| --- | --- | --- | --- |"]
    for name, cls in _base._REGISTRY.items():
        family = cls.__module__.rpartition(".")[2].lstrip("_")
        function = f"`{cls.function.__name__}`" if cls.function is not None else ""
        rows.append(f"| {family} | `{name}` | `{cls.__name__}` | {function} |")
    return "\n".join(rows) + "\n"


if __doc__ is not None:  # None under python -OO
    __doc__ += _registry_table()
