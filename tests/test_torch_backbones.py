"""The PyTorch-layout backbones: PyTorch's output sizes and symmetric padding, taps, weights, clear errors.

That their outputs equal PyTorch's is shown end to end by the oracle in test_convert_pytorch.py.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf.models import backbones, torch_backbones


def _torch_size(n, kernel, stride, padding):
    """PyTorch's Conv2d / MaxPool2d output size: floor((n + 2 * padding - kernel) / stride) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def _resnet_sizes(n):
    """Sizes after the stem conv (7/2, pad 3), the max-pool (3/2, pad 1) and each stride-2 3x3 (pad 1)."""
    sizes = [_torch_size(_torch_size(n, 7, 2, 3), 3, 2, 1)]
    for _ in range(3):
        sizes.append(_torch_size(sizes[-1], 3, 2, 1))
    return sizes


@pytest.mark.parametrize("name, blocks", [("resnet50_torch", (3, 4, 6, 3)), ("resnet101_torch", (3, 4, 23, 3))])
def test_resnet_levels_have_pytorchs_sizes_at_odd_input_sizes(name, blocks):
    spec = backbones.get_backbone_spec(name)
    assert spec.preprocessing == "torch"
    assert spec.taps == {f"P{i + 2}": f"layer{i + 1}_block{b}_out" for i, b in enumerate(blocks)}
    outputs = backbones.build_backbone(name)(tf.zeros([1, 65, 97, 3]))
    # 65 -> 33 -> 17 -> 9 -> 5 -> 3 and 97 -> 49 -> 25 -> 13 -> 7 -> 4 (Keras' "same" would also give these
    # sizes, but samples other pixels: see the padding test below).
    assert [tuple(o.shape) for o in outputs] == [
        (1, h, w, c) for h, w, c in zip(_resnet_sizes(65), _resnet_sizes(97), (256, 512, 1024, 2048))]
    assert _resnet_sizes(65) == [17, 9, 5, 3]


def test_mobilenetv2_has_the_six_official_levels():
    spec = backbones.get_backbone_spec("mobilenetv2_lw_torch")
    assert list(spec.taps) == ["P2", "P3", "P4a", "P4", "P5a", "P5"]
    model = backbones.build_backbone("mobilenetv2_lw_torch", levels=tuple(spec.taps))
    outputs = model(tf.zeros([1, 65, 97, 3]))
    # layer3 .. layer8: 24, 32, 64, 96, 160, 320 channels at strides 4, 8, 16, 16, 32, 32 (pad 1 on each 3x3/2).
    assert [tuple(o.shape[1:]) for o in outputs] == [(17, 25, 24), (9, 13, 32), (5, 7, 64), (5, 7, 96),
                                                      (3, 4, 160), (3, 4, 320)]
    full = torch_backbones.build_lw_mobilenetv2()
    # Every block has its expansion conv, also layer2's (factor 1: 32 -> 32 channels); ReLU6 throughout.
    assert full.get_layer("layer2_block1_expand_conv").kernel.shape == (1, 1, 32, 32)
    relus = [layer for layer in full.layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    assert not any(layer.use_bias for layer in full.layers if isinstance(layer, keras.layers.Conv2D))


def test_strided_convs_pad_symmetrically_like_pytorch():
    # A 3x3 stride-2 conv whose kernel only reads its top-left tap: with PyTorch's padding=1 the output pixel
    # (0, 0) reads input (-1, -1), the zero padding; Keras' "same" would read input (0, 0) instead.
    images = keras.Input((5, 5, 1))
    model = keras.Model(images, torch_backbones._conv(images, 1, 3, "probe", strides=2))
    kernel = np.zeros([3, 3, 1, 1], np.float32)
    kernel[0, 0] = 1.0
    model.get_layer("probe").set_weights([kernel])
    x = np.arange(1, 26, dtype=np.float32).reshape(1, 5, 5, 1)
    # output (i, j) = x[2i - 1, 2j - 1] (zero outside): rows/cols -1, 1, 3 of x.
    expected = np.array([[0, 0, 0], [0, 7, 9], [0, 17, 19]], np.float32)
    np.testing.assert_array_equal(model(x).numpy()[0, :, :, 0], expected)


def test_stride_is_on_the_3x3_and_convs_have_no_bias():
    model = torch_backbones.build_resnet(50)
    block = "layer2_block1"
    assert model.get_layer(f"{block}_conv1").strides == (1, 1)
    assert model.get_layer(f"{block}_conv2").strides == (2, 2)
    assert model.get_layer(f"{block}_downsample_conv").strides == (2, 2)
    assert not any(layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert {layer.epsilon for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {1e-5}


def test_no_imagenet_download_and_weights_from_a_file(tmp_path):
    with pytest.raises(ValueError, match="backbone_weights='imagenet'.*resnet50_torch.*convert"):
        backbones.build_backbone("resnet50_torch", weights="imagenet")
    source = torch_backbones.build_lw_mobilenetv2()
    source.get_layer("layer1_bn").moving_mean.assign(np.arange(32, dtype=np.float32))
    path = str(tmp_path / "mobilenetv2_lw_torch.h5")
    source.save_weights(path)
    loaded = backbones.build_backbone("mobilenetv2_lw_torch", weights=path, levels=("P5",))
    np.testing.assert_array_equal(loaded.get_layer("layer1_bn").moving_mean.numpy(), np.arange(32))
    with pytest.raises(ValueError, match="depth=18"):
        torch_backbones.build_resnet(18)


def test_official_presets_use_the_pytorch_layouts_and_relu6_on_mobilenetv2():
    from refinenet_tf import models

    assert {name: (models.get(name).variant, models.get(name).backbone) for name in models.list_models()
            if name.endswith("_official")} == {
        "lw_resnet50_official": ("light_weight", "resnet50_torch"),
        "lw_resnet101_official": ("light_weight", "resnet101_torch"),
        "lw_resnet152_official": ("light_weight", "resnet152_torch"),
        "lw_mobilenetv2_official": ("light_weight", "mobilenetv2_lw_torch"),
        "refinenet_resnet101_official": ("paper", "resnet101_torch"),
        "multitask_mobilenetv2_official": ("multitask", "mobilenetv2_lw_torch")}
    model = models.build("lw_mobilenetv2_official", num_classes=3, backbone_weights=None)
    assert model.get_layer("preprocessing").mode == "torch"
    # ReLU6 between each fusion and its pooling, as the release's `self.relu = nn.ReLU6`.
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)] == [
        "relu6_p5", "relu6_p4", "relu6_p3", "relu6_p2"]
    assert model(np.zeros([1, 33, 47, 3], np.uint8)).shape == (1, 33, 47, 3)
    # build() arguments override the preset's options; other decoders refuse ReLU6.
    plain = models.build("lw_mobilenetv2_official", num_classes=3, backbone_weights=None, decoder_activation="relu")
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in plain.layers)
    with pytest.raises(ValueError, match="decoder_activation='relu6' is for variant='light_weight' only"):
        models.build("refinenet_resnet101_official", backbone_weights=None, decoder_activation="relu6")
    with pytest.raises(ValueError, match="decoder_activation must be 'relu' or 'relu6', got 'gelu'"):
        models.build("lw_resnet50_official", backbone_weights=None, decoder_activation="gelu")
    with pytest.raises(ValueError, match="backbone_weights='imagenet'.*mobilenetv2_lw_torch"):
        models.build("lw_mobilenetv2_official")


def test_weight_decay_reaches_every_conv_of_a_pytorch_layout_backbone():
    backbone = backbones.build_backbone("mobilenetv2_lw_torch", weight_decay=1e-4, batch_norm_momentum=0.5)
    convs = [layer for layer in backbone.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    assert len(backbone.losses) == len(convs) == 1 + 3 * 17  # layer1's conv, 3 per inverted residual block
    assert {layer.momentum for layer in backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.5}
