"""TF-slim-layout ResNets: TF-slim's resnet_v1 layer for layer, tapped where the reference code taps it, and
TF-slim ImageNet checkpoints in through ``backbone_weights=``.

The oracle is tf-slim's own ``resnet_v1`` (tests/slim_reference.py, run in a TF1 process of its own).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import cli, models
from refinenet_tf.models import backbones, layers, slim_backbones
from refinenet_tf.convert import ConversionError
from tests import slim_reference


def _unit_parameters(depth_in, base, first):
    """A bottleneck unit: 1x1 depth_in->base, 3x3 base->base, 1x1 base->4 base (no biases), a BatchNorm of 4
    weights per channel after each; the first unit of a block also a 1x1 shortcut depth_in->4 base + BatchNorm."""
    count = depth_in * base + 9 * base * base + base * 4 * base + 4 * (base + base + 4 * base)
    if first:
        count += depth_in * 4 * base + 4 * 4 * base
    return count


def _resnet_v1_parameters(units_per_block):
    count = 7 * 7 * 3 * 64 + 4 * 64  # conv1 + BatchNorm
    depth = 64  # pool1's output
    for block, units in enumerate(units_per_block):
        base = 64 * 2 ** block
        for unit in range(units):
            count += _unit_parameters(depth if unit == 0 else 4 * base, base, first=unit == 0)
        depth = 4 * base
    return count


def test_seed_resnet_v1_101_parameter_count_is_pinned():
    model = models.build("seed_resnet_v1_101", num_classes=21, backbone_weights=None)
    # TF-slim resnet_v1_101 without logits (blocks of 3, 4, 23, 3 units; see _resnet_v1_parameters):  42,605,504
    backbone = _resnet_v1_parameters((3, 4, 23, 3))
    assert backbone == model.get_layer("resnet_v1_101").count_params() == 42_605_504
    # four 1x1 reductions to 256 of pool5, pool4, pool3, pool2 (2048, 512, 256 and 64 channels), no bias, each
    # with a BatchNorm of 4 x 256:  (2048 + 512 + 256 + 64) * 256 + 4 * 1024                         =    741,376
    reductions = (2048 + 512 + 256 + 64) * 256 + 4 * 4 * 256
    # one decoder conv C = 3x3 256->256 without bias + BatchNorm = 9*256*256 + 4*256                 =    590,848
    # top RefineBlock 10 C (2 RCUs, fusion 2, pooling 2, output RCU 2); three more of 16 C each      = 58 C
    convs = 58 * (9 * 256 * 256 + 4 * 256)
    # classifier: 1x1 256->21 with bias (slim's normalizer_fn=None)                                    =      5,397
    classifier = 256 * 21 + 21
    assert reductions == 741_376 and convs == 34_269_184
    assert model.count_params() == backbone + reductions + convs + classifier == 77_621_461
    assert _resnet_v1_parameters((3, 4, 6, 3)) == 23_561_152
    assert _resnet_v1_parameters((3, 8, 36, 3)) == 58_295_232


@pytest.mark.parametrize("name", ["resnet_v1_50", "resnet_v1_101", "resnet_v1_152"])
def test_registered_with_the_reference_taps_and_preprocessing(name):
    spec = backbones.get_backbone_spec(name)
    units = slim_backbones.BLOCKS[name]
    assert spec.taps == {"P2": "pool1", "P3": f"block1_unit{units[0]}_out", "P4": f"block2_unit{units[1]}_out",
                         "P5": f"block4_unit{units[3]}_out"}
    assert spec.preprocessing == "rgb_mean" and spec.slim_layout
    assert models.get(f"seed_{name}").backbone == name


def test_strides_channels_and_the_arg_scope():
    backbone = backbones.build_backbone("resnet_v1_50", weight_decay=1e-5, batch_norm_momentum=0.997)
    outputs = backbone(tf.zeros([1, 64, 96, 3]))
    assert [tuple(o.shape) for o in outputs] == [(1, 16, 24, 64), (1, 8, 12, 256), (1, 4, 6, 512), (1, 2, 3, 2048)]
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == len(norms) == len(backbone.losses) == 53  # 1 + 16 units x 3 + 4 shortcuts
    assert not any(conv.use_bias for conv in convs)
    assert all((n.momentum, n.epsilon, n.scale, n.center) == (0.997, 1e-5, True, True) for n in norms)
    kernel = convs[0].kernel.numpy().astype(np.float64)
    np.testing.assert_allclose(float(backbone.losses[0]), 1e-5 * np.sum(kernel ** 2) / 2, rtol=1e-5)
    # the stride sits on the 3x3 conv of a block's last unit, after conv2d_same's explicit padding (1 before, 1 after)
    assert backbone.get_layer("block1_unit3_conv2").strides == (2, 2)
    assert backbone.get_layer("block1_unit3_conv2_pad").padding == ((1, 1), (1, 1))
    assert backbone.get_layer("block1_unit1_conv2").strides == (1, 1)
    assert backbone.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    # where the depth does not change the shortcut subsamples with a 1x1 max pool
    assert isinstance(backbone.get_layer("block1_unit3_shortcut"), keras.layers.MaxPooling2D)
    assert backbone.get_layer("pool1").padding == "same"


def test_rgb_mean_preprocessing_is_mean_image_subtraction():
    images = np.array([[[[0, 0, 0], [255, 128, 7]]]], np.float32)
    expected = images - np.array([123.68, 116.78, 103.94], np.float32)
    np.testing.assert_array_equal(layers.ImagePreprocessing("rgb_mean")(images).numpy(), expected)


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory):
    """A TF-slim-style ImageNet checkpoint of resnet_v1_50 (random weights, V1 format) written by tf-slim's graph, and
    that graph's pool2..pool5 on a 65x97 image: an odd size, where conv2d_same and SAME pooling matter."""
    folder = tmp_path_factory.mktemp("imagenet")
    image = np.random.default_rng(5).uniform(0, 255, (65, 97, 3)).astype(np.float32)
    stored = slim_reference.in_tf1("save_backbone", folder, checkpoint_prefix=str(folder / "resnet_v1_50.ckpt"),
                                   image=image, resnet="resnet_v1_50", seed=3)
    return str(folder / "resnet_v1_50.ckpt"), stored, image


def test_imagenet_checkpoint_round_trips_into_backbone_weights(imagenet_checkpoint):
    prefix, stored, image = imagenet_checkpoint
    assert os.path.isfile(prefix) and not os.path.exists(prefix + ".index"), "one V1 file, as TF-slim's"
    assert stored["resnet_v1_50/logits/weights"].shape == (1, 1, 2048, 1000) and "global_step" in stored
    # a narrow decoder: the backbone and its weights are what is checked
    model = refinenet_tf.RefineNet(num_classes=3, backbone="resnet_v1_50", backbone_weights=prefix, decoder_features=8)
    backbone = model.get_layer("resnet_v1_50")
    table = slim_backbones.checkpoint_table(backbone)
    variables = {weight.name[:-2]: weight for weight in backbone.weights}
    assert set(table) == set(variables) and len(table) == 265  # 53 convs + 53 BatchNorms x 4
    for name, (foreign, _) in table.items():
        np.testing.assert_array_equal(variables[name].numpy(), stored[foreign], err_msg=name)
    # ...and the backbone computes what tf-slim's resnet_v1_50 computes, at each end point the reference taps
    features = backbone(image[None], training=False)  # slim's graph fed the image to resnet_v1 as it is
    for pool, feature in zip(("pool2", "pool3", "pool4", "pool5"), features):
        expected = stored[pool]
        assert feature.shape == expected.shape, pool
        np.testing.assert_allclose(feature.numpy(), expected, atol=1e-4 * np.ptp(expected), err_msg=pool)


def test_backbone_checkpoint_errors_name_the_variable(imagenet_checkpoint, tmp_path):
    prefix, _, _ = imagenet_checkpoint
    tensors = dict(slim_backbones.read_checkpoint(prefix))
    missing = "resnet_v1_50/block3/unit_2/bottleneck_v1/conv2/BatchNorm/moving_variance"
    del tensors[missing]
    tensors["resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/biases"] = np.zeros([64], np.float32)
    slim_reference.write_checkpoint(str(tmp_path / "edited.ckpt"), tensors)
    with pytest.raises(ConversionError, match=f"backbone_weights=.*edited.ckpt.*missing from the checkpoint: "
                                              f"{missing}.*fit no model weight: .*unit_1/bottleneck_v1/conv1/biases"):
        backbones.build_backbone("resnet_v1_50", weights=str(tmp_path / "edited.ckpt"))


def test_backbone_weights_errors():
    with pytest.raises(ValueError, match="backbone_weights='imagenet'.*resnet_v1_101_2016_08_28.tar.gz.*"
                                         "backbone_weights='resnet_v1_101.ckpt'"):
        refinenet_tf.RefineNet(backbone="resnet_v1_101")
    with pytest.raises(FileNotFoundError, match="backbone_weights='nowhere.ckpt': no such file; .*TF-slim "
                                                "checkpoint"):
        backbones.build_backbone("resnet_v1_50", weights="nowhere.ckpt")


def test_cli_converts_the_imagenet_checkpoint_to_a_backbone_file(imagenet_checkpoint, tmp_path, capsys):
    prefix, stored, _ = imagenet_checkpoint
    output = str(tmp_path / "resnet_v1_50.keras")
    assert cli.main(["convert", "slim", prefix, "--output", output]) == 0
    printed = capsys.readouterr().out
    assert output in printed and "(the resnet_v1_50 backbone alone; give the file as --backbone-weights" in printed, printed
    backbone = backbones.build_backbone("resnet_v1_50", weights=output)
    np.testing.assert_array_equal(backbone.get_layer("block4_unit3_conv3_bn").moving_variance.numpy(),
                                  stored["resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/BatchNorm/moving_variance"])
    assert cli.main(["convert", "slim", prefix, "--output", output]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert cli.main(["convert", "slim", prefix, "--output", str(tmp_path / "b.keras"), "--ema"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--ema but the checkpoint has no ExponentialMovingAverage shadow variables (no resnet_v1_50/" in error
