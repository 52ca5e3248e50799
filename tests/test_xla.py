"""XLA where it pays: the train step compiles once and learns, validation never compiles per image size, generator
data never aborts.

Each case runs in a fresh process with XLA's module dump on (``XLA_FLAGS=--xla_dump_to=DIR``) and counts the
modules XLA compiled per function: one file ``module_NNNN.<function>.before_optimizations.txt`` per compile.
"""

import collections
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import training
from refinenet_tf.training import recipes

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Writes a VOC layout: 4 training scenes of 48 x 48 and 12 validation scenes of 12 sizes, then trains 3 epochs of 2
# steps with jit_compile=True through refinenet_tf.training.train (its folder pipeline, BackupAndRestore,
# checkpoints): the loss must go down and the run's config.json record the XLA step.
_VOC_RUN = """
import json, os, sys
sys.path.insert(0, {tests_dir!r})
import conftest  # registers the tiny test backbone
import numpy as np
from PIL import Image
from refinenet_tf import training
from refinenet_tf.training import recipes
from refinenet_tf.data import visualization
from refinenet_tf.data import synthetic

root = sys.argv[1]
voc = synthetic.write_shapes_dataset(root, num_train=4, num_val=0, height=48, width=48)
rng = np.random.default_rng(0)
ids = []
for index in range(12):
    height, width = 33 + 3 * index, 57 - 2 * index  # 12 distinct sizes
    image, labels = synthetic.render_scene(rng, height, width)
    ids.append(f"val_{{index:05d}}")
    Image.fromarray(image).save(os.path.join(voc, "JPEGImages", ids[-1] + ".jpg"))
    mask = Image.fromarray(labels)
    mask.putpalette(visualization.voc_palette().reshape(-1).tolist())
    mask.save(os.path.join(voc, "SegmentationClass", ids[-1] + ".png"))
with open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), "w") as stream:
    stream.write("\\n".join(ids) + "\\n")
recipe = recipes.Recipe("xla_test", "lw_mobilenetv2", "test", optimizer="adam", learning_rate=3e-3, crop_size=32,
                        batch_size=2, epochs=3)
config = training.TrainConfig(recipe, f"voc:{{voc}}", val_data=f"voc:{{voc}}", run_dir=os.path.join(root, "run"),
                              steps_per_epoch=2, backbone_weights=None, jit_compile=True, image_every=0,
                              verbose=0, model_kwargs={{"backbone": conftest.TINY_BACKBONE, "decoder_features": 8}})
model, history = training.train(config)
print("validated", len(history.history["val_loss"]), "epochs; xla train step:",
      training.xla_train_step_function(model) is not None)
print("losses", json.dumps(history.history["loss"]))
print("recorded jit_compile", json.load(open(os.path.join(root, "run", "config.json")))["jit_compile"])
"""

# Validation from a Python generator (3 sizes) beside an XLA train step; then training data from a generator.
_GENERATOR_RUN = """
import sys
sys.path.insert(0, {tests_dir!r})
import conftest
import numpy as np
import tensorflow as tf
import refinenet_tf
from refinenet_tf import training
from refinenet_tf.training import recipes

def scenes(count, sizes):
    def generate():
        rng = np.random.default_rng(0)
        for index in range(count):
            side = sizes[index % len(sizes)]
            yield rng.uniform(0, 255, (side, side, 3)).astype("float32"), rng.integers(0, 3, (side, side), "int32")
    return generate

signature = (tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, None], tf.int32))
validation = tf.data.Dataset.from_generator(scenes(6, [32, 40, 48]), output_signature=signature).batch(1)
rng = np.random.default_rng(1)
train = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"),
                                            rng.integers(0, 3, (4, 32, 32)).astype("int32"))).batch(2).repeat()
model = refinenet_tf.RefineNet(num_classes=3, backbone=conftest.TINY_BACKBONE, backbone_weights=None,
                               variant="light_weight", decoder_features=8)
recipe = recipes.Recipe("xla_test", "lw_mobilenetv2", "test", optimizer="adam", learning_rate=1e-3)
training.compile_model(model, recipe, 3, jit_compile=True)
print("file data keeps xla:", training.keep_xla_off_python_data(model, train, "x"), flush=True)
model.fit(train, steps_per_epoch=2, epochs=2, validation_data=validation, verbose=0)
print("fit with generator validation done", flush=True)
generated_train = tf.data.Dataset.from_generator(scenes(8, [32]), output_signature=signature).batch(2)
print("generator data keeps xla:", training.keep_xla_off_python_data(model, generated_train, "x"), flush=True)
model.fit(generated_train, epochs=1, validation_data=validation, verbose=0)
print("fit with generator training data done", flush=True)
"""


def _run_with_xla_dump(script, tmp_path, timeout=600):
    """Runs ``script`` in a fresh process with XLA's module dump on; returns (stdout, stderr, compiles per function)."""
    dump = tmp_path / "xla_dump"
    environment = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump}", TF_CPP_MIN_LOG_LEVEL="2",
                       CUDA_VISIBLE_DEVICES="")
    path = tmp_path / "run.py"
    path.write_text(textwrap.dedent(script.format(tests_dir=TESTS_DIR)))
    result = subprocess.run([sys.executable, str(path), str(tmp_path)], capture_output=True, text=True,
                            env=environment, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    compiles = collections.Counter()
    for name in os.listdir(dump) if dump.exists() else ():
        match = re.match(r"module_\d+\.(.+)\.before_optimizations\.txt$", name)
        if match:
            compiles[re.sub(r"_\d+(__.*)?$", "", match.group(1))] += 1  # a_inference_train_step_123__... -> name
    return result.stdout, result.stderr, compiles


def test_validation_of_12_sizes_compiles_the_train_step_once_and_the_test_step_never(tmp_path):
    stdout, _, compiles = _run_with_xla_dump(_VOC_RUN, tmp_path)
    assert "validated 3 epochs; xla train step: True" in stdout and "recorded jit_compile True" in stdout
    losses = json.loads(re.search(r"^losses (.*)$", stdout, flags=re.M).group(1))
    assert len(losses) == 3 and losses[-1] < losses[0], losses  # the XLA step learns
    train_compiles = {name: count for name, count in compiles.items() if "train_step" in name}
    assert sum(train_compiles.values()) == 1, compiles  # one crop shape: one compile, through every epoch
    assert sum(compiles.values()) - 1 <= 3, compiles  # the test step: no compile per size (at most 3 allowed)


def test_generator_data_never_aborts_and_trains_without_xla(tmp_path):
    stdout, stderr, compiles = _run_with_xla_dump(_GENERATOR_RUN, tmp_path)
    assert "file data keeps xla: True" in stdout
    assert "fit with generator validation done" in stdout
    assert "generator data keeps xla: False" in stdout and "fit with generator training data done" in stdout
    warnings = [line for line in stderr.splitlines() if "calls Python from inside tf.data" in line]
    assert len(warnings) == 1 and "x=" in warnings[0] and "PyFunc" in warnings[0]
    assert sum(compiles.values()) == 1, compiles  # the file-data train step only; no test step, no generator step


def test_python_backed_ops_finds_generators_not_the_file_pipeline(voc_tiny_dir):
    from refinenet_tf import data

    assert training.python_backed_ops(data.make_dataset(f"voc:{voc_tiny_dir}", "val", batch_size=1)) == []
    generated = tf.data.Dataset.from_generator(lambda: iter([[1.0]]), output_types=tf.float32)
    assert "PyFunc" in training.python_backed_ops(generated.map(lambda x: x * 2).batch(1))
    eager = tf.data.Dataset.range(2).map(lambda x: tf.py_function(lambda v: v, [x], tf.int64))
    assert training.python_backed_ops(eager) == ["EagerPyFunc"]
    assert training.python_backed_ops([1, 2]) == []


def _tiny_model():
    return keras.Sequential([keras.Input([None, None, 3]), keras.layers.Conv2D(3, 1)])


def test_jit_compile_with_run_eagerly_is_refused():
    recipe = recipes.Recipe("xla_test", "lw_mobilenetv2", "test")
    with pytest.raises(ValueError, match=r"jit_compile=True .* run_eagerly=True"):
        training.compile_model(_tiny_model(), recipe, 3, jit_compile=True, run_eagerly=True)
    model = training.compile_model(_tiny_model(), recipe, 3, jit_compile=False, run_eagerly=True)
    assert model.run_eagerly and training.xla_train_step_function(model) is None
    with pytest.raises(ValueError, match="jit_compile must be"):
        training.compile_model(_tiny_model(), recipe, 3, jit_compile="yes")


def test_xla_train_step_is_not_saved_and_steps_aside_after_another_compile(tmp_path):
    recipe = recipes.Recipe("xla_test", "lw_mobilenetv2", "test")
    model = training.compile_model(_tiny_model(), recipe, 3, jit_compile=True)
    assert training.xla_train_step_function(model) is not None and not model.jit_compile
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert "train_step" not in vars(loaded)
    images, masks = tf.zeros([2, 8, 8, 3]), tf.zeros([2, 8, 8], tf.int32)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # by hand: Keras' own step
    model.train_on_batch(images, masks)
    assert training.xla_train_step_function(model).experimental_get_tracing_count() == 0
    with pytest.raises(ValueError, match="compiled model"):
        training.set_xla_train_step(_tiny_model())
