"""Where a RefineNet's CPU forward pass spends its time: a table of op types, and the convolutions' own rate.

    .venv/bin/python benchmarks/op_profile.py [--model lw_resnet50] [--size 512] [--precision float32]

It runs the model's inference graph frozen (``inference.freeze``: weights as constants, batch 1, random
weights, 21 classes) in a TensorFlow session with a full trace and prints for each op type its summed kernel
time, count and share; then it times the Keras forward pass (weights as variables) for comparison. The
convolutions' rate (profiler FLOPs of the convolutions / their summed time) bounds what the whole forward pass
can reach: the other ops only add time.
"""

import argparse
import collections
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from refinenet_tf import inference, models, profiling, training  # noqa: E402


def _profile(function, images, repeats=5):
    """Best wall time of ``function`` in a v1 session and the per-op-type kernel times of one traced run."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(function.graph.as_graph_def(), name="")
    feed = {function.inputs[0].name: images}
    fetch = function.outputs[0].name
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(fetch, feed)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(fetch, feed)
            times.append(time.perf_counter() - start)
        metadata = tf.compat.v1.RunMetadata()
        session.run(fetch, feed, options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
                    run_metadata=metadata)
    micros, counts = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op = label.split(" = ")[1].split("(")[0] if " = " in label else node.node_name
            micros[op] += node.op_end_rel_micros - node.op_start_rel_micros
            counts[op] += 1
    return min(times), micros, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lw_resnet50", choices=models.list_models())
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", choices=["float32", "mixed"], default="float32")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(training.mixed_precision_policy(args.precision == "mixed"))
    model = models.build(args.model, num_classes=21, backbone_weights=None)
    by_op = profiling.flops_by_op(model, args.size, args.size)
    flops, conv_flops = sum(by_op.values()), sum(value for op, value in by_op.items() if "Conv2D" in op)
    print(f"{args.model}, {args.size}x{args.size}, batch 1, {keras.mixed_precision.global_policy().name}; "
          f"{platform.machine()}, {os.cpu_count()} cores; {flops / 1e9:.1f} GFLOPs, of which convolutions "
          f"{conv_flops / 1e9:.1f}")
    # The frozen graph first: a Keras forward pass run before it leaves the process slower (see
    # benchmarks.measure_frozen).
    images = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3)).astype(np.float32)
    frozen = inference.freeze(model, batch_shape=images.shape)
    seconds, micros, counts = _profile(frozen.function, images)
    total = sum(micros.values())
    conv_micros = sum(value for op, value in micros.items() if "Conv2D" in op)
    print(f"frozen (constants): best {1000 * seconds:.0f} ms = {flops / seconds / 1e9:.0f} GFLOP/s; convolutions "
          f"{conv_micros / 1000:.0f} ms of kernel time = {conv_flops / conv_micros / 1e3:.0f} GFLOP/s")
    forward = tf.function(lambda batch: model(batch, training=False))
    forward(images)  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        forward(images).numpy()
        times.append(time.perf_counter() - start)
    print(f"keras forward (variables), after it: best {1000 * min(times):.0f} ms = "
          f"{flops / min(times) / 1e9:.0f} GFLOP/s\n")
    print("| op (frozen graph) | ms (summed kernel time) | count | share |")
    print("|---|---|---|---|")
    for op, value in micros.most_common(12):
        print(f"| {op} | {value / 1000:.1f} | {counts[op]} | {100 * value / total:.1f} % |")


if __name__ == "__main__":
    main()
