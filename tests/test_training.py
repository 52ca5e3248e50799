"""Training: metrics and loss with the ignore label, the recipes' optimizer, fit through the API and the CLI,
resuming, XLA and bfloat16. Plain SGD under tf.distribute (MirroredStrategy on two CPUs, two
MultiWorkerMirroredStrategy workers) is tested in tests/test_distributed.py, whose fresh processes train it beside
the recipes' runs (one TensorFlow start instead of three)."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import cli, training
from refinenet_tf.training import recipes, runs
from refinenet_tf.data import synthetic
from tests.conftest import tiny_demo_recipe, use_as_demo_shapes

#: the demo recipe on the tiny backbone (tests.conftest.tiny_demo_recipe), its decoder 32 wide rather than 16:
#: its loss starts high enough (about 5) and its training mean IoU rises clearly (0.11 to 0.25 in 12 epochs of 2
#: steps), where 16 wide starts near the uniform 1.4 and its IoU barely moves in as many steps.
TINY_DEMO = tiny_demo_recipe(32)


@pytest.fixture
def tiny_demo_shapes(monkeypatch):
    return use_as_demo_shapes(monkeypatch, TINY_DEMO)


@pytest.fixture(scope="module")
def shapes_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthetic.write_shapes_dataset(str(root), num_train=8, num_val=4, height=48, width=48, seed=0)
    return f"voc:{root}"


# --- loss and metrics with the ignore label -----------------------------------------------------------------

def test_loss_ignores_255_pixels():
    logits = tf.constant([[[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]]])  # 1 x 1 x 3 pixels x 2 classes
    labels = tf.constant([[[0, 1, 255]]])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(labels, logits)
    expected = np.mean([np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(-1.0))])  # the ignored pixel does not count
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_mean_iou_and_pixel_accuracy_hand_computed():
    truth = np.array([[0, 0, 1], [1, 1, 255], [2, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 0, 2], [2, 2, 0]])
    # Valid pixels (8): class 0: tp 1, fp 2 (pred 0 at (1,1),(2,2)), fn 1 -> 1/4; class 1: tp 2, fp 1, fn 1 -> 2/4;
    # class 2: tp 2, fp 0 (the (1,2) prediction is ignored), fn 1 -> 2/3. Accuracy 5/8.
    one_hot = tf.one_hot(predicted, 3)
    mean_iou = keras.metrics.MeanIoU(3, ignore_class=255, sparse_y_pred=False)
    mean_iou.update_state(truth, one_hot)
    np.testing.assert_allclose(float(mean_iou.result()), np.mean([1 / 4, 2 / 4, 2 / 3]), rtol=1e-6)
    accuracy = training.PixelAccuracy(ignore_class=255)
    accuracy.update_state(truth, one_hot)
    np.testing.assert_allclose(float(accuracy.result()), 5 / 8, rtol=1e-6)


# --- the recipes' optimizer ---------------------------------------------------------------------------------

def test_sgd_with_multipliers_is_a_per_variable_learning_rate_with_coupled_decay():
    backbone, decoder = tf.Variable([1.0, -2.0], name="backbone_w"), tf.Variable([0.5, 3.0], name="decoder_w")
    optimizer = training.SGDWithMultipliers(0.1, multiplied_variables=[decoder.name], multiplier=10.0,
                                            coupled_weight_decay=0.01, momentum=0.9)
    gradients = [np.array([0.2, 0.4]), np.array([-0.1, 0.3])]
    expected = {"b": backbone.numpy().copy(), "d": decoder.numpy().copy()}
    velocity = {"b": np.zeros(2), "d": np.zeros(2)}
    for _ in range(3):
        optimizer.apply_gradients(zip([tf.constant(g, tf.float32) for g in gradients], [backbone, decoder]))
        for key, g, lr in (("b", gradients[0], 0.1), ("d", gradients[1], 1.0)):
            effective = g + 0.01 * expected[key]
            velocity[key] = 0.9 * velocity[key] - lr * effective
            expected[key] = expected[key] + velocity[key]
    np.testing.assert_allclose(backbone.numpy(), expected["b"], rtol=1e-5)
    np.testing.assert_allclose(decoder.numpy(), expected["d"], rtol=1e-5)
    restored = training.SGDWithMultipliers.from_config(json.loads(json.dumps(optimizer.get_config(), default=float)))
    assert restored.multiplier == 10.0 and restored.multiplied_variables == [decoder.name]


def test_recipes_are_data_with_sources():
    assert set(recipes.list_recipes()) >= {"slim_resnet101_voc", "refinenet_resnet101_voc", "lw_resnet50_voc",
                                            "lw_resnet101_voc", "lw_resnet152_voc", "lw_mobilenetv2_voc",
                                            "demo_shapes"}
    slim = recipes.get_recipe("slim_resnet101_voc")
    assert (slim.optimizer, slim.learning_rate, slim.use_ema, slim.ema_momentum, slim.crop_size) == (
        "adam", 1e-4, True, 0.997, 512)
    paper = recipes.get_recipe("refinenet_resnet101_voc")
    assert (paper.optimizer, paper.decoder_lr_multiplier, paper.momentum) == ("sgd", 10.0, 0.9)
    for name in recipes.list_recipes():
        recipe = recipes.get_recipe(name)
        assert recipe.source and recipe.model in refinenet_tf.models.PRESETS
    with pytest.raises(ValueError, match="Unknown recipe"):
        recipes.get_recipe("nope")


def test_compile_uses_decoder_multiplier_and_ema(tiny_backbone):
    model = refinenet_tf.models.build("lw_resnet50", num_classes=3, backbone_weights=None, backbone=tiny_backbone,
                                      decoder_features=8)
    training.compile_model(model, "lw_resnet50_voc", 3)
    decoder = set(model.optimizer.multiplied_variables)
    backbone = {v.name for v in model.get_layer(tiny_backbone).trainable_variables}
    assert decoder and not decoder & backbone and model.optimizer.multiplier == 10.0
    assert all(not layer.trainable for layer in model.get_layer(tiny_backbone).layers
               if isinstance(layer, keras.layers.BatchNormalization)), "the LW recipe freezes BatchNorm"
    slim = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, decoder_features=8)
    training.freeze_batch_norm(slim)
    decoder_norms = [m for m in slim.get_layer("refine_p2").submodules
                     if isinstance(m, keras.layers.BatchNormalization)]
    assert decoder_norms and not any(m.trainable for m in decoder_norms), "BatchNorm inside the blocks is frozen"
    slim = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, decoder_features=8)
    training.compile_model(slim, "slim_resnet101_voc", 3)
    assert slim.optimizer.average_weights and slim.optimizer.average_momentum == 0.997


# --- training runs -------------------------------------------------------------------------------------------

def _config(spec, run_dir, tiny_backbone, **overrides):
    arguments = dict(recipe=TINY_DEMO, data=spec, val_data=spec, num_classes=4, run_dir=str(run_dir),
                     epochs=12, batch_size=4, crop_size=32, learning_rate=3e-3, backbone_weights=None,
                     model_kwargs={"backbone": tiny_backbone, "decoder_features": 32}, verbose=0, seed=0)
    arguments.update(overrides)
    return training.TrainConfig(**arguments)


class _RecordEMA(keras.callbacks.Callback):
    """Records, after the library's callbacks, what the model holds when validation runs, the raw weights and the
    optimizer's averages at each epoch's end, and the weights the next epoch starts training from."""

    def __init__(self):
        super().__init__()
        self.validated, self.raw, self.averages, self.started = {}, {}, {}, {}
        self.epoch = 0

    def _trainable(self):
        return [w.numpy().copy() for w in self.model.trainable_weights]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and self.epoch > 0:
            self.started[self.epoch] = self._trainable()

    def on_test_begin(self, logs=None):
        self.validated[self.epoch] = self._trainable()

    def on_epoch_end(self, epoch, logs=None):
        pairs = training.optimizers.weight_averages(self.model)
        assert len(pairs) == len(self.model.trainable_weights), "every trainable weight is averaged"
        self.raw[epoch] = self._trainable()
        self.averages[epoch] = [average.numpy().copy() for _, average in pairs]


def _assert_same(actual, expected, what):
    assert len(actual) == len(expected), what
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7, err_msg=what)


def _differ(first, second):
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second))


def test_with_use_ema_validation_and_every_saved_file_hold_the_averaged_weights(shapes_spec, tmp_path,
                                                                                 tiny_backbone):
    recipe = recipes.Recipe("ema_test", "lw_mobilenetv2", "this test", optimizer="adam", learning_rate=1e-2,
                            use_ema=True, ema_momentum=0.5, crop_size=32, batch_size=4,
                            model_kwargs={"decoder_features": 16, "batch_norm_momentum": 0.9})
    run_dir = tmp_path / "run"
    record = _RecordEMA()
    config = _config(shapes_spec, run_dir, tiny_backbone, recipe=recipe, epochs=3, steps_per_epoch=2,
                     image_every=0, model_kwargs={"backbone": tiny_backbone})
    model, _ = training.train(config, callbacks=[record])
    last = max(record.raw)
    assert _differ(record.raw[last], record.averages[last]) > 1e-3, "the test must tell raw from averaged weights"
    for epoch in record.raw:
        _assert_same(record.validated[epoch], record.averages[epoch], f"validation of epoch {epoch}")
    for epoch in record.started:  # training goes on from the raw weights, not the averages
        _assert_same(record.started[epoch], record.raw[epoch - 1], f"start of epoch {epoch}")

    def weights_of(path):
        rebuilt = runs.build_model(json.load(open(run_dir / "config.json")))
        rebuilt.load_weights(str(path))
        return [w.numpy() for w in rebuilt.trainable_weights]

    _assert_same(weights_of(run_dir / "last.weights.h5"), record.averages[last], "last.weights.h5")
    best_epoch = runs.read_weights_record(run_dir / "best.weights.h5")["epoch"] - 1
    _assert_same(weights_of(run_dir / "best.weights.h5"), record.averages[best_epoch], "best.weights.h5")
    saved = refinenet_tf.load_model(str(run_dir / "model.keras"), compile=False)
    _assert_same([w.numpy() for w in saved.trainable_weights], record.averages[last], "model.keras")
    _assert_same([w.numpy() for w in model.trainable_weights], record.averages[last], "the returned model")
    assert [r.use_ema for r in recipes.RECIPES.values()] == [r.name in ("slim_resnet101_voc", "slim_resnet101_seed")
                                                             for r in recipes.RECIPES.values()]



def test_a_tiny_model_overfits_through_the_api(shapes_spec, tmp_path, tiny_backbone):
    model, history = training.train(_config(shapes_spec, tmp_path / "run", tiny_backbone, val_data=None))
    losses, ious = history.history["loss"], history.history["mean_iou"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert ious[-1] > ious[0], ious
    files = set(os.listdir(tmp_path / "run"))
    assert {"config.json", "best.weights.h5", "last.weights.h5", "model.keras", "log.csv", "logs"} <= files
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert config["num_classes"] == 4 and config["jit_compile"] is False and config["policy"] == "float32"
    assert not runs.has_backup(str(tmp_path / "run" / "backup")), "BackupAndRestore clears it at the end"
    assert refinenet_tf.load_model(str(tmp_path / "run" / "model.keras")).output_shape[-1] == 4


class _Crash(keras.callbacks.Callback):
    """Stands in for a kill at the end of the first epoch (after BackupAndRestore saved it)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("killed")


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append((epoch, int(self.model.optimizer.iterations.numpy())))


def test_an_interrupted_run_resumes_at_epoch_2_with_its_optimizer_state(shapes_spec, tmp_path, tiny_backbone):
    config = _config(shapes_spec, tmp_path / "run", tiny_backbone, epochs=3, steps_per_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, callbacks=[_Crash()])
    assert runs.has_backup(str(tmp_path / "run" / "backup"))
    record = _Record()
    training.train(config, callbacks=[record])
    assert record.starts[0] == (1, 2), "resumed at the second epoch after the 2 steps of the first"
    with open(tmp_path / "run" / "log.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1", "2"]
    best = json.load(open(tmp_path / "run" / "best.weights.h5.json"))
    assert best["monitor"] == "val_mean_iou"


def test_an_unwritable_run_folder_fails_before_training(shapes_spec, tmp_path, tiny_backbone):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="is not a writable folder .*Nothing was trained"):
        training.train(_config(shapes_spec, blocker / "run", tiny_backbone))


def test_bfloat16_trains_and_the_loss_goes_down(shapes_spec, tmp_path, tiny_backbone):
    # (XLA: tests/test_xla.py trains with jit_compile=True and checks the same in a process of its own)
    config = _config(shapes_spec, tmp_path / "run", tiny_backbone, val_data=None, epochs=6, mixed_precision=True)
    model, history = training.train(config)
    assert history.history["loss"][-1] < history.history["loss"][0]
    resolved = json.load(open(tmp_path / "run" / "config.json"))
    assert resolved["policy"] == "mixed_bfloat16" and model.output.dtype == tf.float32


def test_cli_train_writes_a_run(shapes_spec, tmp_path, capsys, tiny_demo_shapes):
    run_dir = tmp_path / "cli_run"
    assert cli.main(["train", "--recipe", "demo_shapes", "--data", shapes_spec, "--val-data", shapes_spec,
                     "--num-classes", "4", "--run-dir", str(run_dir), "--epochs", "6", "--batch-size", "4",
                     "--crop-size", "32", "--steps-per-epoch", "2", "--backbone-weights", "none", "--no-jit",
                     "--lr", "3e-3"]) == 0
    assert "trained 6 epoch(s)" in capsys.readouterr().out
    assert os.path.exists(run_dir / "best.weights.h5") and os.path.exists(run_dir / "model.keras")
    config = json.load(open(run_dir / "config.json"))
    assert config["recipe"] == "demo_shapes" and config["epochs"] == 6 and config["learning_rate"] == 3e-3
    with open(run_dir / "log.csv") as stream:
        losses = [float(row["loss"]) for row in csv.DictReader(stream)]
    assert len(losses) == 6 and losses[-1] < losses[0], losses


def test_cli_train_bad_data_is_one_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--recipe", "demo_shapes", "--data", f"voc:{tmp_path}", "--run-dir",
                     str(tmp_path / "r"), "--backbone-weights", "none"]) == 2
    assert "no VOC 2012 folder" in capsys.readouterr().err


def test_cli_train_on_a_bad_mask_fails_with_one_line_naming_it(tmp_path, capsys, tiny_demo_shapes):
    from PIL import Image

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for stem, value in (("a", 1), ("b", 9)):  # b's mask holds class 9 of a 3-class dataset
        Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(images / f"{stem}.png")
        Image.fromarray(np.full((40, 40), value, np.uint8)).save(masks / f"{stem}.png")
    code = cli.main(["train", "--recipe", "demo_shapes", "--data", f"folder:{images}:{masks}?num_classes=3",
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "1", "--crop-size", "32",
                     "--backbone-weights", "none"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "b.png" in error and "outside [0, 3)" in error, error


def test_a_nan_loss_stops_training_and_keeps_the_last_good_weights(shapes_spec, tmp_path, tiny_backbone):
    run_dir = tmp_path / "run"

    class _Poison(keras.callbacks.Callback):
        """From the second epoch on, make every weight NaN (a diverging run)."""

        def on_train_batch_begin(self, batch, logs=None):
            if self.model.history.epoch:
                for weight in self.model.trainable_weights:
                    weight.assign(tf.fill(weight.shape, np.nan))

    config = _config(shapes_spec, run_dir, tiny_backbone, val_data=None, epochs=3, steps_per_epoch=2)
    with pytest.raises(FloatingPointError, match="NaN"):
        training.train(config, callbacks=[_Poison()])
    assert "nan" in (run_dir / "log.csv").read_text().lower()
    assert not (run_dir / "model.keras").exists()
    model = refinenet_tf.models.build("lw_mobilenetv2", num_classes=4, backbone_weights=None,
                                      backbone=tiny_backbone, decoder_features=32, batch_norm_momentum=0.9)
    model.load_weights(str(run_dir / "last.weights.h5"))  # the first epoch's, not the NaN one's
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
