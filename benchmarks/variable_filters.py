"""Can a frozen graph keep its weights in variables and still run at the constant-weight speed? A probe for the
frozen path's memory (docs/benchmarks.md, "Where the frozen path's memory goes").

    .venv/bin/python benchmarks/variable_filters.py [--layers 16] [--channels 512] [--size 32]

A Keras model of ``--layers`` 3 x 3 convolutions with ReLUs (``--channels`` in and out, no bias, random
weights) on one ``--size`` x ``--size`` input, run three ways, each in a fresh process that also holds the Keras
model:

    constant  ``inference.freeze(..., weights_as="constants")``: the weights as constants in the graph; oneDNN
              converts each filter to its blocked layout once and keeps it; TensorFlow also holds the constants
              in the function's graph, its definition and its kernels
    variable  the Keras model in a ``tf.function``: oneDNN converts every filter on every call
    onednn    ``frozen_memory.py``'s method ``onednn``: private snapshots of the variables, each convolution
              written as TensorFlow's oneDNN op (``_MklNativeConv2D``) with ``is_filter_const=True``, so that
              oneDNN converts each filter once and keeps it, and no constant copy of the weights exists

Per way: the best of 20 calls (ms), the process's peak resident memory (``VmHWM``, MiB), the output's sum (the
three must agree) and how many convolutions run flagged constant. Only where TensorFlow runs its oneDNN kernels
(x86 builds; not with ``TF_ENABLE_ONEDNN_OPTS=0``). ``is_filter_const=True`` promises the op that the filter
never changes, which the snapshots keep.
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


def convolution_stack(layers, channels, seed=0):
    """The probe's network: ``layers`` 3 x 3 convolutions (no bias) with ReLUs, random weights."""
    import tf_keras as keras

    inputs = keras.Input([None, None, channels])
    x = inputs
    for index in range(layers):
        initializer = keras.initializers.RandomNormal(stddev=1 / (3 * channels ** 0.5), seed=seed + index)
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, activation="relu",
                                kernel_initializer=initializer)(x)
    return keras.Model(inputs, x)


def run(way, layers, channels, size):
    """One way, in this process: ``(best ms, peak MiB, output sum, convolutions flagged)``. Each way holds the
    Keras model too, as a process that freezes one does."""
    import numpy as np
    import tensorflow as tf

    from frozen_memory import onednn_variable_function  # the same rewrite as its method ``onednn``
    from refinenet_tf import inference

    model = convolution_stack(layers, channels)
    images = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, channels)).astype(np.float32))
    spec = tf.TensorSpec([None, None, None, channels], tf.float32)
    flagged = 0
    if way == "constant":
        function = inference.freeze(model, weights_as="constants")
    elif way == "variable":
        function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    else:
        concrete = onednn_variable_function(model, spec)
        flagged = sum(op.type == "_MklNativeConv2D" and op.get_attr("is_filter_const")
                      for op in concrete.graph.get_operations())

        def function(x):
            return concrete(x)[0]
    total = float(tf.reduce_sum(function(images)))
    times = []
    for _ in range(20):
        start = time.perf_counter()
        function(images).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * min(times), peak_mib(), total, flagged


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
    print("| way | best ms | peak RSS MiB | output sum | convolutions flagged constant |")
    print("|---|---|---|---|---|")
    for way in ("constant", "variable", "onednn"):
        result = subprocess.run([sys.executable, __file__, "--way", way, "--layers", str(args.layers),
                                 "--channels", str(args.channels), "--size", str(args.size)],
                                capture_output=True, text=True, check=True)
        best, peak, total, flagged = result.stdout.split()[-4:]
        print(f"| {way} | {float(best):.1f} | {float(peak):.0f} | {float(total):.6g} | {flagged} |")


if __name__ == "__main__":
    main()
