"""The soak run: a serving loop over hundreds of random image sizes, one by one, must neither retrace per size
(each trace keeps a graph) nor hold on to earlier results; prints the table row of docs/reliability.md.

    .venv/bin/python benchmarks/soak.py [--model lw_mobilenetv2] [--images 300]
"""

import argparse
import time

from refinenet_tf.cli import benchmark


def run_soak(model, num_images=300, min_side=64, max_side=640, seed=0, log=print):
    """Predicts ``num_images`` random images of random sizes, one by one, in this process, and reports memory.

    A serving loop must neither retrace per image size (each trace keeps a graph) nor hold on to earlier
    results. Returns a dict: ``images``, ``sizes`` (``(height, width)`` per image), ``traces`` (of the
    prediction function), resident memory after the first image (``rss_start_mib``), after half
    (``rss_half_mib``) and at the end (``rss_end_mib``), the process's peak at those three points
    (``peak_rss_start_mib``, ``peak_rss_half_mib``, ``peak_rss_mib``) and ``seconds``.
    """
    import numpy as np

    from refinenet_tf import inference
    from refinenet_tf.inference.engines import keras_engine

    rng = np.random.default_rng(seed)
    sizes = [tuple(int(v) for v in rng.integers(min_side, max_side + 1, 2)) for _ in range(num_images)]
    report = {"images": num_images, "sizes": sizes}
    start = time.perf_counter()
    for index, (height, width) in enumerate(sizes):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        labels = inference.predict(model, image).labels
        assert labels.shape == (height, width)
        if index == 0:
            report["rss_start_mib"], report["peak_rss_start_mib"] = benchmark.rss_mib(), benchmark.rss_mib("VmHWM")
        if index == num_images // 2:
            report["rss_half_mib"], report["peak_rss_half_mib"] = benchmark.rss_mib(), benchmark.rss_mib("VmHWM")
    report["seconds"] = time.perf_counter() - start
    report["rss_end_mib"] = benchmark.rss_mib()
    report["peak_rss_mib"] = benchmark.rss_mib("VmHWM")
    report["traces"] = keras_engine._traced(model, (1.0,), False, None).experimental_get_tracing_count()
    if log:
        log(f"| {model.name} | {num_images} | {min_side}-{max_side} | {report['traces']} | "
            f"{report['rss_start_mib']:.0f} | {report['rss_half_mib']:.0f} | {report['rss_end_mib']:.0f} | "
            f"{report['peak_rss_start_mib']:.0f} | {report['peak_rss_mib']:.0f} | {report['seconds']:.0f} |")
    return report


def measure_soak(model_name="lw_mobilenetv2", num_images=300, min_side=64, max_side=640):
    """:func:`run_soak` on a preset (random weights) or a trained model, printing its table row; returns its report."""
    report = run_soak(benchmark.benchmark_model(model_name), num_images, min_side, max_side)
    report.pop("sizes")
    return dict(report, model=model_name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lw_mobilenetv2", help="a preset (random weights) or a trained model")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--min-side", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=640)
    args = parser.parse_args()
    print("| model | images | sides | traces | RSS first MiB | RSS half | RSS end | peak first | peak end | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    measure_soak(args.model, args.images, args.min_side, args.max_side)


if __name__ == "__main__":
    main()
