"""Run folders: runs never mix (a finished run is refused, replaced only with overwrite; an interrupted one
resumes only with its own settings), the default folder is new per run, weights carry their run's
fingerprint, and a run reloads from the build arguments it recorded, whatever the recipe table says today."""

import csv
import datetime
import inspect
import json
import os
import re
import shutil

import numpy as np
import pytest
import tf_keras as keras

from refinenet_tf import cli, models, training
from refinenet_tf.models import saving
from refinenet_tf.training import recipes, runs
from refinenet_tf.data import synthetic
from tests.conftest import TINY_BACKBONE, tiny_demo_recipe, use_as_demo_shapes

#: the demo recipe on the tiny backbone (tests.conftest.tiny_demo_recipe), its decoder 16 wide
TINY_DEMO = tiny_demo_recipe(16)


@pytest.fixture
def tiny_demo_shapes(monkeypatch):
    return use_as_demo_shapes(monkeypatch, TINY_DEMO)


@pytest.fixture(scope="module")
def shapes_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthetic.write_shapes_dataset(str(root), num_train=4, num_val=2, height=48, width=48, seed=0)
    return f"voc:{root}"


def _config(spec, run_dir, tiny_backbone, **overrides):
    arguments = dict(recipe=TINY_DEMO, data=spec, val_data=spec, num_classes=4, run_dir=None if run_dir is None
                     else str(run_dir), epochs=1, steps_per_epoch=1, batch_size=2, crop_size=32,
                     learning_rate=3e-3, backbone_weights=None, image_every=0, verbose=0, seed=0,
                     model_kwargs={"backbone": tiny_backbone, "decoder_features": 16})
    arguments.update(overrides)
    return training.TrainConfig(**arguments)


@pytest.fixture(scope="module")
def finished_run(shapes_spec, tmp_path_factory):
    """A finished run of two epochs with :func:`_config`'s settings, trained once for the tests that read it or
    start from a copy of it (never changed: a test that changes a run copies it first)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    training.train(_config(shapes_spec, run_dir, TINY_BACKBONE, epochs=2))
    return run_dir


def _snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {os.path.relpath(os.path.join(top, name), folder): (os.stat(os.path.join(top, name)).st_size,
                                                               os.stat(os.path.join(top, name)).st_mtime_ns)
            for top, _, names in os.walk(folder) for name in names}


def _epochs_logged(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as stream:
        return [row["epoch"] for row in csv.DictReader(stream)]


# --- runs never mix ------------------------------------------------------------------------------------------

def test_a_finished_run_is_refused_untouched_and_replaced_only_with_overwrite(shapes_spec, finished_run, tmp_path,
                                                                              tiny_backbone, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)  # a run of 2 epochs that train() finished
    assert runs.run_state(run_dir) == "finished" and _epochs_logged(run_dir) == ["0", "1"]
    first = json.load(open(run_dir / "config.json"))["fingerprint"]
    before = _snapshot(run_dir)
    with pytest.raises(FileExistsError, match=r"run_dir='.*run' holds a finished run; pass overwrite=True to replace "
                                              r"it or choose another run_dir\. Nothing was changed\."):
        training.train(_config(shapes_spec, run_dir, tiny_backbone, learning_rate=1e-3))
    assert _snapshot(run_dir) == before, "the refused run touched the folder"
    # The command line says the same in its own flags, on one line.
    assert cli.main(["train", "--recipe", "demo_shapes", "--data", shapes_spec, "--num-classes", "4", "--run-dir",
                     str(run_dir), "--epochs", "1", "--backbone-weights", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"refinenet-tf train: error: --run-dir {str(run_dir)!r} holds a finished run; pass --overwrite to "
                     "replace it or choose another --run-dir. Nothing was changed."), error
    assert _snapshot(run_dir) == before

    # overwrite=True replaces it: one epoch logged (not appended to the old two), the new run's fingerprint on
    # the config and on both weights records.
    training.train(_config(shapes_spec, run_dir, tiny_backbone, learning_rate=1e-3, overwrite=True))
    assert _epochs_logged(run_dir) == ["0"]
    second = json.load(open(run_dir / "config.json"))["fingerprint"]
    assert second != first
    for name in ("best.weights.h5", "last.weights.h5"):
        record = runs.read_weights_record(run_dir / name)
        assert record["fingerprint"] == second and record["epoch"] == 1, (name, record)


def test_an_interrupted_run_resumes_only_with_its_own_settings(shapes_spec, tmp_path, tiny_backbone):
    class _Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("killed")

    run_dir = tmp_path / "run"
    config = _config(shapes_spec, run_dir, tiny_backbone, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, callbacks=[_Crash()])
    assert runs.run_state(run_dir) == "interrupted"
    before = _snapshot(run_dir)
    # the other recipe builds its model without demo_shapes' logits_relu=False: the model's arguments differ too
    with pytest.raises(ValueError, match=r"holds an interrupted run with other settings \(learning_rate, model, "
                                         r"recipe, recipe_settings\); give the same settings to resume it"):
        training.train(_config(shapes_spec, run_dir, tiny_backbone, epochs=2, learning_rate=1e-2,
                               recipe=recipes.Recipe("other", "slim_mobilenetv2", "", learning_rate=1e-2,
                                                     crop_size=32, model_kwargs={"decoder_features": 64,
                                                                                 "batch_norm_momentum": 0.9})))
    with pytest.raises(FileExistsError, match="holds a backup of an unfinished run; use resume=True"):
        training.train(_config(shapes_spec, run_dir, tiny_backbone, epochs=2, resume=False))
    assert _snapshot(run_dir) == before
    training.train(config)  # the same settings: it resumes and appends its second epoch to the log
    assert _epochs_logged(run_dir) == ["0", "1"] and runs.run_state(run_dir) == "finished"


def test_the_default_run_folder_is_new_per_run(shapes_spec, tmp_path, tiny_backbone, monkeypatch, capsys,
                                               tiny_demo_shapes):
    monkeypatch.chdir(tmp_path)
    config = _config(shapes_spec, None, tiny_backbone)
    assert re.fullmatch(r"checkpoints/demo_shapes-\d{8}-\d{6}", config.run_dir), config.run_dir
    training.train(config)
    assert (tmp_path / config.run_dir / "model.keras").exists()
    # A folder name that is taken gets a suffix; the command line prints the folder it chose.
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5)
    os.makedirs(os.path.join("checkpoints", "demo_shapes-20260102-030405"))
    assert runs.new_run_dir("demo_shapes", now=moment) == os.path.join("checkpoints", "demo_shapes-20260102-030405-2")
    assert cli.main(["train", "--recipe", "demo_shapes", "--data", shapes_spec, "--num-classes", "4", "--epochs", "1",
                     "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "32", "--backbone-weights",
                     "none", "--image-every", "0"]) == 0
    printed = re.search(r"trained 1 epoch\(s\) into (checkpoints/demo_shapes-\S+):", capsys.readouterr().out)
    assert printed and printed.group(1) != config.run_dir and os.path.isfile(os.path.join(printed.group(1),
                                                                                          "model.keras"))


def test_best_weights_of_another_run_are_never_compared_against_or_kept(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = str(tmp_path / "best.weights.h5")
    model.save_weights(path)
    runs.write_json_atomically(path + ".json", {"monitor": "val_mean_iou", "best": 0.99, "epoch": 7,
                                                "fingerprint": "another run"})
    checkpoint = training.SafeCheckpoint(path, monitor="val_mean_iou", mode="max", fingerprint="this run")
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    assert not os.path.exists(path) and not os.path.exists(path + ".json"), "the other run's best was kept"
    checkpoint.on_epoch_end(0, {"val_mean_iou": 0.5})  # below the other run's 0.99, and saved
    assert runs.read_weights_record(path) == {"monitor": "val_mean_iou", "best": 0.5, "epoch": 1,
                                              "fingerprint": "this run"}
    # The same run, resumed, keeps comparing to its own best.
    resumed = training.SafeCheckpoint(path, monitor="val_mean_iou", mode="max", fingerprint="this run")
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed.best == 0.5
    resumed.on_epoch_end(1, {"val_mean_iou": 0.4})
    assert runs.read_weights_record(path)["epoch"] == 1, "a worse epoch replaced the best weights"


def test_the_last_weights_copy_the_best_ones_saved_in_the_same_epoch(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best = training.SafeCheckpoint(str(tmp_path / "best.weights.h5"), monitor="val_mean_iou", mode="max")
    last = training.SafeCheckpoint(str(tmp_path / "last.weights.h5"), same_as=best)
    saves = []
    save_weights = model.save_weights
    monkeypatch.setattr(model, "save_weights", lambda path: saves.append(path) or save_weights(path))
    for checkpoint in (best, last):
        checkpoint.set_model(model)
        checkpoint.on_train_begin()
    for epoch, (iou, weight) in enumerate([(0.5, 1.0), (0.4, 2.0), (0.6, 3.0)]):
        model.set_weights([np.full((2, 1), weight, np.float32), np.zeros(1, np.float32)])
        best.on_epoch_end(epoch, {"val_mean_iou": iou})
        last.on_epoch_end(epoch, {"val_mean_iou": iou})
        # one save per epoch: the best weights when they improve (the last weights are then their copy), else the
        # last weights
        assert len(saves) == epoch + 1
        restored = keras.models.clone_model(model)
        restored.load_weights(str(tmp_path / "last.weights.h5"))
        assert restored.get_weights()[0][0, 0] == weight, "the last weights are not this epoch's"
        restored.load_weights(str(tmp_path / "best.weights.h5"))
        assert restored.get_weights()[0][0, 0] == (1.0 if epoch == 1 else weight)
    assert runs.read_weights_record(str(tmp_path / "last.weights.h5"))["epoch"] == 3
    assert runs.read_weights_record(str(tmp_path / "best.weights.h5"))["best"] == 0.6
    # The same callbacks in a second fit (initial_epoch=2): the best weights of the first fit's epoch 2 are not this
    # epoch 2's.
    for checkpoint in (best, last):
        checkpoint.on_train_begin()
    model.set_weights([np.full((2, 1), 4.0, np.float32), np.zeros(1, np.float32)])
    best.on_epoch_end(2, {"val_mean_iou": 0.1})
    last.on_epoch_end(2, {"val_mean_iou": 0.1})
    restored.load_weights(str(tmp_path / "last.weights.h5"))
    assert restored.get_weights()[0][0, 0] == 4.0 and len(saves) == 4


def test_a_run_folder_refuses_weights_another_run_wrote(shapes_spec, finished_run, tmp_path, tiny_backbone):
    training.train(_config(shapes_spec, tmp_path / "b", tiny_backbone, learning_rate=1e-3))
    for name in ("best.weights.h5", "best.weights.h5.json"):  # the weights of another run (finished_run)
        shutil.copy(finished_run / name, tmp_path / "b" / name)
    with pytest.raises(ValueError, match=r"best\.weights\.h5' were written by another run"):
        runs.load_inference_model(str(tmp_path / "b"))


# --- a run reloads as it was trained -------------------------------------------------------------------------

def test_a_run_records_its_full_build_arguments_and_reloads_from_them(shapes_spec, tmp_path, tiny_backbone,
                                                                      monkeypatch):
    mine = recipes.Recipe("my_recipe", "lw_resnet50", "a recipe of this test, never registered",
                          learning_rate=3e-3, crop_size=32, batch_size=2,
                          model_kwargs={"decoder_features": 8, "dropout": 0.0})
    run_dir = tmp_path / "run"
    model, _ = training.train(_config(shapes_spec, run_dir, tiny_backbone, recipe=mine, model_kwargs={
        "backbone": tiny_backbone}))
    config = json.load(open(run_dir / "config.json"))
    assert config["recipe"] == "my_recipe" and config["recipe_settings"]["model"] == "lw_resnet50"
    arguments = config["model"]["arguments"]
    assert config["model"]["builder"] == "RefineNet"
    assert set(arguments) == set(inspect.signature(models.RefineNet).parameters), "every build argument"
    assert (arguments["variant"], arguments["backbone"], arguments["decoder_features"], arguments["dropout"],
            arguments["num_classes"], arguments["name"]) == ("light_weight", tiny_backbone, 8, 0.0, 4, "lw_resnet50")
    # The recipe is in no table, and the table's presets may change: the run reloads as trained.
    assert "my_recipe" not in recipes.RECIPES
    monkeypatch.setitem(models.PRESETS, "lw_resnet50", models.ModelPreset("lw_resnet50", "slim", "resnet50", ""))
    reloaded = runs.load_inference_model(str(run_dir))
    images = np.random.default_rng(0).uniform(0, 255, (1, 40, 40, 3)).astype(np.float32)
    best = runs.build_model(config)
    best.load_weights(str(run_dir / "best.weights.h5"))
    np.testing.assert_array_equal(reloaded(images, training=False).numpy(), best(images, training=False).numpy())
    assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]


def test_a_run_written_before_build_arguments_were_recorded_still_loads(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    config = json.load(open(run_dir / "config.json"))
    del config["model"]  # as config.json was written before: the recorded recipe settings rebuild it
    (run_dir / "config.json").write_text(json.dumps(config))
    trained = saving.load_model(str(run_dir / "model.keras"), compile=False)  # the model as the run trained it
    assert runs.load_inference_model(str(run_dir)).count_params() == trained.count_params()


def test_user_recipes_register_by_name(shapes_spec, tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setattr(recipes, "RECIPES", dict(recipes.RECIPES))
    mine = recipes.Recipe("registered_test", "lw_mobilenetv2", "this test", learning_rate=3e-3, crop_size=32)
    assert recipes.register_recipe(mine) is mine and "registered_test" in recipes.list_recipes()
    with pytest.raises(ValueError, match="'demo_shapes' is already registered; pass overwrite=True"):
        recipes.register_recipe(recipes.Recipe("demo_shapes", "lw_resnet50", "another"))
    with pytest.raises(TypeError, match="recipe= must be a Recipe"):
        recipes.register_recipe({"name": "x"})
    config = _config(shapes_spec, tmp_path / "run", tiny_backbone, recipe="registered_test")
    training.train(config)
    assert json.load(open(tmp_path / "run" / "config.json"))["recipe_settings"]["source"] == "this test"
    with pytest.raises(ValueError, match="Unknown recipe 'nope'"):
        training.TrainConfig(recipe="nope", data=shapes_spec)
