"""Multi-task losses and metrics: hand-computed values, asymmetric annotations, serialization, teacher filling."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from refinenet_tf.models import losses, metrics  # noqa: E402
from refinenet_tf.data import fill_missing_labels  # noqa: E402
from refinenet_tf.training import PixelAccuracy  # noqa: E402


def test_inverse_huber_by_hand_over_a_batch_with_missing_pixels():
    # errors on valid pixels: 0.5, 2, 10 (example 1), 1 (example 2); max 10 -> c = 2
    depth = tf.constant([[[1.0, 2.0], [3.0, 0.0]], [[4.0, 0.0], [0.0, 0.0]]])
    prediction = tf.constant([[[1.5, 4.0], [13.0, 7.0]], [[5.0, 9.0], [9.0, 9.0]]])
    # pixel costs: 0.5, 2 (e <= c), (100 + 4) / 4 = 26, 1 -> 29.5 over 4 valid pixels
    assert float(losses.InverseHuberLoss()(depth, prediction)) == pytest.approx(29.5 / 4)
    assert float(losses.DepthL1Loss()(depth, prediction)) == pytest.approx(13.5 / 4)
    # a trailing channel on the prediction is the same
    assert float(losses.InverseHuberLoss()(depth, prediction[..., None])) == pytest.approx(29.5 / 4)
    # threshold 0.5: c = 5 -> 0.5, 2, (100 + 25) / 10 = 12.5, 1
    assert float(losses.InverseHuberLoss(threshold=0.5)(depth, prediction)) == pytest.approx(16.0 / 4)


def test_no_valid_pixel_gives_zero_loss_and_zero_gradient():
    prediction = tf.Variable(tf.ones([2, 3, 3]))
    for loss in (losses.InverseHuberLoss(), losses.DepthL1Loss()):
        with tf.GradientTape() as tape:
            value = loss(tf.zeros([2, 3, 3]), prediction)
        assert float(value) == 0.0
        assert np.all(tape.gradient(value, prediction).numpy() == 0.0)
    logits = tf.Variable(tf.random.stateless_normal([2, 3, 3, 4], [0, 1]))
    with tf.GradientTape() as tape:
        value = losses.SegmentationCrossEntropy()(tf.fill([2, 3, 3], 255), logits)
    assert float(value) == 0.0
    assert np.all(tape.gradient(value, logits).numpy() == 0.0)
    # the built-in, by contrast, returns NaN for a batch with no labelled pixel
    builtin = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    assert np.isnan(float(builtin(tf.fill([2, 3, 3], 255), logits)))


def test_segmentation_loss_is_the_builtin_mean_over_the_batch_valid_pixels():
    labels = tf.constant([[[1, 255], [0, 2]], [[255, 255], [255, 3]]])
    logits = tf.random.stateless_normal([2, 2, 2, 4], [3, 4])
    flat_labels = tf.reshape(labels, [-1])
    keep = tf.where(flat_labels != 255)[:, 0]
    expected = keras.losses.sparse_categorical_crossentropy(
        tf.gather(flat_labels, keep), tf.gather(tf.reshape(logits, [-1, 4]), keep), from_logits=True)
    builtin = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    ours = losses.SegmentationCrossEntropy()
    assert float(ours(labels, logits)) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-6)
    assert float(builtin(labels, logits)) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-6)


def _tiny_multitask_model(num_classes=3):
    inputs = keras.Input([8, 8, 3])
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    segmentation = keras.layers.Conv2D(num_classes, 1, name="segmentation")(features)
    depth = keras.layers.Conv2D(1, 1, name="depth")(features)
    return keras.Model(inputs, {"segmentation": segmentation, "depth": depth})


def test_asymmetric_batch_moves_only_the_labelled_heads():
    _fit_asymmetric_batch()


def _fit_asymmetric_batch():
    model = _tiny_multitask_model()
    images = tf.random.stateless_uniform([2, 8, 8, 3], [5, 6], 0, 255)
    masks = tf.stack([tf.fill([8, 8], 255), tf.random.stateless_uniform([8, 8], [7, 8], 0, 3, tf.int32)])
    depths = tf.stack([tf.random.stateless_uniform([8, 8], [9, 10], 1, 5), tf.zeros([8, 8])])
    # example 0 has no mask, example 1 no depth
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(images)
        tape.watch(outputs["segmentation"])
        tape.watch(outputs["depth"])
        segmentation_loss = losses.SegmentationCrossEntropy()(masks, outputs["segmentation"])
        depth_loss = losses.InverseHuberLoss()(depths, outputs["depth"])
    segmentation_grad = tape.gradient(segmentation_loss, outputs["segmentation"]).numpy()
    depth_grad = tape.gradient(depth_loss, outputs["depth"]).numpy()
    assert np.all(segmentation_grad[0] == 0.0) and np.any(segmentation_grad[1] != 0.0)
    assert np.all(depth_grad[1] == 0.0) and np.any(depth_grad[0] != 0.0)
    # and through compile: loss weights per named output, one fit step stays finite
    model.compile(keras.optimizers.SGD(0.01),
                  loss={"segmentation": losses.SegmentationCrossEntropy(), "depth": losses.InverseHuberLoss()},
                  loss_weights={"segmentation": 0.5, "depth": 0.5},
                  metrics={"segmentation": [keras.metrics.MeanIoU(3, ignore_class=255, sparse_y_pred=False,
                                                                  name="mean_iou")],
                           "depth": [metrics.DepthRMSE()]})
    logs = model.evaluate(images, {"segmentation": masks, "depth": depths}, verbose=0, return_dict=True)
    expected = 0.5 * float(segmentation_loss) + 0.5 * float(depth_loss)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    history = model.fit(images, {"segmentation": masks, "depth": depths}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    return model, images, {"segmentation": masks, "depth": depths}


def test_compiled_multitask_model_survives_save_and_load(tmp_path):
    model, images, labels = _fit_asymmetric_batch()
    before = model.evaluate(images, labels, verbose=0, return_dict=True)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded.evaluate(images, labels, verbose=0, return_dict=True)
    for key in ("loss", "segmentation_loss", "depth_loss"):  # (tf-keras renames the reloaded metrics' logs)
        assert after[key] == pytest.approx(before[key], rel=1e-6)
    assert isinstance(loaded.loss["depth"], losses.InverseHuberLoss)


def test_losses_and_metrics_serialize():
    for obj in (losses.InverseHuberLoss(threshold=0.3), losses.DepthL1Loss(), losses.SegmentationCrossEntropy(7)):
        clone = keras.losses.deserialize(keras.losses.serialize(obj))
        assert type(clone) is type(obj) and clone.get_config() == obj.get_config()
    for metric in metrics.depth_metrics():
        clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
        assert type(clone) is type(metric) and clone.get_config() == metric.get_config()
    assert losses.depth_loss("l1").name == "depth_l1"
    with pytest.raises(ValueError, match="depth_loss='l3'"):
        losses.depth_loss("l3")


def test_depth_metrics_by_hand_accumulated_over_pixels_not_batches():
    batches = [(np.array([[1.0, 2.0, 0.0, 4.0]]), np.array([[1.0, 3.0, 7.0, 2.2]])),  # 0 = missing
               (np.array([[0.0, 0.0]]), np.array([[5.0, 5.0]])),                        # nothing valid
               (np.array([[5.0]]), np.array([[5.5]]))]
    depth = np.array([1.0, 2.0, 4.0, 5.0])
    prediction = np.array([1.0, 3.0, 2.2, 5.5])
    ratio = np.maximum(prediction / depth, depth / prediction)  # 1, 1.5, 1.82, 1.1
    expected = {
        "rmse": np.sqrt(np.mean((prediction - depth) ** 2)),
        "log_rmse": np.sqrt(np.mean((np.log(prediction) - np.log(depth)) ** 2)),
        "abs_rel": np.mean(np.abs(prediction - depth) / depth),
        "sq_rel": np.mean((prediction - depth) ** 2 / depth),
        "delta1": 2 / 4, "delta2": 3 / 4, "delta3": 4 / 4,
    }
    assert ratio[2] < 1.25 ** 3 and ratio[1] < 1.25 ** 2 < ratio[2]
    for metric in metrics.depth_metrics():
        for y_true, y_pred in batches:
            metric.update_state(y_true, y_pred)
        assert float(metric.result()) == pytest.approx(expected[metric.name], rel=1e-5), metric.name
        metric.reset_state()
        assert float(metric.result()) == 0.0


def test_segmentation_metrics_skip_unlabelled_examples():
    labels = [np.array([[[0, 1], [1, 255]]]), np.full([1, 2, 2], 255), np.array([[[2, 2], [0, 1]]])]
    predicted = [np.array([[[0, 1], [0, 2]]]), np.array([[[1, 1], [1, 1]]]), np.array([[[2, 1], [0, 1]]])]
    iou = keras.metrics.MeanIoU(3, ignore_class=255, sparse_y_pred=False)
    accuracy = PixelAccuracy(ignore_class=255)
    for y, p in zip(labels, predicted):
        logits = tf.one_hot(p, 3)
        iou.update_state(y, logits)
        accuracy.update_state(y, logits)
    # labelled pixels: (0,0) (1,1) (1,0) | (2,2) (2,1) (0,0) (1,1): 5 of 7 right
    assert float(accuracy.result()) == pytest.approx(5 / 7)
    # class 0: tp 2, fp 1 (1 -> 0), fn 0 -> 2/3; class 1: tp 2, fp 1, fn 1 -> 1/2; class 2: tp 1, fn 1 -> 1/2
    assert float(iou.result()) == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)


class _ConstantTeacher(keras.Model):
    def call(self, images):
        batch = tf.shape(images)[0]
        logits = tf.one_hot(tf.fill([batch, 4, 4], 2), 3) * 10.0  # half the size: resized to the labels
        return {"segmentation": logits, "depth": tf.fill([batch, 4, 4, 1], 3.5)}


def test_teacher_fills_only_the_missing_labels(tmp_path):
    masks = np.stack([np.full([8, 8], 255), np.ones([8, 8]), np.full([8, 8], 255)]).astype(np.int32)
    masks[2, 0, 0] = 1  # partly labelled: left alone
    depths = np.stack([np.full([8, 8], 2.0), np.zeros([8, 8]), np.zeros([8, 8])]).astype(np.float32)
    depths[0, :2] = 0.0  # holes: left alone
    images = np.zeros([3, 8, 8, 3], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, {"segmentation": masks, "depth": depths})).batch(3)
    _, filled = next(iter(fill_missing_labels(dataset, _ConstantTeacher())))
    assert np.all(filled["segmentation"][0].numpy() == 2)
    np.testing.assert_array_equal(filled["segmentation"][1:].numpy(), masks[1:])
    assert np.all(filled["depth"][1:].numpy() == 3.5)
    np.testing.assert_array_equal(filled["depth"][0].numpy(), depths[0])
    # unbatched, and a teacher saved as a .keras file
    model = _tiny_multitask_model()
    path = str(tmp_path / "teacher.keras")
    model.save(path)
    unbatched = tf.data.Dataset.from_tensor_slices((images, {"segmentation": masks, "depth": depths}))
    _, filled = next(iter(fill_missing_labels(unbatched, path)))
    expected = model(images[:1])
    np.testing.assert_array_equal(filled["segmentation"].numpy(),
                                  tf.argmax(expected["segmentation"][0], -1).numpy())
    np.testing.assert_array_equal(filled["depth"].numpy()[2:], depths[0, 2:])
