"""Reading and rebuilding the graph of a Sequential or Functional Keras model.

Both passes of `quantize_model` (the float-to-float rewrites, then the placement
of quantizers) walk a model's nodes in topological order and build a new model
node by node; this module is the one place that knows how.
"""

from keras_kd.backend import keras

__all__ = ["Graph", "UniqueNames", "rebuild", "call_node", "clone_layer", "is_functional", "all_layers"]


def is_functional(model):
    """True for a Functional or built Sequential model, whose graph can be read."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


class Graph:
    """The nodes of a Functional (or built Sequential) model in topological order.

    Attributes:
        model: the model.
        inputs, outputs: its input and output tensors (flat lists).
        nodes: the nodes that compute something (no input nodes), producers first.
        consumers: `id(tensor)` -> nodes that read it.
        calls: `id(operation)` -> how many nodes call it (above 1: a shared layer).
    """

    def __init__(self, model):
        functional = model
        if isinstance(model, keras.Sequential):
            functional = getattr(model, "_functional", None)
            if functional is None:
                raise ValueError(
                    f"Sequential model {model.name!r} is not built, so its graph is unknown. Give it an "
                    "`keras.Input(shape)` first layer (or call `model.build(input_shape)`) before quantize_model."
                )
        if not hasattr(functional, "_nodes_by_depth"):
            raise ValueError(
                f"quantize_model needs a Sequential or Functional model, got a subclassed "
                f"{type(model).__name__} ({model.name!r}) whose graph cannot be read. Rebuild it with the "
                "Functional API, or quantize a Functional model that calls it (its layers are then traced)."
            )
        self.model = model
        self.inputs = list(functional.inputs)
        self.outputs = list(functional.outputs)
        self.inputs_struct = getattr(functional, "_inputs_struct", None)
        self.outputs_struct = getattr(functional, "_outputs_struct", None)
        self.nodes = []
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    self.nodes.append(node)
        self.consumers = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
        self.output_ids = {id(tensor) for tensor in self.outputs}
        self.calls = {}
        for node in self.nodes:
            self.calls[id(node.operation)] = self.calls.get(id(node.operation), 0) + 1

    def only_consumer(self, tensor):
        """The single node consuming `tensor` when it is not also a model output, else None."""
        consumers = self.consumers.get(id(tensor), [])
        if len(consumers) != 1 or id(tensor) in self.output_ids:
            return None
        return consumers[0]

    def is_shared(self, operation):
        return self.calls.get(id(operation), 0) > 1


def _new_inputs(graph):
    inputs = []
    for tensor in graph.inputs:
        input_layer = tensor._keras_history[0]
        inputs.append(keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=input_layer.name))
    return inputs


def rebuild(graph, emit, input_hook=None, output_hook=None, model_class=None):
    """Builds a new model from `graph`, asking `emit` for each node's new outputs.

    Args:
        graph: a `Graph`.
        emit: `(node, tensors) -> {id(old tensor): new tensor}`, where `tensors`
            maps `id(old tensor)` to the new tensor for everything built so far.
            A node whose outputs an earlier `emit` already produced is skipped;
            `emit` returns `{}` for a node fused into the one before it.
        input_hook: optional `(old input, new input) -> tensor` applied to each
            new model input before the nodes read it (an input quantizer).
        output_hook: optional `(old output, new output) -> tensor` applied to
            each model output (an output quantizer).
        model_class: the Functional class to build (`keras.Model` by default).

    Returns:
        The new `keras.Model`, named like the old one, with the same input and
        output structure.
    """
    new_inputs = _new_inputs(graph)
    tensors = {}
    for old, new in zip(graph.inputs, new_inputs):
        tensors[id(old)] = input_hook(old, new) if input_hook is not None else new
    for node in graph.nodes:
        if all(id(tensor) in tensors for tensor in node.outputs):
            continue
        tensors.update(emit(node, tensors))
    new_outputs = [tensors[id(tensor)] for tensor in graph.outputs]
    if output_hook is not None:
        new_outputs = [output_hook(old, new) for old, new in zip(graph.outputs, new_outputs)]
    model = graph.model
    if graph.inputs_struct is not None and not isinstance(model, keras.Sequential):
        new_inputs = keras.tree.pack_sequence_as(graph.inputs_struct, new_inputs)
    if graph.outputs_struct is not None and not isinstance(model, keras.Sequential):
        new_outputs = keras.tree.pack_sequence_as(graph.outputs_struct, new_outputs)
    elif len(new_outputs) == 1:
        new_outputs = new_outputs[0]
    if isinstance(new_inputs, list) and len(new_inputs) == 1:
        new_inputs = new_inputs[0]
    return (model_class or keras.Model)(new_inputs, new_outputs, name=model.name)


def call_node(node, operation, tensors, replace=None, constant=None):
    """Calls `operation` with `node`'s arguments, its tensors swapped for the new ones.

    Args:
        node: the old node.
        operation: what to call (the clone, a wrapper).
        tensors: `id(old tensor)` -> new tensor.
        replace: optional `id(old tensor)` -> tensor overriding `tensors` (a quantized input).
        constant: optional `value -> replacement or None`, asked for every
            argument that is not a tensor of the graph (a constant written
            into it); None keeps the value.

    Returns:
        The flat list of outputs.
    """
    local = {id(t): (replace or {}).get(id(t), tensors.get(id(t))) for t in node.input_tensors}
    args, kwargs = fill_arguments(node, local, constant)
    return keras.tree.flatten(operation(*args, **kwargs))


def fill_arguments(node, local, constant=None):
    """`node`'s `(args, kwargs)` with each graph tensor swapped by `local` (`id(old) -> new`), and each
    other argument by `constant(value)` where that is not None (see `call_node`)."""
    if constant is None:
        return node.arguments.fill_in(local)

    def swap(value):
        if isinstance(value, keras.KerasTensor):
            return local.get(id(value))
        replacement = constant(value)
        return value if replacement is None else replacement

    return node.arguments.convert(swap)


def all_layers(model):
    """Every layer of `model`, nested models' layers included (depth first)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def clone_layer(layer):
    """A new layer with `layer`'s config (weights are copied by the caller once it is built).

    The config comes from a live object, not a file, so Lambda layers (which
    safe mode refuses to deserialize) are cloned too.
    """
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(False):
        return type(layer).from_config(layer.get_config())


class UniqueNames:
    """Layer names not yet used in `model` (nested models included), for the layers a pass adds."""

    def __init__(self, model):
        self.used = {layer.name for layer in all_layers(model)}

    def __call__(self, name):
        candidate, index = name, 1
        while candidate in self.used:
            candidate, index = f"{name}_{index}", index + 1
        self.used.add(candidate)
        return candidate
