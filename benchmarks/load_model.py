"""Times loading a saved RefineNet: keras.models.load_model vs refinenet_tf.load_model, and prints a table.

    .venv/bin/python benchmarks/load_model.py [--backbone resnet50]
"""

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import tf_keras as keras

import refinenet_tf


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", choices=refinenet_tf.models.backbones.list_backbones())
    args = parser.parse_args()
    model = refinenet_tf.RefineNet(num_classes=21, backbone=args.backbone, backbone_weights=None)
    images = np.zeros((1, 64, 64, 3), np.uint8)
    expected = model.predict(images, verbose=0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        size_mb = os.path.getsize(path) / 2**20
        for name, loader in [("refinenet_tf.load_model", refinenet_tf.load_model),
                             ("keras.models.load_model", keras.models.load_model)]:
            keras.backend.clear_session()
            start = time.perf_counter()
            restored = loader(path)
            seconds = time.perf_counter() - start
            same = np.array_equal(restored.predict(images, verbose=0), expected)
            rows.append((name, seconds, same))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"model: {model.name}, {model.count_params():,} parameters, .keras file {size_mb:.0f} MiB")
    print(f"| loader | seconds | same outputs |\n|---|---|---|")
    for name, seconds, same in rows:
        print(f"| {name} | {seconds:.1f} | {same} |")


if __name__ == "__main__":
    main()
