"""The multi-task Light-Weight RefineNet: structure, parameter count, outputs, saving and training."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import models
from refinenet_tf.models import losses, multitask, profiling, torch_backbones

#: Trainable parameters of the official model, counted from the release's code (``src/models.py``):
#: ``sum(p.numel() for p in net(num_classes, num_tasks).parameters())``.
OFFICIAL_PARAMETERS = {(40, 2): 3_070_057, (40, 3): 3_077_228, (46, 2): 3_083_887}


def _official_parameters_by_hand(num_classes, num_tasks, width=256):
    """The same count, derived from the structure (BatchNorm: scale and offset; no conv biases but the heads')."""
    backbone = 3 * 3 * 3 * 32 + 2 * 32  # layer1: 3x3 conv + BatchNorm
    channels = 32
    for expansion, out_channels, blocks, _ in torch_backbones.MOBILENETV2_STAGES:
        for _ in range(blocks):
            hidden = channels * expansion
            backbone += channels * hidden + 2 * hidden  # 1x1 expansion + BatchNorm
            backbone += 9 * hidden + 2 * hidden  # 3x3 depthwise + BatchNorm
            backbone += hidden * out_channels + 2 * out_channels  # 1x1 projection + BatchNorm
            channels = out_channels
    projections = width * (320 + 160 + 96 + 64 + 32 + 24)  # conv8 .. conv3
    adapters = 3 * width * width  # conv_adapt4 .. conv_adapt2 (fusion_p4 .. fusion_p2, previous-level path)
    poolings = 3 * 4 * width * width + 4 * width  # crp4 .. crp2, and crp1 depthwise
    heads = [width + 9 * width * k + k for k in (num_classes, 1, 3)[:num_tasks]]  # depthwise 1x1, 3x3 + bias
    return backbone + projections + adapters + poolings + sum(heads)


def _tasks(num_tasks):
    return multitask.TASKS[:num_tasks]


def test_parameter_count_of_the_official_structure_is_derived_and_pinned():
    for (num_classes, num_tasks), expected in OFFICIAL_PARAMETERS.items():
        assert _official_parameters_by_hand(num_classes, num_tasks) == expected
    model = models.build("multitask_mobilenetv2_official", num_classes=40, backbone_weights=None)
    total, trainable = profiling.count_parameters(model)
    assert trainable == 3_070_057
    # The rest are the backbone's BatchNorm moving statistics (the decoder has no BatchNorm).
    batch_norms = [layer for layer in model.get_layer("mobilenetv2_lw_torch").layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert total - trainable == sum(2 * layer.moving_mean.shape[0] for layer in batch_norms)
    for num_classes, tasks in ((40, _tasks(3)), (46, _tasks(2))):
        other = multitask.MultiTaskRefineNet(num_classes, tasks=tasks)
        assert profiling.count_parameters(other)[1] == OFFICIAL_PARAMETERS[num_classes, len(tasks)]


def test_official_structure_layers_in_the_release_order():
    model = multitask.MultiTaskRefineNet(40)
    assert model.get_layer("preprocessing").mode == "torch"
    names = [layer.name for layer in model.layers]
    decoder = [name for name in names if name.startswith(("fusion_", "relu6_", "pooling_"))]
    assert decoder == [f"{kind}_{level}" for level in ("p5", "p4", "p3", "p2")
                       for kind in ("fusion", "relu6", "pooling")]
    # Fusion: the previous level's 1x1 (the release's conv_adapt) and the 1x1 projections of this stride's levels.
    paths = {level: [[conv.conv.kernel.shape[2] for conv in path] for path in model.get_layer(f"fusion_{level}")
                     .path_convs] for level in ("p5", "p4", "p3", "p2")}
    assert paths == {"p5": [[320, 160]], "p4": [[256], [96, 64]], "p3": [[256], [32]], "p2": [[256], [24]]}
    assert all(model.get_layer(f"fusion_{level}").interpolation == "bilinear" for level in paths)  # align_corners=False
    poolings = [model.get_layer(f"pooling_{level}") for level in paths]
    assert [(p.stages, p.chained, p.kernel_size, p.depthwise) for p in poolings] == [(4, True, 1, False)] * 3 + [
        (4, True, 1, True)]
    for task, channels in (("segmentation", 40), ("depth", 1)):
        head, predictor = model.get_layer(f"{task}_head"), model.get_layer(f"{task}_predictor")
        assert (head.depthwise, head.kernel_size, head.activation, head.conv.use_bias) == (True, 1, "relu6", False)
        assert (predictor.kernel_size, predictor.filters, predictor.conv.use_bias) == (3, channels, True)
        assert model.get_layer(f"{task}_upsample").interpolation == "bilinear"


@pytest.mark.parametrize("upsample, size", [(True, (33, 47)), (False, (9, 12))])
def test_outputs_are_a_float32_dict_at_the_input_size_or_a_quarter(tiny_backbone, upsample, size):
    model = multitask.MultiTaskRefineNet(5, tasks=("segmentation", "depth", "normals"), backbone=tiny_backbone,
                                         upsample_outputs=upsample, decoder_features=8)
    images = np.random.default_rng(0).integers(0, 256, (2, 33, 47, 3)).astype(np.uint8)
    outputs = model(images)
    assert sorted(model.output_names) == ["depth", "normals", "segmentation"]
    assert {task: (tuple(out.shape), out.dtype) for task, out in outputs.items()} == {
        "segmentation": ((2, *size, 5), tf.float32), "depth": ((2, *size, 1), tf.float32),
        "normals": ((2, *size, 3), tf.float32)}
    # Depth is |prediction| of the depth head, resized; normals have unit length.
    raw = keras.Model(model.input, model.get_layer("depth_predictor").output)(images)
    if upsample:
        raw = tf.image.resize(raw, (33, 47), method="bilinear")
    np.testing.assert_allclose(outputs["depth"], np.abs(raw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(outputs["normals"], axis=-1), 1.0, rtol=1e-5)


def test_the_same_decoder_on_a_four_level_backbone(tiny_backbone):
    model = multitask.MultiTaskRefineNet(3, backbone=tiny_backbone, decoder_features=8)
    paths = [[len(path) for path in model.get_layer(f"fusion_{level}").path_convs]
             for level in ("p5", "p4", "p3", "p2")]
    assert paths == [[1], [1, 1], [1, 1], [1, 1]]
    assert model.get_layer("pooling_p2").depthwise and not model.get_layer("pooling_p3").depthwise


def test_a_resnet_backbone_builds():
    model = multitask.MultiTaskRefineNet(4, backbone="resnet50_torch", decoder_features=16)
    outputs = model(np.zeros([1, 65, 97, 3], np.uint8))
    assert {task: tuple(out.shape) for task, out in outputs.items()} == {
        "segmentation": (1, 65, 97, 4), "depth": (1, 65, 97, 1)}
    assert [conv.conv.kernel.shape[2] for conv in model.get_layer("fusion_p5").path_convs[0]] == [2048]


def test_keras_file_round_trip_keeps_outputs_and_config(tiny_backbone, tmp_path):
    # The decoder and heads on the tiny backbone (its pooling_p2 is depthwise too, see above): what is saved and
    # restored here is the multi-task model's own layers; the release's MobileNetV2 in a .keras file is restored in
    # tests/test_convert_pytorch.py (test_multitask_cli_converts_and_refuses_the_wrong_head_size).
    model = multitask.MultiTaskRefineNet(6, tasks=multitask.TASKS, backbone=tiny_backbone, decoder_features=8)
    for weight in model.weights:  # random BatchNorm statistics and heads, so that the comparison means something
        weight.assign(np.random.default_rng(len(weight.name)).uniform(0.5, 1.5, weight.shape).astype(np.float32)
                      * (0.1 if "kernel" in weight.name else 1.0))
    images = np.random.default_rng(1).integers(0, 256, (1, 37, 41, 3)).astype(np.uint8)
    path = str(tmp_path / "multitask.keras")
    model.save(path)
    restored = refinenet_tf.load_model(path)
    expected, actual = model(images), restored(images)
    for task in multitask.TASKS:
        np.testing.assert_allclose(actual[task], expected[task], rtol=1e-5, atol=1e-5)
    assert json.dumps(restored.get_layer("pooling_p2").get_config())
    assert restored.get_layer("pooling_p2").depthwise and restored.get_layer("depth").transform == "absolute"


def test_fit_step_with_a_loss_per_task_trains_both_heads(tiny_backbone):
    model = multitask.MultiTaskRefineNet(3, backbone=tiny_backbone, decoder_features=8, batch_norm_momentum=0.9)
    model.compile(keras.optimizers.SGD(0.1),
                  loss={"segmentation": losses.SegmentationCrossEntropy(), "depth": losses.InverseHuberLoss()},
                  loss_weights={"segmentation": 0.5, "depth": 0.5})
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    targets = {"segmentation": rng.integers(0, 3, (2, 32, 32)).astype(np.int32),
               "depth": rng.uniform(0.5, 5.0, (2, 32, 32, 1)).astype(np.float32)}
    before = {task: model.get_layer(f"{task}_predictor").get_weights() for task in ("segmentation", "depth")}
    history = model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    assert {"loss", "segmentation_loss", "depth_loss"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])
    for task, weights in before.items():
        after = model.get_layer(f"{task}_predictor").get_weights()
        assert any(np.abs(a - b).max() > 0 for a, b in zip(after, weights)), task


def test_preset_builds_through_the_registry_and_records_its_arguments():
    preset = models.get("multitask_mobilenetv2_official")
    assert preset.build_function is multitask.MultiTaskRefineNet
    arguments = preset.arguments(num_classes=40, backbone_weights=None, tasks=multitask.TASKS)
    assert arguments["backbone"] == "mobilenetv2_lw_torch" and arguments["tasks"] == multitask.TASKS
    assert "variant" not in arguments
    model = models.build("multitask_mobilenetv2_official", num_classes=40, backbone_weights=None,
                         decoder_features=8)
    assert model.name == "multitask_mobilenetv2_official" and sorted(model.output_names) == ["depth", "segmentation"]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3, "tasks": ("segmentation", "height")}, "tasks="),
    ({"num_classes": 3, "tasks": ("depth", "depth")}, "tasks="),
    ({"num_classes": 3, "tasks": ()}, "tasks="),
    ({"num_classes": 3, "backbone": "vgg"}, "Unknown backbone"),
    ({"num_classes": 3, "input_shape": (32, 32, 1)}, "input_shape"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multitask.MultiTaskRefineNet(**kwargs)


def test_task_output_rejects_an_unknown_transform():
    with pytest.raises(ValueError, match="transform='log'"):
        refinenet_tf.models.layers.TaskOutput("log")


def _randomized_tiny_multitask(tiny_backbone, tasks=("segmentation", "depth")):
    model = multitask.MultiTaskRefineNet(4, tasks=tasks, backbone=tiny_backbone, decoder_features=8)
    rng = np.random.default_rng(3)
    for weight in model.trainable_weights:  # larger than the initialisers', so that depth and labels vary
        weight.assign(rng.normal(0, 0.5, weight.shape).astype(np.float32))
    return model


def test_exported_saved_model_gives_labels_and_depth_in_a_fresh_process(tiny_backbone, tmp_path, run_fresh):
    from refinenet_tf import export

    model = _randomized_tiny_multitask(tiny_backbone, multitask.TASKS)
    images = np.random.default_rng(4).integers(0, 256, (2, 37, 45, 3)).astype(np.uint8)
    path = export.export_saved_model(model, str(tmp_path / "saved_model"))
    np.save(tmp_path / "images.npy", images)
    run_fresh(f"""
        images = np.load({str(tmp_path / "images.npy")!r})
        outputs = tf.saved_model.load({path!r}).signatures["serving_default"](images=tf.constant(images))
        np.savez({str(tmp_path / "outputs.npz")!r}, **{{name: value.numpy() for name, value in outputs.items()}})
    """)
    loaded = tf.saved_model.load(path).signatures["serving_bytes"]
    encoded = [tf.io.encode_png(images[0]), tf.io.encode_png(images[1, :30, :40])]
    result = loaded(image_bytes=tf.stack(encoded))
    served = np.load(tmp_path / "outputs.npz")
    expected = model(images, training=False)
    depth = expected["depth"].numpy()[..., 0]
    assert served["depth"].shape == (2, 37, 45) and depth.max() > depth.min() > 0
    np.testing.assert_allclose(served["depth"], depth, rtol=1e-4, atol=1e-4 * depth.max())
    labels = np.argmax(expected["segmentation"].numpy(), axis=-1)
    assert len(np.unique(labels)) > 1 and np.mean(served["labels"] == labels) >= 0.999
    np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(served["normals"], expected["normals"], atol=1e-4)
    metadata = json.loads((tmp_path / "saved_model" / "refinenet_tf.json").read_text())
    assert metadata["tasks"] == ["depth", "normals", "segmentation"] and metadata["num_classes"] == 4
    # Encoded images (run above): the same outputs, padded past each image's size (depth 0 = missing).
    np.testing.assert_allclose(result["depth"][0], served["depth"][0], rtol=1e-4, atol=1e-4 * depth.max())
    assert result["depth"].shape == (2, 37, 45) and float(tf.reduce_max(result["depth"][1, 30:])) == 0.0
    assert int(tf.reduce_min(result["labels"][1, 30:])) == -1


def test_exported_tflite_gives_labels_and_depth(tiny_backbone, tmp_path):
    from refinenet_tf import export

    model = _randomized_tiny_multitask(tiny_backbone)
    images = np.random.default_rng(5).integers(0, 256, (1, 32, 48, 3)).astype(np.uint8)
    path = export.export_tflite(model, str(tmp_path / "multitask.tflite"), input_size=(32, 48))
    runner = export.tflite_interpreter(path).get_signature_runner("serving_default")
    served = runner(images=images)
    expected = model(images, training=False)
    depth = expected["depth"].numpy()[..., 0]
    np.testing.assert_allclose(served["depth"], depth, rtol=1e-4, atol=1e-4 * depth.max())
    assert np.mean(served["labels"] == np.argmax(expected["segmentation"].numpy(), -1)) >= 0.999


def test_multitask_export_refuses_test_time_augmentation(tiny_backbone, tmp_path):
    from refinenet_tf import export

    model = multitask.MultiTaskRefineNet(3, backbone=tiny_backbone, decoder_features=8)
    with pytest.raises(ValueError, match="multi-task model .*without test-time augmentation"):
        export.export_saved_model(model, str(tmp_path / "saved_model"), scales=(0.5, 1.0))
    assert not (tmp_path / "saved_model").exists()


def test_benchmark_row_counts_flops_and_times_the_forward_pass():
    from refinenet_tf.cli import benchmark as benchmarks

    row = benchmarks.measure_multitask(height=64, width=96, runs=1, warmup=0)
    assert row["trainable_parameters"] == 3_070_057 and row["published_gflops"] == 6.5
    assert row["size"] == "96x64" and row["gmacs"] == pytest.approx(row["gflops"] / 2)
    assert row["gflops"] > 0 and row["latency_ms"] > 0


def test_outputs_stay_float32_under_mixed_precision(tiny_backbone):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the conftest fixture restores float32
    model = multitask.MultiTaskRefineNet(3, tasks=multitask.TASKS, backbone=tiny_backbone, decoder_features=8)
    outputs = model(np.zeros([1, 32, 32, 3], np.uint8))
    assert model.get_layer("pooling_p2").compute_dtype == "bfloat16"
    assert {task: out.dtype for task, out in outputs.items()} == {task: tf.float32 for task in multitask.TASKS}
