"""The activation table: how TFLite runs each activation in int8, and how QAT simulates it.

Every activation a quantized model may contain has one row here, and nothing
else in the package decides how an activation is quantized:

* ``fused``: TFLite fuses it into the kernel before it (CONV_2D, FULLY_CONNECTED,
  ADD, MUL, ...): no quantizer between the kernel and the activation.
* ``op``: its own int8 op (HARD_SWISH, GELU, LEAKY_RELU) with a tracked output range.
* ``fixed``: its own int8 op whose output range TFLite fixes (LOGISTIC, TANH,
  SOFTMAX); QAT uses that range exactly.
* ``decomposed``: TFLite runs it as several int8 ops (swish is LOGISTIC then MUL;
  hard sigmoid is ADD+RELU6 then MUL); QAT quantizes every intermediate tensor.

Each row lists its *stages*: `(function(inputs, previous), fixed range or None)`.
A stage's output is fake-quantized with its fixed range, or with a tracked one.
"""

import dataclasses

from keras_kd.backend import keras

__all__ = ["ActivationRule", "ACTIVATIONS", "LOGISTIC_OUTPUT_RANGE", "TANH_OUTPUT_RANGE", "activation_rule"]

#: TFLite's int8 LOGISTIC and SOFTMAX outputs: scale 1/256, zero point -128.
LOGISTIC_OUTPUT_RANGE = (0.0, 255.0 / 256.0)
#: TFLite's int8 TANH output: scale 1/128, zero point 0.
TANH_OUTPUT_RANGE = (-1.0, 127.0 / 128.0)


@dataclasses.dataclass(frozen=True)
class ActivationRule:
    """How one activation is quantized (see the module docstring).

    Attributes:
        name: the Keras name (`keras.activations.get(name).__name__`).
        kind: "identity", "fused", "op", "fixed" or "decomposed".
        stages: `(function, fixed_range)` pairs; each function takes
            `(inputs, previous)` and the stage's output is fake-quantized.
        tflite_ops: the TFLite ops it becomes, for the docs.
    """

    name: str
    kind: str
    stages: tuple
    tflite_ops: str


def _relu6(inputs, previous):
    return keras.ops.relu6(previous)


_ROWS = (
    ActivationRule("linear", "identity", (), "none"),
    ActivationRule("relu", "fused", ((lambda x, p: keras.ops.relu(p), None),), "fused, or RELU"),
    ActivationRule("relu6", "fused", ((_relu6, None),), "fused, or RELU6"),
    ActivationRule("leaky_relu", "op", ((lambda x, p: keras.ops.leaky_relu(p), None),), "LEAKY_RELU"),
    ActivationRule("hard_silu", "op", ((lambda x, p: keras.ops.hard_silu(p), None),), "HARD_SWISH"),
    ActivationRule("gelu", "op", ((lambda x, p: keras.ops.gelu(p, approximate=False), None),), "GELU"),
    ActivationRule(
        "sigmoid", "fixed", ((lambda x, p: keras.ops.sigmoid(p), LOGISTIC_OUTPUT_RANGE),), "LOGISTIC"
    ),
    ActivationRule("tanh", "fixed", ((lambda x, p: keras.ops.tanh(p), TANH_OUTPUT_RANGE),), "TANH"),
    ActivationRule(
        "softmax", "fixed", ((lambda x, p: keras.ops.softmax(p, axis=-1), LOGISTIC_OUTPUT_RANGE),), "SOFTMAX"
    ),
    ActivationRule(
        "silu",
        "decomposed",
        ((lambda x, p: keras.ops.sigmoid(p), LOGISTIC_OUTPUT_RANGE), (lambda x, p: x * p, None)),
        "LOGISTIC, MUL",
    ),
    ActivationRule(
        "hard_sigmoid",
        "decomposed",
        ((lambda x, p: keras.ops.relu6(p + 3.0), None), (lambda x, p: p * (1.0 / 6.0), None)),
        "ADD (fused RELU6), MUL",
    ),
)

#: name -> ActivationRule; aliases (swish, hard_swish) resolve through `activation_rule`.
ACTIVATIONS = {row.name: row for row in _ROWS}

_ALIASES = {"swish": "silu", "hard_swish": "hard_silu", None: "linear"}


def activation_rule(activation):
    """The `ActivationRule` of a Keras activation (a function or a name), or None when it has none.

    Example:

    >>> activation_rule("swish").name, activation_rule(keras.activations.relu6).kind
    ('silu', 'fused')
    """
    name = activation if isinstance(activation, str) or activation is None else getattr(activation, "__name__", None)
    name = _ALIASES.get(name, name)
    return ACTIVATIONS.get(name)
