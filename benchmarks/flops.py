"""Parameters and FLOPs of the model presets next to the published figures; prints the markdown table of
docs/models.md.

    .venv/bin/python benchmarks/flops.py [MODEL ...] [--size 512x512 --size 625x468] [--num-classes 21]

Each preset is built with random weights; its FLOPs are counted by the TensorFlow profiler on the inference graph
at batch 1 (:func:`refinenet_tf.models.profiling.count_flops`: a multiply-add is 2 FLOPs, so GMACs = GFLOPs / 2).
"""

import argparse
import functools
import sys


def _size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 512x512") from None
    return height, width


def run_flops(names, sizes, num_classes=21, log=print):
    """Builds each preset in ``names`` and logs its table row: parameters, GFLOPs and GMACs at each ``(height,
    width)`` of ``sizes`` and the published figures. Returns the rows as dicts."""
    import tf_keras as keras

    from refinenet_tf import models
    from refinenet_tf.models import profiling

    presets = [models.get(name) for name in names]  # an unknown name fails here, before any build
    size_names = [f"{height}x{width}" for height, width in sizes]
    log(f"FLOPs counted by the TensorFlow profiler on the inference graph, batch 1, {num_classes} classes; "
        "GMACs = GFLOPs / 2 (a multiply-add is 2 FLOPs). Published figures: see each preset's source.")
    header = (["model", "variant", "backbone", "parameters (M)", "trainable (M)", "published (M)"]
              + [f"GFLOPs {s}" for s in size_names] + [f"GMACs {s}" for s in size_names]
              + ["published VOC12 test mIoU"])
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    rows = []
    for name, preset in zip(names, presets):
        model = preset.build(num_classes=num_classes, backbone_weights=None)
        total, trainable = profiling.count_parameters(model)
        gflops = [profiling.count_flops(model, height, width) / 1e9 for height, width in sizes]
        published = preset.published
        row = [name, preset.variant, preset.backbone, f"{total / 1e6:.2f}", f"{trainable / 1e6:.2f}",
               str(published.get("parameters_millions", "-"))]
        row += [f"{value:.1f}" for value in gflops] + [f"{value / 2:.1f}" for value in gflops]
        row += [str(published.get("voc2012_test_miou", "-"))]
        log("| " + " | ".join(row) + " |")
        rows.append(dict(zip(header, row)))
        del model
        keras.backend.clear_session()
    return rows


def main(argv=None):
    """The command line above; returns the exit status (2 with one error line for an unknown preset)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help="presets (default: all)")
    parser.add_argument("--size", type=_size, action="append", metavar="HxW",
                        help="input size, repeatable (default: 512x512 and 625x468)")
    parser.add_argument("--num-classes", type=int, default=21, help="classes (default: %(default)s)")
    args = parser.parse_args(argv)
    from refinenet_tf import models

    try:
        run_flops(args.models or models.list_models(), args.size or [(512, 512), (625, 468)], args.num_classes,
                  log=functools.partial(print, flush=True))
    except ValueError as error:
        print(f"benchmarks/flops.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
