"""Quantization-aware training (QAT) for Keras 3 models, converted to int8 by TFLite.

`quantize_model(model)` returns a copy of a Sequential/Functional model with
BatchNormalization folded, ReLUs fused and int8 fake quantization placed where
the TFLite converter quantizes, so that `tf.lite.TFLiteConverter` with
`Optimize.DEFAULT` produces an int8 model without representative data.
Under tf_keras (`TF_USE_LEGACY_KERAS=1`) it uses tensorflow-model-optimization.

Example:

```python
from keras_kd.quantization import quantize_model, is_quantization_aware

qat_student = quantize_model(student)          # a copy; `student` is untouched
assert is_quantization_aware(qat_student)
```
"""

from keras_kd.quantization.folding import batch_norm_factors, fold_batch_norm
from keras_kd.quantization.layers import (
    FakeQuant,
    QuantizedConv2D,
    QuantizedDense,
    QuantizedDepthwiseConv2D,
    QuantizedOutput,
)
from keras_kd.quantization.quantize import float_layers, is_quantization_aware, quantize_model, supported_layer_types
from keras_kd.quantization.quantizers import (
    SOFTMAX_OUTPUT_RANGE,
    fake_quant_activations,
    fake_quant_reference,
    fake_quant_weights,
    quantization_params,
)

__all__ = [
    "quantize_model",
    "is_quantization_aware",
    "float_layers",
    "supported_layer_types",
    "FakeQuant",
    "QuantizedConv2D",
    "QuantizedDepthwiseConv2D",
    "QuantizedDense",
    "QuantizedOutput",
    "fold_batch_norm",
    "batch_norm_factors",
    "quantization_params",
    "fake_quant_reference",
    "fake_quant_weights",
    "fake_quant_activations",
    "SOFTMAX_OUTPUT_RANGE",
]
