"""Quantization-aware training (QAT) for Keras 3 models, converted to int8 by TFLite.

`quantize_model(model)` returns a copy of a Sequential/Functional model laid out
as TFLite runs it in int8 (BatchNormalization folded, ReLUs fused, separable
convolutions split, activations and layer norms in their int8 ops) with fake
quantization wherever TFLite gives a tensor its own scale, so that
`keras_kd.export.to_tflite` writes an all-int8 file without representative data.
What each layer type becomes is one row of the registry
(`keras_kd.quantization.registry`); users add rows by passing `QuantizeRule`s.
Under tf_keras (`TF_USE_LEGACY_KERAS=1`) it uses tensorflow-model-optimization.

Example:

```python
from keras_kd.quantization import quantize_model, is_quantization_aware

qat_student = quantize_model(student)          # a copy; `student` is untouched
assert is_quantization_aware(qat_student)
```
"""

from keras_kd.quantization.activations import ACTIVATIONS, ActivationRule
from keras_kd.quantization.compare import LayerDrift, compare_layers
from keras_kd.quantization.folding import fold_batch_norm
from keras_kd.quantization.layers import (
    FakeQuant,
    QuantizedActivation,
    QuantizedAffine,
    QuantizedAveragePooling,
    QuantizedConstant,
    QuantizedOutput,
    QuantizedResize,
    QuantizedSubmodel,
    QuantizedWeights,
    converting,
)
from keras_kd.quantization.quantize import float_layers, is_quantization_aware, quantize_model
from keras_kd.quantization.quantizers import fake_quant_activations, fake_quant_weights
from keras_kd.quantization.registry import QuantizeRegistry, QuantizeRule, supported_layer_types

__all__ = [
    "quantize_model",
    "is_quantization_aware",
    "float_layers",
    "supported_layer_types",
    "compare_layers",
    "LayerDrift",
    "QuantizeRule",
    "QuantizeRegistry",
    "ActivationRule",
    "ACTIVATIONS",
    "FakeQuant",
    "QuantizedWeights",
    "QuantizedActivation",
    "QuantizedAffine",
    "QuantizedOutput",
    "QuantizedAveragePooling",
    "QuantizedResize",
    "QuantizedConstant",
    "QuantizedSubmodel",
    "fold_batch_norm",
    "fake_quant_weights",
    "fake_quant_activations",
    "converting",
]
