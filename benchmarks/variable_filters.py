"""Can a frozen graph keep its weights in variables and still run at the constant-weight speed? A probe for the
frozen path's memory (docs/benchmarks.md, "Where the frozen path's memory goes").

    .venv/bin/python benchmarks/variable_filters.py [--layers 16] [--channels 512] [--size 32]

A stack of ``--layers`` 3 x 3 convolutions with ReLUs (``--channels`` in and out, random weights) on one
``--size`` x ``--size`` input, run as a ``tf.function`` three ways, each in a fresh process:

    constant  the weights as constants in the graph (what ``inference.freeze`` does): oneDNN converts each
              filter to its blocked layout once and keeps it; TensorFlow also holds the constants in the
              function's graph, its definition and its kernels
    variable  the weights read from variables (a Keras call): oneDNN converts every filter on every call
    onednn    the weights read from the same variables, the convolutions written as TensorFlow's oneDNN op
              (``_MklNativeConv2D``) with ``is_filter_const=True``: oneDNN converts each filter once and keeps
              it, and no constant copy of the weights exists

Per way: the best of 20 calls (ms), the process's peak resident memory (``VmHWM``, MiB) and the output's sum (the
three must agree). Only where TensorFlow runs its oneDNN kernels (x86 builds; not with
``TF_ENABLE_ONEDNN_OPTS=0``). ``is_filter_const=True`` promises the op that the filter never changes, so the
``onednn`` way is only right for variables nothing assigns after the first call.
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_mib():
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(way, layers, channels, size):
    """One way, in this process: ``(best ms, peak MiB, output sum)``."""
    import numpy as np
    import tensorflow as tf

    from refinenet_tf import folding

    rng = np.random.default_rng(0)
    weights = [(rng.normal(size=(3, 3, channels, channels)) / (3 * channels ** 0.5)).astype(np.float32)
               for _ in range(layers)]
    images = tf.constant(rng.normal(size=(1, size, size, channels)).astype(np.float32))
    spec = tf.TensorSpec(images.shape, tf.float32)
    if way == "constant":
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, images.shape, name="images")
            for value in weights:
                x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(value), 1, "SAME"))
            tf.identity(x, name="out")
        del weights
        function = folding.function_from_graph_def(graph.as_graph_def(), {"images:0": spec}, ["out:0"])
        del graph
        call = lambda: function(images)[0]  # noqa: E731
    else:
        variables = [tf.Variable(value) for value in weights]
        del weights

        def forward(x):
            for variable in variables:
                x = tf.nn.relu(tf.nn.conv2d(x, variable, 1, "SAME"))
            return x

        function = tf.function(forward).get_concrete_function(spec)
        if way == "onednn":
            graph_def = function.graph.as_graph_def()
            handles = {internal.op.name: external for external, internal in function.graph.captures}
            for node in graph_def.node:
                if node.op == "Conv2D":
                    node.op = "_MklNativeConv2D"
                    node.attr["is_filter_const"].b = True
                    node.attr["_kernel"].s = b"MklNameChangeOp"  # the label of TensorFlow's oneDNN kernels
            inputs = [tensor.op.name for tensor in function.inputs if tensor.op.name not in handles]

            def imported(x):
                graph = tf.compat.v1.get_default_graph()  # the handles enter this function as its captures
                mapping = {f"{name}:0": graph.capture(handle) for name, handle in handles.items()}
                mapping[f"{inputs[0]}:0"] = x
                return tf.graph_util.import_graph_def(graph_def, input_map=mapping,
                                                     return_elements=[function.outputs[0].name], name="")[0]

            function = tf.function(imported).get_concrete_function(spec)
        call = lambda: function(images)  # noqa: E731
    total = float(tf.reduce_sum(call()))
    times = []
    for _ in range(20):
        start = time.perf_counter()
        call().numpy()
        times.append(time.perf_counter() - start)
    return 1000 * min(times), peak_mib(), total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--way", choices=["constant", "variable", "onednn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(*run(args.way, args.layers, args.channels, args.size))
        return
    weights_mib = args.layers * 9 * args.channels ** 2 * 4 / 2 ** 20
    print(f"{args.layers} convolutions 3 x 3 x {args.channels} x {args.channels} ({weights_mib:.0f} MiB of weights) "
          f"on 1 x {args.size} x {args.size}; each way in a fresh process")
    print("| way | best ms | peak RSS MiB | output sum |")
    print("|---|---|---|---|")
    for way in ("constant", "variable", "onednn"):
        result = subprocess.run([sys.executable, __file__, "--way", way, "--layers", str(args.layers),
                                 "--channels", str(args.channels), "--size", str(args.size)],
                                capture_output=True, text=True, check=True)
        best, peak, total = result.stdout.split()[-3:]
        print(f"| {way} | {float(best):.1f} | {float(peak):.0f} | {float(total):.6g} |")


if __name__ == "__main__":
    main()
