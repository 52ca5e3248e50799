"""Joint segmentation and depth: the recipe, training from asymmetric annotations through ``training.train``,
run folders of multi-task models, the teacher fill, evaluation of both tasks, prediction files, the CLI."""

import dataclasses
import glob
import json
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from PIL import Image  # noqa: E402

from refinenet_tf import cli, inference, models, training  # noqa: E402
from refinenet_tf.inference import evaluation
from refinenet_tf.training import recipes, runs
from refinenet_tf.data import synthetic  # noqa: E402


def _constant_model(num_classes=5, depth=2.0, favourite=1):
    """A multi-task model of known outputs: logits favour class ``favourite`` everywhere, depth is ``depth`` m."""
    inputs = keras.Input([None, None, 3])
    segmentation = keras.layers.Conv2D(
        num_classes, 1, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(np.eye(num_classes)[favourite] * 3.0), name="segmentation")(inputs)
    depth_output = keras.layers.Conv2D(1, 1, kernel_initializer="zeros",
                                       bias_initializer=keras.initializers.Constant(depth), name="depth")(inputs)
    return keras.Model(inputs, {"segmentation": segmentation, "depth": depth_output}, name="constant_joint")


def _tiny_multitask_model(num_classes=5):
    inputs = keras.Input([None, None, 3])
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    return keras.Model(inputs, {"segmentation": keras.layers.Conv2D(num_classes, 1, name="segmentation")(features),
                                "depth": keras.layers.Conv2D(1, 1, name="depth")(features)})


@pytest.fixture(scope="module")
def rgbd_specs(tmp_path_factory):
    """6 training scenes (1 without a mask, 1 without depth) and 3 held-out ones, 32 x 40."""
    root = tmp_path_factory.mktemp("rgbd")
    return synthetic.write_rgbd_dataset(str(root), num_train=6, num_val=3, height=32, width=40, seed=3)


def _read_split(spec_root, split):
    """The held-out files read with PIL alone: masks and depths in metres (the expectations' own reader)."""
    ids = open(os.path.join(spec_root, f"{split}.txt")).read().split()
    masks = [np.array(Image.open(os.path.join(spec_root, "masks", f"{i}.png"))) for i in ids]
    depths = [np.array(Image.open(os.path.join(spec_root, "depth", f"{i}.png"))).astype(np.float64) / 1000 for i in ids]
    return masks, depths


# ---------------------------------------------------------------------------------------------- the recipe

def test_the_multitask_recipe_is_densetorchs_example():
    # DrSleep/DenseTorch examples/multitask/config.py: crop_size = 400, batch_size = 4, n_epochs = 1000,
    # lr_enc = 1e-3, lr_dec = 1e-2, mom_enc = mom_dec = 0.9, wd_enc = wd_dec = 1e-5, loss_coeffs = (0.5, 0.5);
    # train.py: MultiStepLR(..., step 100, gamma=0.1), RandomMirror + RandomCrop (no rescaling).
    recipe = recipes.get_recipe("multitask_mobilenetv2_nyud")
    assert recipe.multitask and recipe.optimizer == "sgd"
    assert (recipe.learning_rate, recipe.learning_rate * recipe.decoder_lr_multiplier) == (1e-3, pytest.approx(1e-2))
    assert (recipe.momentum, recipe.weight_decay) == (0.9, 1e-5)
    assert recipe.loss_weights == {"segmentation": 0.5, "depth": 0.5} and recipe.depth_loss == "berhu"
    assert (recipe.crop_size, recipe.batch_size, recipe.epochs) == (400, 4, 1000)
    assert (recipe.schedule, recipe.step_epochs, recipe.step_gamma) == ("step", 100, 0.1)
    assert (recipe.min_scale, recipe.max_scale) == (1.0, 1.0)
    assert "examples/multitask/config.py" in recipe.source


def test_the_step_schedule_multiplies_by_the_recipes_gamma():
    recipe = recipes.get_recipe("multitask_mobilenetv2_nyud")
    schedule = training.learning_rate_schedule(recipe, 1e-3, steps_per_epoch=2, epochs=300)
    # 100 epochs of 2 steps each: every step of epochs 100-199 (steps 200-399, counted from 0) at x0.1, then x0.01
    assert [float(schedule(step)) for step in (0, 199, 200, 399, 400, 599)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_compile_weighs_the_task_losses_and_refuses_a_mismatched_recipe():
    model = _tiny_multitask_model()
    recipe = recipes.get_recipe("multitask_mobilenetv2_nyud")
    # the tiny model has no nested backbone: give the recipe Adam so no decoder split is needed
    adam = recipes.Recipe("tiny_joint", recipe.model, "test", optimizer="adam", loss_weights={"segmentation": 0.25,
                                                                                               "depth": 0.75})
    training.compile_model(model, adam, num_classes=5)
    images = tf.random.stateless_uniform([2, 8, 8, 3], [1, 2], 0, 255)
    masks = tf.stack([tf.fill([8, 8], 255), tf.random.stateless_uniform([8, 8], [3, 4], 0, 5, tf.int32)])
    depths = tf.stack([tf.random.stateless_uniform([8, 8], [5, 6], 1, 5), tf.zeros([8, 8])])
    logs = model.evaluate(images, {"segmentation": masks, "depth": depths}, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(0.25 * logs["segmentation_loss"] + 0.75 * logs["depth_loss"], rel=1e-5)
    assert {"segmentation_mean_iou", "segmentation_pixel_accuracy", "depth_rmse", "depth_log_rmse",
            "depth_abs_rel", "depth_sq_rel", "depth_delta1", "depth_delta2", "depth_delta3"} <= set(logs)
    with pytest.raises(ValueError, match="trains segmentation only"):
        training.compile_model(_tiny_multitask_model(), "demo_shapes", num_classes=5)


def test_the_nyud_recipe_compiles_the_official_model_with_a_faster_decoder():
    model = models.build("multitask_mobilenetv2_official", num_classes=40, backbone_weights=None)
    training.compile_model(model, "multitask_mobilenetv2_nyud", num_classes=40)
    optimizer = model.optimizer
    backbone = {v.name for v in model.get_layer("mobilenetv2_lw_torch").trainable_variables}
    decoder = set(optimizer.multiplied_variables)
    assert decoder and not decoder & backbone and decoder | backbone == {v.name for v in model.trainable_variables}
    assert (optimizer.multiplier, optimizer.coupled_weight_decay, float(optimizer.momentum)) == (10.0, 1e-5, 0.9)
    assert model.compiled_loss._loss_weights == {"segmentation": 0.5, "depth": 0.5}


def test_a_checkpoint_on_two_metrics_saves_only_when_both_improve(tmp_path):
    path = str(tmp_path / "best.weights.h5")
    checkpoint = training.SafeCheckpoint(path, monitor={"val_segmentation_mean_iou": "max", "val_depth_rmse": "min"},
                                         fingerprint="run")
    checkpoint.set_model(_tiny_multitask_model())
    checkpoint.on_train_begin()
    saved = []
    for epoch, (iou, rmse) in enumerate([(0.3, 2.0), (0.4, 2.5), (0.25, 1.5), (0.5, 1.8)]):
        checkpoint.on_epoch_end(epoch, {"val_segmentation_mean_iou": iou, "val_depth_rmse": rmse})
        saved.append(runs.read_weights_record(path)["epoch"])
    assert saved == [1, 1, 1, 4]  # epoch 2: RMSE worse; epoch 3: IoU worse; epoch 4: both better than epoch 1
    record = runs.read_weights_record(path)
    assert record["best"] == {"val_segmentation_mean_iou": 0.5, "val_depth_rmse": 1.8}
    resumed = training.SafeCheckpoint(path, monitor={"val_segmentation_mean_iou": "max", "val_depth_rmse": "min"},
                                      fingerprint="run")
    resumed.on_train_begin()
    assert resumed.best == {"val_segmentation_mean_iou": 0.5, "val_depth_rmse": 1.8}


# ---------------------------------------------------------------------------------------------- evaluation

def test_evaluate_scores_both_heads_over_valid_pixels(rgbd_specs):
    root = rgbd_specs["val"].split(":")[1].rsplit("/images", 1)[0]
    masks, depths = _read_split(root, "val")
    model = _constant_model(depth=2.0, favourite=1)  # every pixel: class 1 (floor), 2 m
    result = evaluation.evaluate(model, rgbd_specs["val"], progress=False)
    # segmentation: all predictions are class 1 -> IoU(1) = floor pixels / labelled pixels, others 0 or absent
    labelled = np.concatenate([m[m != 255] for m in masks])
    counts = np.bincount(labelled, minlength=5)
    assert result.pixels == labelled.size
    assert result.pixel_accuracy == pytest.approx(counts[1] / labelled.size)
    present = counts > 0
    expected_iou = np.where(np.arange(5) == 1, counts[1] / labelled.size, 0.0)
    assert result.mean_iou == pytest.approx(expected_iou[present].mean())
    # depth: every valid pixel against 2 m, pooled over the split
    d = np.concatenate([x[x > 0] for x in depths])
    ratio = np.maximum(2.0 / d, d / 2.0)
    expected = {"rmse": np.sqrt(np.mean((2.0 - d) ** 2)), "log_rmse": np.sqrt(np.mean((np.log(2.0) - np.log(d)) ** 2)),
                "abs_rel": np.mean(np.abs(2.0 - d) / d), "sq_rel": np.mean((2.0 - d) ** 2 / d),
                "delta1": np.mean(ratio < 1.25), "delta2": np.mean(ratio < 1.25 ** 2),
                "delta3": np.mean(ratio < 1.25 ** 3)}
    assert result.depth_pixels == d.size
    for key, value in expected.items():
        assert result.depth[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    table = result.table()
    assert "| **mean** |" in table and "| RMSE (linear) |" in table and "δ < 1.25³" in table
    assert result.rmse == result.depth["rmse"] and json.loads(json.dumps(result.as_dict()))["depth_pixels"] == d.size
    with pytest.raises(ValueError, match="has no depth; evaluate a model with a depth head on an RGB-D spec"):
        evaluation.evaluate(model, "voc:" + os.path.join(os.path.dirname(__file__), "data", "voc_tiny"),
                            progress=False)


def test_predict_files_of_a_depth_head_writes_labels_colour_depth_and_millimetres(rgbd_specs, tmp_path):
    root = rgbd_specs["val"].split(":")[1]
    model = _constant_model(depth=2.0, favourite=3)
    result = inference.predict_files(model, [os.path.join(root, "val_00000.jpg")], str(tmp_path), progress=False)
    assert list(result["written"].values()) == [str(tmp_path / "val_00000.png")]
    labels = np.array(Image.open(tmp_path / "val_00000.png"))
    millimetres = Image.open(tmp_path / "val_00000_depth_mm.png")
    colour = np.array(Image.open(tmp_path / "val_00000_depth.png"))
    assert labels.shape == (32, 40) and np.all(labels == 3)
    assert millimetres.mode.startswith("I") and np.all(np.array(millimetres) == 2000)
    assert colour.shape == (32, 40, 3) and len(np.unique(colour.reshape(-1, 3), axis=0)) == 1
    assert (tmp_path / "val_00000_overlay.png").exists() and (tmp_path / "legend.png").exists()


def test_a_depth_head_on_another_engine_gives_the_keras_models_labels_and_depth(rgbd_specs, tmp_path):
    # predict_files and evaluate run every head on any engine: the exported SavedModel returns the same labels
    # and the same depth as the Keras model
    keras.utils.set_random_seed(5)
    model = _tiny_multitask_model()
    images = sorted(glob.glob(os.path.join(rgbd_specs["val"].split(":")[1], "*.jpg")))
    outputs = {}
    for engine in ("keras", "saved_model"):
        folder = tmp_path / engine
        result = inference.predict_files(model, images, str(folder), progress=False, engine=engine)
        assert len(result["written"]) == len(images)
        outputs[engine] = [(np.array(Image.open(folder / (os.path.basename(path)[:-4] + suffix))))
                           for path in images for suffix in (".png", "_depth_mm.png")]
        outputs[engine].append(evaluation.evaluate(model, rgbd_specs["val"], progress=False, engine=engine))
    for keras_output, saved_output in zip(outputs["keras"][:-1], outputs["saved_model"][:-1]):
        assert np.mean(keras_output == saved_output) >= 0.9999
    keras_scores, saved_scores = outputs["keras"][-1], outputs["saved_model"][-1]
    assert saved_scores.mean_iou == pytest.approx(keras_scores.mean_iou, abs=1e-4)
    assert saved_scores.depth["rmse"] == pytest.approx(keras_scores.depth["rmse"], rel=1e-5)
    with pytest.raises(ValueError, match=r"^engine='fast' is not one of"):
        inference.predict_files(model, images, str(tmp_path / "bad"), progress=False, engine="fast")


# ---------------------------------------------------------------------------------------------- run folders

def test_build_model_refuses_an_unknown_builder():
    with pytest.raises(ValueError, match="MultiTaskRefineNet"):
        runs.build_model({"model": {"builder": "os.system", "arguments": {}}})


# ---------------------------------------------------------------------------------------------- training.train

def _tiny_joint_recipe(tiny_backbone, name="tiny_joint_test", **overrides):
    """The demo's recipe on the tiny test backbone, registered so that the CLI can name it."""
    settings = dict(model_kwargs={"backbone": tiny_backbone}, crop_size=32, batch_size=2, epochs=1)
    settings.update(overrides)
    recipe = dataclasses.replace(recipes.get_recipe("demo_joint"), name=name, **settings)
    return recipes.register_recipe(recipe, overwrite=True)


def _head_weights(model, task):
    """The trainable weights only the ``task`` head has (its layer names say the task), by name."""
    other = "depth" if task == "segmentation" else "segmentation"
    found = {}
    for layer in model.layers:
        if task in layer.name and other not in layer.name:
            found.update({v.name: v.numpy().copy() for v in layer.trainable_weights})
    assert found, f"no {task} head layers in {[layer.name for layer in model.layers]}"
    return found


def _train(tmp_path, name, spec_train, spec_val, recipe, **kwargs):
    config = training.TrainConfig(recipe=recipe, data=spec_train, val_data=spec_val, num_classes=5,
                                  run_dir=str(tmp_path / name), backbone_weights=None, steps_per_epoch=2,
                                  image_every=1, verbose=0, **kwargs)
    return config, training.train(config)


@pytest.fixture(scope="module")
def joint_run(rgbd_specs, tmp_path_factory):
    """``(config, (model, history))`` of one tiny joint run on ``rgbd_specs`` (with validation), trained once: the
    run folder that one test inspects and another takes as a teacher."""
    recipe = _tiny_joint_recipe("tiny_test_backbone")  # the tiny_backbone fixture's backbone (tests/conftest.py)
    return _train(tmp_path_factory.mktemp("joint_run"), "run", rgbd_specs["train"], rgbd_specs["val"], recipe)


@pytest.mark.parametrize("missing", ["mask", "depth"])
def test_examples_without_a_label_leave_that_head_untouched(missing, tmp_path, tiny_backbone):
    # Every training scene lacks its mask (or depth): through training.train the segmentation (or depth) head
    # gets exactly zero gradient (Adam then moves nothing), while the other head learns.
    fractions = {"missing_mask_fraction": 1.0 if missing == "mask" else 0.0,
                 "missing_depth_fraction": 1.0 if missing == "depth" else 0.0}
    specs = synthetic.write_rgbd_dataset(str(tmp_path / "data"), num_train=4, num_val=1, height=32, width=32,
                                         seed=1, **fractions)
    recipe = _tiny_joint_recipe(tiny_backbone)
    arguments = models.get(recipe.model).arguments(num_classes=5, backbone_weights=None, **recipe.model_kwargs)
    start = runs.build_model({"model": {"builder": runs.builder_name(models.get(recipe.model)),
                                        "arguments": arguments}})
    start.save_weights(str(tmp_path / "start.weights.h5"))
    frozen_task, trained_task = ("segmentation", "depth") if missing == "mask" else ("depth", "segmentation")
    before = {task: _head_weights(start, task) for task in (frozen_task, trained_task)}
    # no validation data: what is checked is what the training steps move
    _, (model, history) = _train(tmp_path, "run", specs["train"], None, recipe,
                                 init_from=str(tmp_path / "start.weights.h5"))
    assert np.isfinite(history.history["loss"]).all()
    after = {task: _head_weights(model, task) for task in (frozen_task, trained_task)}
    for name, value in before[frozen_task].items():
        np.testing.assert_array_equal(after[frozen_task][name], value, err_msg=name)
    assert any(not np.array_equal(after[trained_task][name], value) for name, value in before[trained_task].items())


def test_a_joint_run_folder_records_and_reloads_the_multitask_model(joint_run, tmp_path, tiny_backbone):
    recipe = _tiny_joint_recipe(tiny_backbone)
    config, (model, history) = joint_run  # _train(..., rgbd_specs["train"], rgbd_specs["val"], recipe)
    assert {"val_segmentation_mean_iou", "val_depth_rmse", "segmentation_loss", "depth_loss"} <= set(history.history)
    saved = json.load(open(os.path.join(config.run_dir, "config.json")))
    assert saved["model"]["builder"] == "MultiTaskRefineNet"
    assert saved["model"]["arguments"]["backbone"] == tiny_backbone and saved["num_classes"] == 5
    best = runs.read_weights_record(os.path.join(config.run_dir, "best.weights.h5"))
    assert best["monitor"] == {"val_segmentation_mean_iou": "max", "val_depth_rmse": "min"}
    reloaded = runs.load_inference_model(config.run_dir)
    model.load_weights(os.path.join(config.run_dir, "best.weights.h5"))
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 40, 3)).astype(np.float32)
    for task in ("segmentation", "depth"):
        np.testing.assert_allclose(reloaded(image)[task].numpy(), model(image)[task].numpy(), rtol=1e-5, atol=1e-5)
    assert models.output_classes(reloaded) == 5
    with pytest.raises(ValueError, match="has no depth"):
        _train(tmp_path, "voc", "voc:" + os.path.join(os.path.dirname(__file__), "data", "voc_tiny"), None, recipe)


def test_a_teacher_fills_missing_masks_so_the_segmentation_head_learns(joint_run, tmp_path, tiny_backbone):
    specs = synthetic.write_rgbd_dataset(str(tmp_path / "data"), num_train=4, num_val=1, height=32, width=32,
                                         seed=2, missing_mask_fraction=1.0, missing_depth_fraction=0.0)
    recipe = _tiny_joint_recipe(tiny_backbone)
    teacher_config = joint_run[0]  # a finished tiny joint run (on other scenes, all labelled) as the teacher
    start = runs.load_inference_model(teacher_config.run_dir)  # any start; what matters is what moves
    start.save_weights(str(tmp_path / "start.weights.h5"))
    before = _head_weights(start, "segmentation")
    # the teacher as a run folder, then as a .keras file: without it no mask exists and this head stays still
    for name, teacher in [("from_run", teacher_config.run_dir),
                          ("from_file", os.path.join(teacher_config.run_dir, "model.keras"))]:
        # no validation data: what is checked is what the training steps move
        config, (model, _) = _train(tmp_path, name, specs["train"], None, recipe, teacher=teacher,
                                    init_from=str(tmp_path / "start.weights.h5"))
        after = _head_weights(model, "segmentation")
        assert any(not np.array_equal(after[key], value) for key, value in before.items()), name
        assert json.load(open(os.path.join(config.run_dir, "config.json")))["teacher"] == teacher
    with pytest.raises(ValueError, match="teacher= fills missing"):
        _train(tmp_path, "segmentation_only", "voc:" + os.path.join(os.path.dirname(__file__), "data", "voc_tiny"),
               None, "demo_shapes", teacher=teacher_config.run_dir)


def test_cli_trains_evaluates_and_predicts_the_joint_task(rgbd_specs, tmp_path, tiny_backbone, capsys):
    _tiny_joint_recipe(tiny_backbone)
    run_dir = str(tmp_path / "run")
    assert cli.main(["train", "--recipe", "tiny_joint_test", "--data", rgbd_specs["train"], "--val-data",
                     rgbd_specs["val"], "--run-dir", run_dir, "--backbone-weights", "none", "--steps-per-epoch", "1",
                     "--image-every", "0", "--loss-weights", "0.8", "0.2", "--depth-loss", "l1"]) == 0
    assert "val_depth_rmse" in capsys.readouterr().out
    settings = json.load(open(os.path.join(run_dir, "config.json")))["recipe_settings"]
    assert settings["loss_weights"] == {"segmentation": 0.8, "depth": 0.2} and settings["depth_loss"] == "l1"
    assert cli.main(["evaluate", "--model", run_dir, "--data", rgbd_specs["val"], "--no-progress",
                     "--output", str(tmp_path / "scores")]) == 0
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed and "| RMSE (linear) |" in printed and "| δ < 1.25³ |" in printed
    assert json.load(open(tmp_path / "scores" / "metrics.json"))["depth"]["rmse"] > 0
    images = rgbd_specs["val"].split(":")[1]
    assert cli.main(["predict", "--model", run_dir, "--output", str(tmp_path / "out"), "--no-progress",
                     os.path.join(images, "val_00001.jpg")]) == 0
    assert {"val_00001.png", "val_00001_depth.png", "val_00001_depth_mm.png"} <= set(os.listdir(tmp_path / "out"))
    assert cli.main(["predict", "--model", run_dir, "--output", str(tmp_path / "out"), "--scales", "0.5", "1",
                     "--no-progress", os.path.join(images, "val_00001.jpg")]) == 2
    assert "--scales" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the joint demo

def test_the_joint_demo_at_smoke_settings_learns_both_tasks(tmp_path, capsys):
    # refinenet-tf demo --task joint with fewer scenes and epochs (64 steps): the real model from random weights.
    # Its depth predictor starts at the training mean depth, i.e. at the constant-depth baseline, and its
    # segmentation at chance, so beating each baseline by a wide margin means each head learnt from the image:
    # measured at these settings, mean IoU 0.361 against 0.113 and RMSE 1.020 m against 2.608 m. The 64 steps
    # run as 2 epochs of 32 (the same figures as 8 epochs of 8, with fewer validations and checkpoints); 48 steps
    # do not learn enough (mean IoU 0.12, RMSE 2.69 m).
    assert cli.main(["demo", "--task", "joint", "--output", str(tmp_path), "--epochs", "2", "--steps-per-epoch",
                     "32", "--num-train", "64", "--num-val", "10"]) == 0
    printed = capsys.readouterr().out

    def figure(pattern):
        match = re.search(pattern + r" (\d+\.\d+)", printed)
        assert match, f"no '{pattern} <figure>' in:\n{printed[-2000:]}"
        return float(match.group(1))

    mean_iou, baseline_iou = figure("Held-out mean IoU"), figure("majority-class baseline mean IoU")
    rmse, baseline_rmse = figure("depth RMSE"), figure("constant-depth baseline")
    assert 0 < baseline_iou < 0.2 and baseline_rmse > 1.5  # the scenes' own figures: two large classes, 1-9 m
    assert mean_iou > 2 * baseline_iou, printed[-2000:]
    assert rmse < 0.75 * baseline_rmse, printed[-2000:]
    assert {"data", "run", "predictions.png"} <= set(os.listdir(tmp_path))
    assert json.load(open(tmp_path / "run" / "config.json"))["recipe"] == "demo_joint"


@pytest.mark.parametrize("weights", [{"segmentation": 1.0}, {"segmentation": -1.0, "depth": 1.0},
                                     {"segmentation": 0.0, "depth": 0.0}, {"segmentation": 1.0, "normals": 1.0}])
def test_loss_weights_name_both_tasks_and_are_not_negative(weights):
    recipe = dataclasses.replace(recipes.get_recipe("demo_joint"), loss_weights=weights)
    with pytest.raises(ValueError, match=r"^loss_weights="):
        training.compiling._task_losses_and_metrics(recipe, num_classes=3)
