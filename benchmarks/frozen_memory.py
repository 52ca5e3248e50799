"""Where the frozen inference path's memory goes: VmRSS / VmHWM after each stage of freezing a preset.

Run one method per fresh process (the peak, VmHWM, only grows), from the repository root:

    python benchmarks/frozen_memory.py --model slim_resnet101 --size 512 --method baseline
    python benchmarks/frozen_memory.py --model lw_resnet50 --size 256 --method baseline --grappler lean

Stages: the preset built (random weights, random BatchNorm statistics so that folding them is not trivial), the
Keras forward pass twice, the freezing stages of the method, the first and second frozen call; then the best of
3 forward passes of the Keras model and of the frozen graph (seconds, same process) and max |frozen - keras| of
the logits with the logits' range.

Methods:
    keras     no freezing (the Keras path's own figures).
    baseline  ``convert_variables_to_constants_v2`` of a ``tf.function`` around the model (what
              ``inference.FrozenModel`` did).
    lean      the same function's GraphDef with each ``ReadVariableOp`` replaced by a ``Const`` of the variable's
              value, one variable at a time, imported back with ``function_from_graph_def``; every intermediate
              dropped as soon as it is used.
    current   ``inference.freeze`` of the working tree (whatever it does now; ``--weights-as`` passes its
              ``weights_as``, ``--light-work-share`` sets ``folding.LIGHT_WORK_SHARE``); ``--through-segment``
              calls it as ``predict`` does, inside ``segment``.
    onednn    the first measurement of what ``inference.freeze`` now does with ``weights_as="snapshots"``,
              without its fusions: the function's own graph, its variables replaced by private
              snapshots (``tf.Variable`` of each value: they share the buffers until either is assigned) and each
              ``Conv2D`` written as TensorFlow's oneDNN op with ``is_filter_const=True``, so that oneDNN keeps its
              converted filters as it does for constants (``benchmarks/variable_filters.py``); BatchNorm is not
              folded and nothing is fused by hand.

``--grappler lean`` (or ``key=value,...``, the keys of ``tf.config.optimizer.set_experimental_options``) sets
Grappler's options around the first frozen call (``--grappler-scope first``) or every frozen call (``all``) and
restores them after. ``--ab`` times the frozen graph of before (``baseline``; with ``--through-segment``, inside
a traced ``segment``) and this method's alternately in the same process, best of 5 each.
"""

import argparse
import gc
import os
import time

import numpy as np

#: Grappler passes turned off by ``--grappler lean``: those that rewrite a copy of the graph without helping a
#: frozen conv net (constant folding and the remapper, which fold and fuse, stay on).
LEAN_GRAPPLER = {"arithmetic_optimization": False, "layout_optimizer": False, "dependency_optimization": False,
                 "loop_optimization": False, "shape_optimization": False, "disable_model_pruning": True,
                 "debug_stripper": False, "function_optimization": False, "scoped_allocator_optimization": False,
                 "pin_to_host_optimization": False, "implementation_selector": False}


def memory():
    """(VmRSS, VmHWM) in MiB from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as stream:
        for line in stream:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


ROWS = []


def stage(name):
    gc.collect()
    rss, hwm = memory()
    ROWS.append((name, rss, hwm))
    print(f"{name:<28} VmRSS {rss:8.0f} MiB   VmHWM {hwm:8.0f} MiB", flush=True)


def best_of(function, images, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(function(images))
        best = min(best, time.perf_counter() - start)
    return best


def parse_grappler(text):
    """``lean`` and/or ``key=value`` items, comma-separated, as a dict of Grappler options (None for none)."""
    if text in (None, ""):
        return None
    options = {}
    for item in text.split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        if key == "lean" and not value:
            options.update(LEAN_GRAPPLER)
        elif value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
        elif value.isdigit():
            options[key] = int(value)
        else:
            raise SystemExit(f"--grappler: {item!r} is not lean, key=true|false or key=number")
    return options


def constant_function_from_graph_def(model, spec, stage):
    """The model's inference function with its variables as constants, through its GraphDef (method ``lean``)."""
    import tensorflow as tf
    from tensorflow.python.eager import wrap_function

    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    stage("traced")
    variables = {id(v.handle): v for v in model.variables}
    placeholders = {}  # internal placeholder name -> variable
    for external, internal in concrete.graph.captures:
        if id(external) in variables:
            placeholders[internal.op.name] = variables[id(external)]
    graph_def = concrete.graph.as_graph_def()
    if graph_def.library.function:
        raise ValueError("lean: the traced graph calls functions; not handled")
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs]
    del concrete
    kept = []
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name in placeholders:
            continue
        kept.append(node)
    for node in kept:
        handles = [name for name in node.input if name.split(":")[0] in placeholders]
        if not handles:
            continue
        if node.op != "ReadVariableOp":
            raise ValueError(f"lean: {node.op} {node.name} uses a variable; not handled")
        variable = placeholders[handles[0].split(":")[0]]
        value = variable.numpy()
        dtype = node.attr["dtype"].type
        node.op = "Const"
        del node.input[:]
        for key in list(node.attr):
            if key not in ("_output_shapes",):
                del node.attr[key]
        node.attr["dtype"].type = dtype
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        del value
    del graph_def.node[:]
    graph_def.node.extend(kept)
    del kept
    stage("graph_def with constants")
    function = wrap_function.function_from_graph_def(graph_def, inputs, outputs)
    del graph_def
    stage("imported (graph_def dropped)")
    return function


class grappler_options:
    """Grappler's experimental options set inside the block, the previous ones restored exactly after (the
    context keeps only the options that were set; the public setter merges, so the dict itself is restored)."""

    def __init__(self, options):
        self.options = options

    def __enter__(self):
        import tensorflow as tf
        from tensorflow.python.eager import context

        self.previous = dict(context.context()._optimizer_experimental_options)
        self.previous_public = tf.config.optimizer.get_experimental_options()
        tf.config.optimizer.set_experimental_options(self.options)

    def __exit__(self, *exc):
        import tensorflow as tf
        from tensorflow.python.eager import context

        ctx = context.context()
        ctx._optimizer_experimental_options = dict(self.previous)
        ctx._thread_local_data.function_call_options = None
        assert tf.config.optimizer.get_experimental_options() == self.previous_public


def onednn_variable_function(model, spec):
    """Method ``onednn``: the model's inference function reading private snapshots of its variables
    (``folding.snapshot_graph_def``), with each ``Conv2D`` as ``_MklNativeConv2D`` marked ``is_filter_const`` and
    nothing fused (see the module docstring)."""
    import tensorflow as tf

    from refinenet_tf import folding

    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    snapshot = folding.snapshot_graph_def(concrete, model.variables)
    if snapshot is None:
        raise SystemExit("method onednn: the traced model does more with its variables than read them")
    graph_def, inputs, outputs, snapshots, _ = snapshot
    for node in graph_def.node:
        if node.op == "Conv2D":
            node.op = "_MklNativeConv2D"
            node.attr["is_filter_const"].b = True
            node.attr["_kernel"].s = b"MklNameChangeOp"  # the label TensorFlow's oneDNN kernels register under
    function = folding.function_from_graph_def(graph_def, inputs, outputs[:1], captures=snapshots)
    function.snapshots = snapshots  # kept alive with the function (it captures their handles, not them)
    return function  # returns the list [logits]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lw_resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--method", default="baseline", choices=["keras", "baseline", "lean", "current", "onednn"])
    parser.add_argument("--grappler", default=None, help="'lean' or key=value,... set around the first call")
    parser.add_argument("--grappler-scope", default="first", choices=["first", "all"],
                        help="set --grappler around the first frozen call only, or around every frozen call")
    parser.add_argument("--ab", action="store_true",
                        help="speed only: the baseline frozen graph and this method's, timed alternately (best of 5 "
                             "each) in this process")
    parser.add_argument("--through-segment", action="store_true",
                        help="method current: call the frozen model as predict does, inside the traced segment() "
                             "(then the figures compare probabilities, not logits)")
    parser.add_argument("--weights-as", default="auto", help="method current: freeze(..., weights_as=...)")
    parser.add_argument("--light-work-share", type=float, default=None,
                        help="method current: folding.LIGHT_WORK_SHARE (0: every convolution keeps converted weights)")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after freezing and the first call")
    args = parser.parse_args()

    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf import benchmarks, folding, inference, models

    if args.light_work_share is not None:
        folding.LIGHT_WORK_SHARE = args.light_work_share

    def trim():
        if args.trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)

    stage("started")
    keras.utils.set_random_seed(0)
    model = models.build(args.model, num_classes=21, backbone_weights=None)
    benchmarks.randomize_batch_norms(model)
    weights_mib = sum(int(np.prod(w.shape)) * w.dtype.size for w in model.weights) / 2**20
    print(f"{args.model}: {model.count_params():,} parameters, {weights_mib:.0f} MiB of weights; "
          f"method {args.method}, grappler {args.grappler}")
    stage("built")
    images = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, args.size, args.size, 3)), tf.float32)
    keras_logits = model(images, training=False).numpy()
    stage("keras forward 1")
    model(images, training=False)
    stage("keras forward 2")
    keras_seconds = best_of(lambda x: model(x, training=False), images)
    if args.method == "keras":
        print(f"keras best of 3: {keras_seconds:.3f} s")
        return

    if args.through_segment and args.method != "current":
        raise SystemExit("--through-segment goes with --method current")
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    if args.method == "baseline":
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        stage("traced")
        function = convert_variables_to_constants_v2(concrete)
        del concrete
        stage("converted")
    elif args.method == "lean":
        function = constant_function_from_graph_def(model, spec, stage=stage)
        stage("converted")
    elif args.method == "onednn":
        function = onednn_variable_function(model, spec)
        stage("rewritten")
    else:
        frozen = inference.freeze(model, weights_as=args.weights_as)
        stage(f"inference.freeze ({frozen.weights_as}, {frozen.plain_weight_convolutions} of "
              f"{frozen.fused_convolutions} fused convolutions on plain weights)")
        function = frozen
        if args.through_segment:  # what predict / evaluate run: the frozen model inside the traced segment()
            function = inference._segment_function(frozen, (1.0,), False, None)
            keras_segment = inference._segment_function(model, (1.0,), False, None)
            uint8 = tf.cast(tf.round(images), tf.uint8)
            keras_logits = keras_segment(uint8).numpy()
            keras_seconds = best_of(keras_segment, uint8)
            images = uint8
    trim()
    grappler = parse_grappler(args.grappler)
    if grappler is not None:
        with grappler_options(grappler):
            frozen_logits = function(images)
    else:
        frozen_logits = function(images)
    frozen_logits = np.asarray(tf.nest.flatten(frozen_logits)[0])
    stage("frozen call 1")
    trim()
    if grappler is not None and args.grappler_scope == "all":
        call = function

        def function(x):
            with grappler_options(grappler):
                return call(x)

    function(images)
    stage("frozen call 2")
    frozen_seconds = best_of(lambda x: tf.nest.flatten(function(x))[0], images)
    if args.ab:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        reference = convert_variables_to_constants_v2(
            tf.function(lambda x: model(x, training=False)).get_concrete_function(spec))
        if args.through_segment:  # the path predict took before: segment() traced whole around that graph
            converted = reference
            reference = tf.function(lambda x: inference.segment(lambda y, training: converted(y)[0], x))
        reference(images)
        times = {"baseline": [], "method": []}
        for _ in range(5):
            times["baseline"].append(best_of(lambda x: tf.nest.flatten(reference(x))[0], images, 1))
            times["method"].append(best_of(lambda x: tf.nest.flatten(function(x))[0], images, 1))
        print(f"A/B best of 5: baseline frozen {min(times['baseline']):.3f} s, this method "
              f"{min(times['method']):.3f} s, speed x baseline {min(times['baseline']) / min(times['method']):.3f}")
    difference = float(np.max(np.abs(frozen_logits - keras_logits)))
    value_range = float(keras_logits.max() - keras_logits.min())
    print(f"best of 3: keras {keras_seconds:.3f} s, frozen {frozen_seconds:.3f} s, "
          f"frozen speed x keras {keras_seconds / frozen_seconds:.2f}")
    print(f"max |frozen - keras| {difference:.3g} (logits' range {value_range:.3g}, "
          f"ratio {difference / value_range:.2g})")
    peak_keras = next(hwm for name, _, hwm in ROWS if name == "keras forward 2")
    print(f"peak VmHWM {ROWS[-1][2]:.0f} MiB = {ROWS[-1][2] / peak_keras:.2f} x the Keras path's {peak_keras:.0f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
