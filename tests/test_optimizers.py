"""The recipes' optimizers: their fused SGD and Adam updates against Keras' own, Adam and AdamW with learning-rate
multipliers and decay against hand-written updates, schedules computed by hand, serialization with the model, the
moving average through public API only (validation and every saved file use it, for SGD, Adam and AdamW), one-line
errors, and logits as the recipes intend."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import training
from refinenet_tf.training import recipes, runs
from refinenet_tf.data import synthetic
from refinenet_tf.training import optimizers


def _adam_reference(weights, gradients, learning_rates, coupled=0.0, decoupled=0.0, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7):
    """Keras' Adam written out (its epsilon is added to sqrt(v_hat * (1 - beta_2 ** t)) as ``epsilon_hat``-free
    Adam does: ``w -= alpha * m / (sqrt(v) + eps)``, ``alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)``)."""
    w, m, v = weights.astype(np.float64), np.zeros_like(weights, np.float64), np.zeros_like(weights, np.float64)
    for t, (g, lr) in enumerate(zip(gradients, learning_rates), start=1):
        g = g + coupled * w
        w = w - lr * decoupled * w
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        w = w - lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) * m / (np.sqrt(v) + epsilon)
    return w


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_multiplies_the_learning_rate_not_the_gradient_and_decays_as_pytorch(kind):
    backbone, decoder = tf.Variable([1.0, -2.0], name="backbone_w"), tf.Variable([0.5, 3.0], name="decoder_w")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.01, 0.005])
    decay = {"coupled_weight_decay": 0.1} if kind == "adam" else {"decoupled_weight_decay": 0.1}
    cls = optimizers.AdamWithMultipliers if kind == "adam" else optimizers.AdamWWithMultipliers
    optimizer = cls(schedule, multiplied_variables=[decoder.name], multiplier=10.0, **decay)
    gradients = [np.array([0.2, -0.4]), np.array([-0.1, 0.3]), np.array([0.05, 0.05])]
    initial = {"b": backbone.numpy().copy(), "d": decoder.numpy().copy()}
    for g in gradients:
        optimizer.apply_gradients([(tf.constant(g, tf.float32), backbone), (tf.constant(g[::-1], tf.float32), decoder)])
    rates = [0.01, 0.01, 0.005]  # step 0 and 1 (<= boundary 1), then 0.005
    decays = dict(coupled=0.1) if kind == "adam" else dict(decoupled=0.1)
    np.testing.assert_allclose(backbone.numpy(), _adam_reference(initial["b"], gradients, rates, **decays),
                               rtol=1e-5)
    np.testing.assert_allclose(decoder.numpy(), _adam_reference(initial["d"], [g[::-1] for g in gradients],
                                                                [10 * r for r in rates], **decays), rtol=1e-5)
    # a multiplied gradient would have moved the decoder by about the backbone's step: Adam normalises it away
    assert np.abs(decoder.numpy() - initial["d"]).min() > 5 * np.abs(backbone.numpy() - initial["b"]).max() / 2


def test_the_multiplier_scales_sgds_step_as_its_gradient_would():
    first, second = tf.Variable([1.0, -1.0], name="first"), tf.Variable([1.0, -1.0], name="second")
    scaled = optimizers.SGDWithMultipliers(0.1, multiplied_variables=[first.name], multiplier=4.0, momentum=0.9)
    plain = keras.optimizers.SGD(0.1, momentum=0.9)
    for g in ([0.5, 0.25], [-1.0, 2.0], [0.125, 0.0]):
        scaled.apply_gradients([(tf.constant(g), first)])
        plain.apply_gradients([(4 * tf.constant(g), second)])
    np.testing.assert_allclose(first.numpy(), second.numpy(), rtol=1e-6)
    assert float(scaled.learning_rate) == pytest.approx(0.1), "the base rate reads unchanged outside the update"


@pytest.mark.parametrize("name, settings, fused_op", [
    ("sgd", {}, "ResourceApplyKerasMomentum"),
    ("sgd", {"momentum": 0.9}, "ResourceApplyKerasMomentum"),
    ("sgd", {"momentum": 0.9, "nesterov": True}, "ResourceApplyKerasMomentum"),
    ("adam", {}, "ResourceApplyAdam"),
    ("adam", {"amsgrad": True}, None),  # Keras' own update
])
def test_the_update_is_keras_own_in_one_fused_op_per_variable(name, settings, fused_op):
    # Keras' optimizer of the same settings is the oracle: the same weights after 3 dense steps and one with a
    # sparse gradient (tf.IndexedSlices, which takes Keras' update), inside a tf.function as fit runs it
    ours, theirs = {"sgd": (optimizers.SGDWithMultipliers, keras.optimizers.SGD),
                    "adam": (optimizers.AdamWithMultipliers, keras.optimizers.Adam)}[name]
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    dense = [[tf.constant(rng.normal(size=w.shape).astype(np.float32)) for w in start] for _ in range(3)]
    sparse = [tf.IndexedSlices(tf.constant(rng.normal(size=(2, 4)).astype(np.float32)), tf.constant([0, 2]),
                               tf.constant([3, 4])), dense[0][1]]

    def train(cls):
        variables = [tf.Variable(w) for w in start]
        optimizer = cls(0.05, **settings)
        step = tf.function(lambda gradients: optimizer.apply_gradients(zip(gradients, variables)))
        for gradients in dense + [sparse]:
            step(gradients)
        graph = step.get_concrete_function(dense[0]).graph
        return [v.numpy() for v in variables], [op.type for op in graph.get_operations()]

    (weights, ops), (expected, keras_ops) = train(ours), train(theirs)
    # float32 rounding: a few ulps of weights up to 3 (an ulp there: 2.4e-7); of the two Adams, the fused op is the
    # one nearer a float64 Adam (measured on one step of 1000 weights: 1.1e-7 away, Keras' 4.4e-7)
    for got, want in zip(weights, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-6)
    assert ops.count(fused_op) == (2 if fused_op else 0), ops  # one per variable
    if fused_op:
        assert len(ops) < len(keras_ops) / 1.5, (len(ops), len(keras_ops))


def test_the_step_schedule_decays_at_every_boundary_before_the_end():
    recipe = recipes.Recipe("s", "lw_resnet50", "", schedule="step", step_epochs=100, step_gamma=0.5)
    schedule = training.learning_rate_schedule(recipe, 0.4, steps_per_epoch=3, epochs=250)
    # epochs 0-99: steps 0-299 at 0.4; epochs 100-199: steps 300-599 at 0.2; epochs 200-249: steps 600-749 at 0.1
    steps = [0, 299, 300, 599, 600, 749]
    assert [float(schedule(s)) for s in steps] == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])
    assert schedule.boundaries == [299, 599]
    exact = training.learning_rate_schedule(recipe, 0.4, steps_per_epoch=3, epochs=300)  # no decay at the end
    assert exact.boundaries == [299, 599]
    assert training.learning_rate_schedule(recipe, 0.4, steps_per_epoch=3, epochs=100) == 0.4


def test_poly_and_warm_up_by_hand():
    poly = recipes.Recipe("p", "lw_resnet50", "", schedule="poly")
    schedule = training.learning_rate_schedule(poly, 0.1, steps_per_epoch=5, epochs=2)  # 10 steps
    assert [float(schedule(s)) for s in (0, 1, 5, 9)] == pytest.approx(
        [0.1 * (1 - s / 10) ** 0.9 for s in (0, 1, 5, 9)], rel=1e-6)
    warm = recipes.Recipe("w", "lw_resnet50", "", schedule="poly", warmup_epochs=0.4)  # 2 of the 10 steps
    schedule = training.learning_rate_schedule(warm, 0.1, steps_per_epoch=5, epochs=2)
    assert [float(schedule(s)) for s in (0, 1, 2, 9)] == pytest.approx(
        [0.1 * 0.5, 0.1 * 0.9 ** 0.9, 0.1 * 0.8 ** 0.9, 0.1 * 0.1 ** 0.9], rel=1e-6)
    constant = recipes.Recipe("c", "lw_resnet50", "", warmup_epochs=1)
    schedule = training.learning_rate_schedule(constant, 0.3, steps_per_epoch=3, epochs=2)
    assert [float(schedule(s)) for s in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="warmup_epochs must be 0 or more"):
        training.learning_rate_schedule(recipes.Recipe("n", "lw_resnet50", "", warmup_epochs=-1), 0.1, 1, 1)


def test_optimizer_and_schedule_serialize_with_the_model(tmp_path, tiny_backbone):
    recipe = recipes.Recipe("ser", "lw_resnet50", "", optimizer="adamw", learning_rate=1e-3,
                            decoder_lr_multiplier=10.0, decoupled_weight_decay=1e-2, schedule="step", step_epochs=2,
                            step_gamma=0.1, warmup_epochs=1, use_ema=True, ema_momentum=0.9)
    model = refinenet_tf.models.build("lw_resnet50", num_classes=3, backbone_weights=None, backbone=tiny_backbone,
                                      decoder_features=8)
    training.compile_model(model, recipe, 3, steps_per_epoch=2, epochs=5)
    model.optimizer.build(model.trainable_variables)  # now, so that fit traces its step once, not twice
    model.fit(np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 32, 32), np.int32), epochs=1, verbose=0)
    config = json.loads(json.dumps(keras.optimizers.serialize(model.optimizer)))
    restored = keras.optimizers.deserialize(config)
    assert type(restored) is optimizers.AdamWWithMultipliers
    assert (restored.multiplier, restored.decoupled_weight_decay, restored.average_weights,
            restored.average_momentum) == (10.0, 1e-2, True, 0.9)
    assert restored.multiplied_variables == model.optimizer.multiplied_variables
    assert [float(restored._learning_rate(s)) for s in (0, 1, 3, 4)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-4])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = refinenet_tf.load_model(path)
    assert type(loaded.optimizer) is optimizers.AdamWWithMultipliers
    assert loaded.optimizer.get_config() == model.optimizer.get_config()


def test_bad_settings_are_one_clear_line(tiny_backbone):
    model = refinenet_tf.models.build("lw_resnet50", num_classes=3, backbone_weights=None, backbone=tiny_backbone,
                                      decoder_features=8)
    cases = [
        (recipes.Recipe("a", "lw_resnet50", "", optimizer="adamw", weight_decay=1e-4),
         "weight_decay=0.0001 is coupled .* set decoupled_weight_decay instead"),
        (recipes.Recipe("b", "lw_resnet50", "", optimizer="sgd", decoupled_weight_decay=1e-4),
         "decoupled_weight_decay=0.0001 needs optimizer='adamw'"),
        (recipes.Recipe("c", "lw_resnet50", "", optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    ]
    for recipe, message in cases:
        with pytest.raises(ValueError, match=message):
            training.make_optimizer(recipe, model, 0.1)
    with pytest.raises(ValueError, match="use average_weights=True"):
        optimizers.SGDWithMultipliers(0.1, use_ema=True)
    with pytest.raises(ValueError, match="Keras' weight_decay= decays at the base learning rate"):
        optimizers.AdamWithMultipliers(0.1, weight_decay=0.01)
    with pytest.raises(ValueError, match="takes coupled_weight_decay"):
        optimizers.SGDWithMultipliers(0.1, decoupled_weight_decay=0.01)
    variable = tf.Variable([1.0], name="only")
    with pytest.raises(ValueError, match=r"multiplied_variables names \['missing:0'\]"):
        optimizers.SGDWithMultipliers(0.1, multiplied_variables=["missing:0"], multiplier=2.0).build([variable])


def test_averages_that_cannot_be_found_raise_instead_of_using_the_raw_weights():
    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(use_ema=True), "mse")
    with pytest.raises(ValueError, match="Keras' use_ema, whose averages are private"):
        with optimizers.averaged_weights(model):
            pass
    model.compile(optimizers.AdamWithMultipliers(average_weights=True), "mse")
    model.train_on_batch(tf.ones([1, 2]), tf.ones([1, 1]))
    inputs = keras.Input([2])
    extra = keras.Model(inputs, keras.layers.Dense(1)(model(inputs)))  # a variable the optimizer was not built for
    extra.optimizer = model.optimizer
    with pytest.raises(ValueError, match="has no moving average of"):
        optimizers.weight_averages(extra)


@pytest.fixture(scope="module")
def shapes_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthetic.write_shapes_dataset(str(root), num_train=8, num_val=4, height=40, width=40, seed=0)
    return f"voc:{root}"


class _CheckValidation(keras.callbacks.Callback):
    """After the library's callbacks: each epoch's averages, and its logged validation loss against the loss of the
    averaged and of the raw weights."""

    def __init__(self, val_data):
        super().__init__()
        self.val_data, self.averages, self.losses = val_data, {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.averages[epoch] = [a.numpy().copy() for _, a in optimizers.weight_averages(self.model)]
        assert len(self.averages[epoch]) == len(self.model.trainable_weights)
        raw = self.model.evaluate(self.val_data, verbose=0, return_dict=True)["loss"]
        with optimizers.averaged_weights(self.model):
            averaged = self.model.evaluate(self.val_data, verbose=0, return_dict=True)["loss"]
        self.losses[epoch] = (logs["val_loss"], averaged, raw)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_validation_and_every_saved_file_use_the_averages(optimizer, shapes_spec, tmp_path, tiny_backbone):
    from refinenet_tf import data

    decay = {"decoupled_weight_decay": 1e-2} if optimizer == "adamw" else {"weight_decay": 1e-4}
    recipe = recipes.Recipe(f"ema_{optimizer}", "lw_resnet50", "this test", optimizer=optimizer,
                            learning_rate=0.05 if optimizer == "sgd" else 1e-2, decoder_lr_multiplier=2.0,
                            use_ema=True, ema_momentum=0.5, freeze_batch_norm=True, **decay)
    run_dir = tmp_path / "run"
    val_data = data.make_dataset(shapes_spec, "val", batch_size=1, training=False, num_classes=4)
    check = _CheckValidation(val_data)
    config = training.TrainConfig(recipe=recipe, data=shapes_spec, val_data=shapes_spec, num_classes=4,
                                  run_dir=str(run_dir), epochs=2, steps_per_epoch=2, batch_size=4, crop_size=32,
                                  backbone_weights=None, image_every=0, verbose=0,
                                  model_kwargs={"backbone": tiny_backbone, "decoder_features": 8})
    model, _ = training.train(config, callbacks=[check])
    for epoch, (logged, averaged, raw) in check.losses.items():
        assert logged == pytest.approx(averaged, rel=1e-5), f"epoch {epoch} validated with the averages"
        assert abs(raw - averaged) > 1e-4 * abs(averaged), "the test must tell raw from averaged weights"

    def weights_of(path):
        rebuilt = runs.build_model(json.load(open(run_dir / "config.json")), backbone_weights=None)
        rebuilt.load_weights(str(path))
        training.freeze_batch_norm(rebuilt)  # as the recipe trained it: BatchNorm's weights are not trainable
        return [w.numpy() for w in rebuilt.trainable_weights]

    def same(actual, expected, what):
        assert len(actual) == len(expected), what
        for a, b in zip(actual, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-7, err_msg=what)

    last = max(check.averages)
    same(weights_of(run_dir / "last.weights.h5"), check.averages[last], "last.weights.h5")
    best = runs.read_weights_record(run_dir / "best.weights.h5")["epoch"] - 1
    same(weights_of(run_dir / "best.weights.h5"), check.averages[best], "best.weights.h5")
    saved = refinenet_tf.load_model(str(run_dir / "model.keras"), compile=False)
    training.freeze_batch_norm(saved)
    same([w.numpy() for w in saved.trainable_weights], check.averages[last], "model.keras")
    same([w.numpy() for w in model.trainable_weights], check.averages[last], "the returned model")


def test_training_recipes_drop_the_logits_relu_and_the_seed_recipe_keeps_it(tiny_backbone):
    slim = [name for name in recipes.list_recipes() if refinenet_tf.models.get(recipes.get_recipe(name).model)
            .variant == "slim"]
    assert set(slim) >= {"slim_resnet101_voc", "slim_resnet101_seed", "demo_shapes"}
    for name in slim:
        recipe = recipes.get_recipe(name)
        assert recipe.model_kwargs["logits_relu"] is (name == "slim_resnet101_seed"), name
    assert "logits included (logits_relu=True" in recipes.get_recipe("slim_resnet101_seed").source
    images = tf.random.stateless_uniform([1, 32, 32, 3], [4, 2], 0, 255)
    lowest = {}
    for name in ("demo_shapes", "slim_resnet101_seed"):
        keras.utils.set_random_seed(3)
        model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                       decoder_features=8, logits_relu=recipes.get_recipe(name).model_kwargs[
                                           "logits_relu"])
        lowest[name] = float(tf.reduce_min(model(images)))
    assert lowest["demo_shapes"] < 0 <= lowest["slim_resnet101_seed"]
