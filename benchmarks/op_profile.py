"""Where a RefineNet's CPU forward pass spends its time: a table of op types, and the convolutions' own rate.

    .venv/bin/python benchmarks/op_profile.py [--model lw_resnet50] [--size 512]

It prints :func:`refinenet_tf.benchmarks.measure_op_profile`: the model's inference graph frozen
(``inference.freeze``: weights as constants, batch 1, random weights, 21 classes, float32) run in a TensorFlow
session with a full trace; for each op type its summed kernel time, count and share. The convolutions' rate
(profiler FLOPs of the convolutions / their summed time) bounds what the whole forward pass can reach: the other
ops only add time. ``refinenet-tf benchmark`` prints the same for each model that misses its target.
"""

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from refinenet_tf import benchmarks, models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lw_resnet50", choices=models.list_models())
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--top", type=int, default=12, help="op types to list")
    args = parser.parse_args()
    profile = benchmarks.measure_op_profile(args.model, args.size, top=args.top)
    matmul = benchmarks.measure_matmul()["gflops_per_second"]
    print(f"{args.model}, {args.size}x{args.size}, batch 1, float32; {platform.machine()}, {os.cpu_count()} cores; "
          f"{profile['gflops']:.1f} GFLOPs, of which convolutions {profile['conv_gflops']:.1f}; fp32 matmul "
          f"{matmul:.0f} GFLOP/s")
    print(f"frozen: best {profile['best_ms']:.0f} ms = {profile['gflops'] / profile['best_ms'] * 1000:.0f} GFLOP/s "
          f"({profile['gflops'] / profile['best_ms'] * 1000 / matmul:.2f} x the matmul); convolutions "
          f"{profile['conv_ms']:.0f} ms of kernel time = {profile['conv_gflops_per_second']:.0f} GFLOP/s "
          f"({profile['conv_gflops_per_second'] / matmul:.2f} x)\n")
    print("| op (frozen graph) | ms (summed kernel time) | count | share |")
    print("|---|---|---|---|")
    for op in profile["ops"]:
        print(f"| {op['op']} | {op['ms']:.1f} | {op['count']} | {100 * op['share']:.1f} % |")


if __name__ == "__main__":
    main()
