"""The frozen inference graph of :func:`refinenet_tf.inference.freeze`: the variables a traced function reads,
held as private snapshots (:func:`snapshot_graph_def`) or written into its graph as constants
(:func:`constant_graph_def`); each batch normalization folded into the convolution before it
(:func:`fold_batch_norms`) or, with snapshots, fused with it into oneDNN's convolution that keeps its converted
weights (:func:`fuse_onednn_convolutions`); an RGB -> BGR channel reversal of the input folded into the first
convolution's weights (:func:`fold_channel_reversals`); and the result as a function
(:func:`function_from_graph_def`).

In inference mode a batch normalization after a convolution is an affine map per output channel,
``scale * (conv(x, W) + b - mean) / sqrt(variance + epsilon) + offset``, which is the convolution
``conv(x, W * s) + (b - mean) * s + offset`` with ``s = scale / sqrt(variance + epsilon)``. Folded, each such
pair is one convolution with a bias, which oneDNN runs as one kernel (with the ReLU after it), instead of a
convolution whose output passes through four more arithmetic steps per element. Folding needs new weights, so
with snapshots (where a copy of the weights is what they avoid) only depthwise convolutions, whose weights are
small, are folded; the others run the batch normalization as post-ops of the fused convolution.

TensorFlow's oneDNN convolution keeps its weights converted to oneDNN's blocked layout only when its node says
they are constant (``is_filter_const``), which TensorFlow's graph pass sets for ``Const`` weights only: hence
the constants, and the copies of them TensorFlow holds (about 5 times the Keras path's peak memory for slim
RefineNet-101). :func:`fuse_onednn_convolutions` writes the node with the mark set on a snapshot instead,
except for the deepest levels' convolutions where they do little of the work (:func:`light_work_convolutions`,
by the strides of :func:`output_strides`): the converted copy pays in proportion to the pixels computed and
costs memory in proportion to the weights.

Both ways keep the frozen graph's convolutions apart from the Keras model's: TensorFlow's oneDNN kernels cache
their compiled convolutions per thread under a key of shapes and fused steps that does not say whether the
weights are constant. A frozen convolution with the Keras model's key (``freeze="auto"`` runs the Keras model
first) reused the kernel compiled for variable weights, which reads them in TensorFlow's plain layout: 15-20 %
slower for slim RefineNet-101 (docs/benchmarks.md). Folded batch normalizations give the constants other keys;
the snapshots' convolutions end with an exact ``LeakyRelu`` post-op whose alpha no Keras layer of ours uses.
"""

import collections

import numpy as np
import tensorflow as tf

__all__ = ["constant_graph_def", "fold_batch_norms", "fold_channel_reversals", "function_from_graph_def",
           "fuse_onednn_convolutions", "light_work_convolutions", "onednn_available", "output_strides",
           "snapshot_graph_def"]

_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")
_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
#: element-wise steps with a constant per-channel operand that a channel reversal passes through unchanged once
#: that operand is reversed too
_PER_CHANNEL = ("Sub", "Add", "AddV2", "Mul", "RealDiv", "BiasAdd")
_FLOAT = tf.float32.as_datatype_enum


def _producer(reference):
    """The node name in an input reference (``"name"``, ``"name:1"``, ``"^name"``)."""
    return reference.lstrip("^").split(":")[0]


def _output_index(reference):
    return int(reference.split(":")[1]) if ":" in reference and not reference.startswith("^") else 0


def constant_graph_def(function):
    """The graph of a traced ``ConcreteFunction`` with the variables it reads as constants of their values.

    Returns ``(graph_def, input_specs, output_names)``: ``input_specs`` maps the name of each argument's
    placeholder to its ``tf.TensorSpec``, ``output_names`` are the names of the flattened outputs. Each
    ``ReadVariableOp`` of a captured variable becomes a ``Const``, and each other captured tensor one too, written
    straight into the ``GraphDef`` (one copy of the weights; TensorFlow's ``convert_variables_to_constants_v2``
    holds several while it works, about 10 times the weights, and is used where the graph does more with its
    variables than read them, or calls other functions).
    """
    captured = {internal.op.name: external for external, internal in function.graph.captures}
    inputs = {tensor.name: tf.TensorSpec.from_tensor(tensor) for tensor in function.inputs
              if tensor.op.name not in captured}
    outputs = [tensor.name for tensor in function.outputs]
    graph_def = function.graph.as_graph_def()
    readers_ok = not graph_def.library.function and all(
        node.op == "ReadVariableOp" or _producer(reference) not in captured
        or captured[_producer(reference)].dtype != tf.resource
        for node in graph_def.node for reference in node.input)
    if not readers_ok:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        constant = convert_variables_to_constants_v2(function)
        return (constant.graph.as_graph_def(), {tensor.name: tf.TensorSpec.from_tensor(tensor)
                                                for tensor in constant.inputs}, outputs)
    for node in graph_def.node:
        if node.op == "ReadVariableOp" and _producer(node.input[0]) in captured:
            dtype = tf.as_dtype(node.attr["dtype"].type)
            value = tf.raw_ops.ReadVariableOp(resource=captured[_producer(node.input[0])], dtype=dtype)
        elif node.op == "Placeholder" and node.name in captured and captured[node.name].dtype != tf.resource:
            value = captured[node.name]
        else:
            continue
        node.CopyFrom(_constant_node(node.name, value.numpy(), value.dtype))
    for index in reversed(range(len(graph_def.node))):  # the variables' handles, now read by nothing
        node = graph_def.node[index]
        if node.op == "Placeholder" and node.name in captured:
            del graph_def.node[index]
    return graph_def, inputs, outputs


def fold_batch_norms(graph_def, output_names, variables=None, convolutions=_CONVOLUTIONS):
    """Folds, in the frozen ``graph_def`` and in place (no copy of its weights is made), each inference-mode
    batch normalization into the float32 NHWC convolution (of the ``convolutions`` op types: ``Conv2D``,
    ``DepthwiseConv2dNative``; optionally followed by a ``BiasAdd``) whose output only it reads; then removes
    the nodes that no longer lead to ``output_names`` (tensor names).

    The batch normalization's node becomes a ``BiasAdd`` of the same name, so what read it reads the folded
    result. Weights, biases and statistics must be constants (as :func:`constant_graph_def` leaves them,
    possibly behind ``Identity`` nodes), or reads of the ``variables`` (placeholder name -> ``tf.Variable``;
    the folded weights are then new constants); a pattern that does not match exactly is left as it is.

    Returns the number of batch normalizations folded.
    """
    nodes, readers, _ = _index(graph_def)

    def constant(reference):
        return _constant_value(nodes, reference, variables=variables)

    def only_read_as_output_0(name):
        return all(reference.startswith("^") is False and _output_index(reference) == 0
                   for reference in readers[name])

    new_nodes = []
    folded = 0
    for node in list(graph_def.node):
        if node.op not in _BATCH_NORMS or node.attr["is_training"].b or node.attr["T"].type != _FLOAT:
            continue
        if node.attr["data_format"].s not in (b"NHWC", b"") or not only_read_as_output_0(node.name):
            continue
        before = nodes.get(_producer(node.input[0]))
        bias = None
        if before is not None and before.op == "BiasAdd" and _output_index(node.input[0]) == 0:
            if len(readers[before.name]) != 1 or before.attr["data_format"].s not in (b"NHWC", b""):
                continue
            bias = constant(before.input[1])
            if bias is None:
                continue
            convolution = nodes.get(_producer(before.input[0]))
            convolution_reference = before.input[0]
        else:
            convolution, convolution_reference = before, node.input[0]
        if (convolution is None or convolution.op not in convolutions or convolution.attr["T"].type != _FLOAT
                or convolution.attr["data_format"].s not in (b"NHWC", b"")
                or _output_index(convolution_reference) != 0 or len(readers[convolution.name]) != 1):
            continue
        weights = constant(convolution.input[1])
        statistics = [constant(reference) for reference in node.input[1:5]]
        if weights is None or any(value is None for value in statistics):
            continue
        scale, offset, mean, variance = (value.astype(np.float64) for value in statistics)
        factor = scale / np.sqrt(variance + node.attr["epsilon"].f)
        if convolution.op == "DepthwiseConv2dNative":  # [h, w, in, multiplier], output channel in * multiplier + m
            folded_weights = weights * factor.reshape(weights.shape[2:])
        else:
            folded_weights = weights * factor
        folded_bias = ((bias if bias is not None else 0.0) - mean) * factor + offset

        weights_name, bias_name = f"{convolution.name}/folded_weights", f"{node.name}/folded_bias"
        new_nodes += [_constant_node(weights_name, folded_weights), _constant_node(bias_name, folded_bias)]
        convolution.input[1] = weights_name
        bias_add = tf.compat.v1.NodeDef(name=node.name, op="BiasAdd", input=[convolution.name, bias_name],
                                         device=node.device)
        bias_add.attr["T"].type = _FLOAT
        bias_add.attr["data_format"].s = b"NHWC"
        node.CopyFrom(bias_add)
        folded += 1
    graph_def.node.extend(new_nodes)
    _remove_unused_nodes(graph_def, output_names)
    return folded


#: ``leakyrelu_alpha`` of :func:`fuse_onednn_convolutions`' post-op: 1 keeps the value (no activation), -0.0
#: is a ReLU (it turns a negative value into +0.0, as ReLU does); their bytes in oneDNN's kernel keys differ from
#: those of the ReLU (alpha 0.0) or no activation that TensorFlow's own fusions of the Keras graph carry
IDENTITY_ALPHA, RELU_ALPHA = 1.0, -0.0


def onednn_available():
    """Whether TensorFlow runs its convolutions through oneDNN here (x86 builds, unless the environment sets
    ``TF_ENABLE_ONEDNN_OPTS=0``) and has the fused oneDNN convolution that :func:`fuse_onednn_convolutions`
    writes."""
    from tensorflow.python.framework import op_def_registry
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled()) and op_def_registry.get("_MklNativeFusedConv2D") is not None


def snapshot_graph_def(function, variables):
    """The graph of a traced ``ConcreteFunction`` that reads private snapshots of ``variables`` instead of
    them: ``(graph_def, input_specs, output_names, snapshots, sources)`` with ``snapshots`` mapping the name of each
    placeholder that held a captured variable to a new ``tf.Variable`` of that variable's value (and of each
    other captured tensor to that tensor; for :func:`function_from_graph_def`'s ``captures``), or None where the
    graph does more with a variable than read it, calls other functions, or captures a resource that is not one
    of ``variables``; ``sources`` maps the same names to the variables the snapshots were taken of.

    A snapshot shares its buffer with the variable until either is assigned (TensorFlow copies a shared buffer
    before it writes), so it costs no memory until the model trains, and keeps its values when it does.
    """
    captured = {internal.op.name: external for external, internal in function.graph.captures}
    by_handle = {id(variable.handle): variable for variable in variables}
    graph_def = function.graph.as_graph_def()
    if graph_def.library.function or any(tensor.dtype == tf.resource and id(tensor) not in by_handle
                                         for tensor in captured.values()):
        return None
    if any(_producer(reference) in captured and node.op != "ReadVariableOp"
           for node in graph_def.node for reference in node.input):
        return None
    inputs = {tensor.name: tf.TensorSpec.from_tensor(tensor) for tensor in function.inputs
              if tensor.op.name not in captured}
    sources = {name: by_handle[id(tensor)] for name, tensor in captured.items() if tensor.dtype == tf.resource}
    snapshots = {name: tf.Variable(sources[name].read_value(), trainable=False) if name in sources else tensor
                 for name, tensor in captured.items()}
    return graph_def, inputs, [tensor.name for tensor in function.outputs], snapshots, sources


def fuse_onednn_convolutions(graph_def, output_names, variables, plain_weights=()):
    """Writes, in ``graph_def`` and in place, each float32 NHWC ``Conv2D`` whose weights are a constant or a
    read of ``variables`` (placeholder name -> ``tf.Variable``) as oneDNN's fused convolution
    (``_MklNativeFusedConv2D``) marked ``is_filter_const``, with the ``BiasAdd``, inference-mode batch
    normalization and ``Relu`` after it as its post-ops where only it reads them; then removes the nodes that no
    longer lead to ``output_names``. Only for TensorFlow with oneDNN (:func:`onednn_available`).

    Marked so, the convolution converts its weights into oneDNN's blocked layout once and keeps them, as it does
    for constants, instead of on every call: the frozen graph's speed without a constant copy of the weights
    (TensorFlow's graph passes set the mark only for ``Const`` weights). Each one ends with a ``LeakyRelu``
    post-op (:data:`IDENTITY_ALPHA`, :data:`RELU_ALPHA`, both exact) so that its kernel key differs from any of
    the Keras model's: oneDNN's per-thread kernel cache does not key on the mark, and a kernel compiled for
    the Keras graph's variable weights reads them in TensorFlow's plain layout (docs/benchmarks.md).
    A ``BiasAdd`` before the batch normalization goes into its mean (``BN(conv + b)`` is ``BN`` with
    ``mean - b``); a convolution without either gets a zero bias. The fused node takes the name of the last step
    it replaces, so what read that reads the result. The ``Conv2D`` nodes named in ``plain_weights`` are fused
    but not marked: they compute from the weights in TensorFlow's layout and keep no converted copy
    (:func:`light_work_convolutions` says which pay for theirs least).

    Returns the number of convolutions fused.
    """
    nodes, readers, consumers = _index(graph_def)

    def only_reader(node):
        return _only_reader(node, readers, consumers)

    def nhwc_float(node):
        return (node.attr["T"].type == _FLOAT and node.attr["data_format"].s in (b"NHWC", b"")
                and _output_index(node.input[0]) == 0)

    new_nodes = []
    fused = 0
    for convolution in list(graph_def.node):
        if convolution.op != "Conv2D" or not nhwc_float(convolution):
            continue
        shape = _filter_shape(nodes, convolution.input[1], variables)
        if shape is None:
            continue
        steps, bias = [convolution], None
        step = only_reader(convolution)
        if step is not None and step.op == "BiasAdd" and nhwc_float(step):
            bias, steps = step, steps + [step]
            step = only_reader(step)
        if (step is not None and step.op in _BATCH_NORMS and nhwc_float(step) and not step.attr["is_training"].b
                and all(_output_index(reference) == 0 for reference in readers[step.name])):
            scale, offset, mean, variance = step.input[1:5]
            if bias is not None:
                mean_node = tf.compat.v1.NodeDef(name=f"{step.name}/mean_less_bias", op="Sub",
                                                 input=[mean, bias.input[1]], device=step.device)
                mean_node.attr["T"].type = _FLOAT
                new_nodes.append(mean_node)
                mean = mean_node.name
            fused_ops, arguments, epsilon = [b"FusedBatchNorm"], [scale, offset, mean, variance], step.attr["epsilon"].f
            steps.append(step)
            step = only_reader(step)
        else:
            epsilon = 0.0
            if bias is None:
                bias_name = f"{convolution.name}/zero_bias"
                new_nodes.append(_constant_node(bias_name, np.zeros(shape[-1:], np.float32)))
                arguments = [bias_name]
            else:
                arguments = [bias.input[1]]
            fused_ops = [b"BiasAdd"]
        alpha = IDENTITY_ALPHA
        if step is not None and step.op == "Relu" and step.attr["T"].type == _FLOAT:
            alpha = RELU_ALPHA
            steps.append(step)
        node = tf.compat.v1.NodeDef(name=steps[-1].name, op="_MklNativeFusedConv2D",
                                    input=[*convolution.input[:2], *arguments], device=convolution.device)
        for key in ("strides", "padding", "explicit_paddings", "data_format", "dilations"):
            if key in convolution.attr:
                node.attr[key].CopyFrom(convolution.attr[key])
        node.attr["T"].type = _FLOAT
        node.attr["TArgs"].list.type.extend([_FLOAT] * len(arguments))
        node.attr["num_args"].i = len(arguments)
        node.attr["fused_ops"].list.s.extend([*fused_ops, b"LeakyRelu"])
        node.attr["epsilon"].f = epsilon
        node.attr["leakyrelu_alpha"].f = alpha
        node.attr["is_filter_const"].b = convolution.name not in plain_weights
        node.attr["_kernel"].s = b"MklNameChangeOp"  # the label TensorFlow registers its oneDNN kernels under
        steps[-1].CopyFrom(node)
        fused += 1
    graph_def.node.extend(new_nodes)
    if fused:
        _remove_unused_nodes(graph_def, output_names)
    return fused


def output_strides(graph_def, input_specs, variables, probe_side=512):
    """``{name: stride}`` for each ``Conv2D`` node of ``graph_def`` whose output size TensorFlow's shape inference
    tells for a ``probe_side`` x ``probe_side`` image (the sides ``input_specs`` fixes stay): the input's height
    over the output's. ``input_specs`` as :func:`function_from_graph_def` takes them, one image input;
    ``variables`` as :func:`fuse_onednn_convolutions` takes them (their reads get the variables' shapes). Empty
    where the graph does not import so.

    Example:
        >>> import tf_keras as keras
        >>> inputs = keras.Input([None, None, 3])
        >>> x = keras.layers.Conv2D(4, 3, strides=4, padding="same")(inputs)
        >>> x = keras.layers.Conv2D(4, 1)(keras.layers.UpSampling2D()(x))
        >>> model = keras.Model(inputs, x)
        >>> function = tf.function(model).get_concrete_function(tf.TensorSpec([None, None, None, 3]))
        >>> graph_def, inputs, outputs, snapshots, _ = snapshot_graph_def(function, model.variables)
        >>> sorted(output_strides(graph_def, inputs, snapshots).values())
        [2, 4]
    """
    if len(input_specs) != 1:
        return {}
    (input_name, spec), = input_specs.items()
    if spec.shape.rank != 4:
        return {}
    batch, height, width, channels = spec.shape.as_list()
    shape = [batch or 1, height or probe_side, width or probe_side, channels]
    strides = {}
    with tf.Graph().as_default() as graph:
        input_map = {input_name: tf.compat.v1.placeholder(spec.dtype, shape)}
        for node in graph_def.node:
            variable = _variable_read(node, variables)
            if variable is not None:
                input_map[f"{node.name}:0"] = tf.compat.v1.placeholder(variable.dtype, variable.shape)
        try:
            tf.graph_util.import_graph_def(graph_def, input_map=input_map, name="")
        except (ValueError, TypeError):
            return {}
        for operation in graph.get_operations():
            output_height = operation.outputs[0].shape[1] if operation.type == "Conv2D" else None
            if output_height:
                strides[operation.name] = max(1, round(shape[1] / output_height))
    return strides


#: :func:`light_work_convolutions`' bound: the share of the convolutions' work (multiply-adds) that may compute
#: from weights in TensorFlow's layout
LIGHT_WORK_SHARE = 0.05


def light_work_convolutions(graph_def, variables, strides, max_share=None):
    """The names of the ``Conv2D`` nodes of the deepest levels (largest ``strides``, see :func:`output_strides`)
    that together do at most ``max_share`` (default :data:`LIGHT_WORK_SHARE`) of all the convolutions'
    multiply-adds (weights times output pixels), whole levels at a time; empty unless ``strides`` covers every
    ``Conv2D`` with known weights.

    These pay least for the copy of their weights that oneDNN keeps in its blocked layout: few output pixels
    per weight. For slim RefineNet-101 at 512 x 512 the 27 convolutions at stride 32 hold 95 MiB of its 297 MiB
    of weights and do 3.4 % of its work; computing from their weights as they are cost its frozen graph 0.7 %
    of its time by the best calls, 2.1 % by the medians (``docs/benchmarks.md``). Light-Weight RefineNet-50's level at stride 32 does 14 % of
    its work and stays converted.
    """
    max_share = LIGHT_WORK_SHARE if max_share is None else max_share
    nodes = {node.name: node for node in graph_def.node}
    work = {}
    for node in graph_def.node:
        if node.op != "Conv2D":
            continue
        shape = _filter_shape(nodes, node.input[1], variables)
        if shape is None:
            continue
        if node.name not in strides:
            return set()
        work[node.name] = float(np.prod(shape)) / strides[node.name] ** 2
    total, done, plain = sum(work.values()), 0.0, set()
    for stride in sorted(set(strides.values()), reverse=True):
        level = [name for name in work if strides[name] == stride]
        done += sum(work[name] for name in level)
        if done > max_share * total:
            break
        plain.update(level)
    return plain


def _filter_shape(nodes, reference, variables):
    """The shape of a convolution's weights: a ``Const`` (possibly behind ``Identity`` nodes) or a read of
    ``variables``; None for anything else."""
    node = _source(nodes, reference)
    variable = _variable_read(node, variables)
    if variable is not None:
        return variable.shape.as_list()
    if node is not None and node.op == "Const":
        return [dimension.size for dimension in node.attr["value"].tensor.tensor_shape.dim]
    return None


def _source(nodes, reference):
    """The node behind ``reference``, past ``Identity`` nodes (None if it is not in ``nodes``)."""
    node = nodes.get(_producer(reference))
    while node is not None and node.op == "Identity" and len(node.input) == 1:
        node = nodes.get(_producer(node.input[0]))
    return node


def _variable_read(node, variables):
    """The ``tf.Variable`` that ``node`` reads, if it is a ``ReadVariableOp`` of a placeholder that
    ``variables`` maps to one, else None."""
    if node is None or node.op != "ReadVariableOp" or not variables:
        return None
    variable = variables.get(_producer(node.input[0]))
    return variable if isinstance(variable, tf.Variable) else None


def _index(graph_def):
    """``(nodes by name, readers, consumers)``: ``readers`` maps a node's name to the input references to it
    (one per reading input, ``"name"``, ``"name:1"`` or ``"^name"``), ``consumers`` to the nodes that read it by a
    data input (once per such input)."""
    nodes = {node.name: node for node in graph_def.node}
    readers, consumers = collections.defaultdict(list), collections.defaultdict(list)
    for node in graph_def.node:
        for reference in node.input:
            readers[_producer(reference)].append(reference)
            if not reference.startswith("^"):
                consumers[_producer(reference)].append(node)
    return nodes, readers, consumers


def _only_reader(node, readers, consumers):
    """The one node that reads ``node`` (its output 0, as that node's first input), else None: ``node`` read
    twice, by another input, or only by a control edge."""
    references = readers[node.name]
    if len(references) != 1 or len(consumers[node.name]) != 1 or _output_index(references[0]):
        return None
    reader = consumers[node.name][0]
    return reader if reader.input[0] == references[0] else None


def _constant_value(nodes, reference, dtype=_FLOAT, variables=None):
    """The value behind ``reference`` if it is a ``Const`` of ``dtype`` (possibly behind ``Identity`` nodes), or
    a ``ReadVariableOp`` of a placeholder that ``variables`` (placeholder name -> ``tf.Variable``) maps, else
    None."""
    node = _source(nodes, reference)
    variable = _variable_read(node, variables)
    if variable is not None and variable.dtype.as_datatype_enum == dtype:
        return variable.numpy()
    if node is None or node.op != "Const" or node.attr["dtype"].type != dtype:
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def fold_channel_reversals(graph_def, output_names, variables=None):
    """Folds, in the frozen ``graph_def`` and in place, each reversal of the input's channel axis
    (``x[..., ::-1]``: the RGB -> BGR step of the Caffe-style preprocessing of ``keras.applications`` ResNets)
    into the convolution it leads to; then removes the nodes that no longer lead to ``output_names``.

    From the reversal (a ``StridedSlice`` with stride -1 on the last axis and the whole of every axis) the path
    may pass element-wise steps with a constant operand (``x - mean``: ``Sub``, ``Add``, ``AddV2``, ``Mul``,
    ``RealDiv``, ``BiasAdd``), whose operand gets its channels reversed, and zero padding of the other axes, to a
    float32 NHWC ``Conv2D`` with constant weights (or a read of one of the ``variables``, as in
    :func:`fold_batch_norms`), whose input channels get reversed in a new constant; each node on the path must
    be read only by the next. The reversal is then gone: ``conv(reverse(x) - m, W)`` is
    ``conv(x - reverse(m), W with its input channels reversed)``. Any other pattern is left as it is.

    Returns the number of reversals folded.
    """
    nodes, readers, consumers = _index(graph_def)
    new_nodes = []
    folded = 0
    for node in list(graph_def.node):
        if node.op != "StridedSlice" or node.attr["T"].type != _FLOAT or not _reverses_channels(node, nodes):
            continue
        path, current = [], node
        while not path or path[-1].op != "Conv2D":
            step = _only_reader(current, readers, consumers)
            if step is None or not _passes_reversal(step, nodes):
                break
            path.append(step)
            current = step
        convolution = path[-1] if path and path[-1].op == "Conv2D" else None
        weights = None if convolution is None else _constant_value(nodes, convolution.input[1], variables=variables)
        if weights is None or weights.ndim != 4:
            continue
        channels = weights.shape[2]
        operands = [_constant_value(nodes, step.input[1]) for step in path[:-1] if step.op in _PER_CHANNEL]
        if any(operand.ndim and operand.shape[-1] not in (1, channels) for operand in operands):
            continue
        for step in path[:-1]:
            operand = _constant_value(nodes, step.input[1]) if step.op in _PER_CHANNEL else None
            if operand is not None and operand.ndim and operand.shape[-1] == channels:
                name = f"{step.name}/reversed_operand"
                new_nodes.append(_constant_node(name, operand[..., ::-1]))
                step.input[1] = name
        name = f"{convolution.name}/reversed_weights"
        new_nodes.append(_constant_node(name, weights[:, :, ::-1, :]))
        convolution.input[1] = name
        path[0].input[0] = node.input[0]
        folded += 1
    graph_def.node.extend(new_nodes)
    if folded:
        _remove_unused_nodes(graph_def, output_names)
    return folded


def _reverses_channels(node, nodes):
    """Whether a ``StridedSlice`` node is ``x[..., ::-1]`` (or ``x[:, :, :, ::-1]``): the whole of every axis,
    the last one reversed."""
    specs = [_constant_value(nodes, reference, node.attr["Index"].type) for reference in node.input[1:4]]
    if any(spec is None or spec.ndim != 1 for spec in specs):
        return False
    strides = specs[2]
    count = len(strides)
    if node.attr["new_axis_mask"].i or node.attr["shrink_axis_mask"].i or count < 1 or strides[-1] != -1:
        return False
    ellipsis = node.attr["ellipsis_mask"].i
    if not ((ellipsis == 1 and count == 2) or (ellipsis == 0 and count == 4)):
        return False
    whole = [index for index in range(count) if not ellipsis >> index & 1]
    everything = all(node.attr["begin_mask"].i >> index & 1 and node.attr["end_mask"].i >> index & 1
                     for index in whole)
    return everything and all(strides[index] == 1 for index in whole[:-1])


def _passes_reversal(node, nodes):
    """Whether a channel reversal can move past ``node`` (reading it as output 0 at input 0): a float32
    element-wise step with a constant second operand, zero padding that leaves the channels alone, or the
    convolution it folds into (NHWC)."""
    if _output_index(node.input[0]) != 0 or "T" not in node.attr or node.attr["T"].type != _FLOAT:
        return False
    if "data_format" in node.attr and node.attr["data_format"].s not in (b"NHWC", b""):
        return False
    if node.op in _PER_CHANNEL:
        return len(node.input) == 2 and _constant_value(nodes, node.input[1]) is not None
    if node.op == "Pad":
        return _pads_spatially(_constant_value(nodes, node.input[1], node.attr["Tpaddings"].type))
    return node.op == "Conv2D"


def _pads_spatially(paddings):
    """Whether constant ``paddings`` of a ``Pad`` leave the last (channel) axis as it is."""
    return paddings is not None and paddings.ndim == 2 and paddings.shape[1] == 2 and not paddings[-1].any()


def _constant_node(name, value, dtype=tf.float32):
    node = tf.compat.v1.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, dtype.as_numpy_dtype), dtype))
    return node


def _remove_unused_nodes(graph_def, output_names):
    """Keeps only the nodes the outputs depend on, and the placeholders. Control inputs from constants and
    their ``Identity`` nodes go first: a frozen function orders its former variable reads that way (all of them
    before its outputs), which would keep every replaced weight alive."""
    nodes = {node.name: node for node in graph_def.node}
    for node in graph_def.node:
        inputs = [reference for reference in node.input if not (
            reference.startswith("^") and nodes.get(_producer(reference)) is not None
            and nodes[_producer(reference)].op in ("Const", "Identity"))]
        if len(inputs) != len(node.input):
            del node.input[:]
            node.input.extend(inputs)
    keep = set()
    pending = [_producer(name) for name in output_names]
    while pending:
        name = pending.pop()
        if name not in keep and name in nodes:
            keep.add(name)
            pending.extend(_producer(reference) for reference in nodes[name].input)
    keep.update(node.name for node in graph_def.node if node.op == "Placeholder")
    del nodes
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name not in keep:
            del graph_def.node[index]


def function_from_graph_def(graph_def, input_specs, output_names, captures=None):
    """A ``ConcreteFunction`` that runs ``graph_def`` from its placeholders (``input_specs``: tensor name ->
    ``tf.TensorSpec``, in the order of the function's arguments) to the list of tensors named ``output_names``;
    ``captures`` maps the names of other placeholders to the variables whose handles they stand for, or to
    tensors (the function captures them; the caller keeps the variables alive).

    The graph is imported into the function's own graph with its placeholders mapped to the arguments: one copy
    of the constants, where ``tf.compat.v1.wrap_function`` and ``prune`` hold two.
    """
    names, pending = list(input_specs), [graph_def]

    def run(*arguments):
        input_map = dict(zip(names, arguments))
        graph = tf.compat.v1.get_default_graph()  # the function's graph, which captures the variables' handles
        input_map.update({f"{name}:0": graph.capture(value.handle if isinstance(value, tf.Variable) else value)
                          for name, value in (captures or {}).items()})
        return tf.graph_util.import_graph_def(pending[0], input_map=input_map,
                                             return_elements=list(output_names), name="")

    function = tf.function(run).get_concrete_function(*input_specs.values())
    pending.clear()  # the function's graph holds the constants now; the GraphDef (their second copy) can go
    return function
