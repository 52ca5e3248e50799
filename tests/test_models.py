"""The RefineNet builder: the real ResNets, odd sizes, pinned parameter count, round trips, policies."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import models
from refinenet_tf.models import backbones, layers


@pytest.fixture(scope="module")
def preset_model(request):
    """``models.build(preset, num_classes=21, backbone_weights=None)`` of the preset named by an indirect parameter,
    built once for every test of this module that asks for it.

    Building a real preset takes seconds (slim RefineNet-152: ~10 s on 2 cores) and most of them are looked at by
    several tests (parameter counts, structure, odd sizes). A module-scoped parametrized fixture makes pytest run
    the tests of one preset together and keep one model at a time; nothing here changes a model's weights.
    """
    return models.build(request.param, num_classes=21, backbone_weights=None)


def _shared(*presets, **parametrize):
    """Parametrizes a test with the shared model of each preset (the ``preset_model`` fixture)."""
    return pytest.mark.parametrize("preset_model", presets, indirect=True, **parametrize)


@_shared("slim_resnet101")
def test_slim_resnet101_parameter_count_is_pinned(preset_model):
    model = preset_model  # RefineNet(num_classes=21, backbone="resnet101", variant="slim")
    # keras.applications.ResNet101(include_top=False):                                       42,658,176
    # four 1x1 reductions to 256, no bias, + BatchNorm (4 x 256 each): (2048+1024+512+256)*256 + 4*1024
    #                                                                                          =   987,136
    # one decoder conv C = 3x3 256->256 without bias + BatchNorm = 9*256*256 + 4*256          =   590,848
    #   top block: 2 RCUs (4 C) + fusion (2 C) + CRP (2 C) + output RCU (2 C)           = 10 C
    #   three other blocks: 4 RCUs (8 C) + fusion (4 C) + CRP (2 C) + output RCU (2 C)  = 3 x 16 C
    #   58 C                                                                                  = 34,269,184
    # classifier: 1x1 256->21 with bias (no BatchNorm, as slim's normalizer_fn=None): 256*21 + 21 =  5,397
    assert model.count_params() == 42_658_176 + 987_136 + 58 * 590_848 + 5_397 == 77_919_893
    # Non-trainable: BatchNorm moving statistics, 2 x channels per BatchNorm.
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 137_088
    assert model.get_layer("classifier").conv.use_bias
    assert model.get_layer("classifier").activation == "relu", "slim applies a ReLU to its logits"


@_shared("slim_resnet50", "slim_resnet101", "slim_resnet152", ids=["resnet50", "resnet101", "resnet152"])
def test_builds_on_each_resnet_and_takes_odd_sizes(preset_model):
    model = preset_model  # RefineNet(num_classes=21, backbone=backbone): the slim decoder on each ResNet
    backbone = models.get(model.name).backbone
    assert model.get_layer(backbone).name == backbone
    # (docs/models.md runs the ResNet-101 one at 375 x 500, the size of a VOC photo)
    assert tuple(model(tf.zeros([1, 33, 47, 3])).shape) == (1, 33, 47, 21)


def test_logits_at_quarter_resolution_without_upsampling():
    model = refinenet_tf.RefineNet(num_classes=4, backbone="resnet50", backbone_weights=None,
                                   upsample_logits=False)
    assert tuple(model(tf.zeros([1, 33, 47, 3])).shape) == (1, math.ceil(33 / 4), math.ceil(47 / 4), 4)


def test_uint8_and_float_inputs_agree(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8)
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 41, 3)).astype(np.uint8)
    np.testing.assert_allclose(_outputs(model, images), _outputs(model, images.astype(np.float32)), atol=1e-5)


def _outputs(model, images):
    """``model``'s outputs on ``images``: an eager call (inference mode), which unlike ``model.predict`` traces no
    predict function for each model compared (about a second each on 2 cores)."""
    return model(images, training=False).numpy()


def _tiny_model(tiny_backbone, **kwargs):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8, **kwargs)
    # Non-trivial BatchNorm statistics, so that a round trip that dropped them would show.
    for weight in model.non_trainable_weights:
        weight.assign(np.random.default_rng(1).uniform(0.5, 1.5, weight.shape).astype(np.float32))
    return model


def test_saved_model_round_trip_gives_identical_outputs(tiny_backbone, tmp_path, run_fresh):
    # The whole model with the Light-Weight decoder: saving the slim one takes 18 s of the 2-core machine (TensorFlow
    # traces each nested layer), this one 3 s; each slim block makes its own SavedModel round trip in the layer
    # contract (tests/test_layers.py)
    model = _tiny_model(tiny_backbone, interpolation="bilinear", variant="light_weight")
    images = np.random.default_rng(3).uniform(0, 255, (1, 45, 51, 3)).astype(np.float32)
    path = str(tmp_path / "saved_model")
    model.save(path, save_format="tf")
    expected = _outputs(model, images)
    np.testing.assert_array_equal(_outputs(keras.models.load_model(path), images), expected)
    # The raw SavedModel runs without refinenet_tf or tf_keras, in a fresh process.
    np.save(tmp_path / "images.npy", images)
    run_fresh(f"""
        loaded = tf.saved_model.load({path!r})
        out = loaded.signatures["serving_default"](tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.save({str(tmp_path / 'out.npy')!r}, list(out.values())[0].numpy())
    """)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_logits_float32(tiny_backbone, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8)
    assert model.get_layer("refine_p2").compute_dtype == keras.mixed_precision.global_policy().compute_dtype
    logits = model(tf.zeros([1, 33, 47, 3], tf.uint8))
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (1, 33, 47, 3)


def test_fit_step_with_full_resolution_masks_and_ignore_label(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8, logits_relu=False)
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (4, 33, 47, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (4, 33, 47)).astype(np.int32)
    masks[:, :2] = 255
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    model.optimizer.build(model.trainable_variables)  # else the first step is traced twice, once to create them
    history = model.fit(images, masks, epochs=3, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_freeze_backbone(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   freeze_backbone=True)
    assert model.get_layer(tiny_backbone).trainable_weights == []
    assert model.get_layer("refine_p2").trainable_weights


def test_imagenet_weights_are_asked_of_keras(monkeypatch):
    calls = []
    spec = backbones.get_backbone_spec("resnet50")

    def recording_builder(weights=None, input_shape=None):
        calls.append(weights)
        return spec.builder(weights=None, input_shape=input_shape)

    monkeypatch.setitem(backbones.BACKBONES, "resnet50", backbones.BackboneSpec(
        recording_builder, spec.taps, spec.preprocessing))
    # the Light-Weight decoder: the backbone is built the same way under every decoder, and this one builds fastest
    refinenet_tf.RefineNet(num_classes=21, backbone="resnet50", backbone_weights="imagenet", variant="light_weight")
    assert calls == ["imagenet"]


@_shared("slim_resnet50")
def test_preprocessing_is_the_backbones_own(preset_model):
    model = preset_model  # RefineNet(backbone="resnet50")
    assert model.get_layer("preprocessing").mode == "caffe"
    assert isinstance(model.get_layer("upsample_logits"), layers.ResizeToMatch)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes"),
    ({"variant": "unknown"}, "Unknown variant 'unknown'.*light_weight.*paper.*slim"),
    ({"dropout": 1.0}, "dropout"),
    ({"weight_decay": "defualt"}, "weight_decay"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"num_classes": True}, "num_classes"),
    ({"backbone": "vgg16"}, "Unknown backbone"),
    ({"input_shape": (64, 64, 1)}, "input_shape"),
    ({"interpolation": "area"}, "interpolation"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    arguments = dict(num_classes=3, backbone="resnet50", backbone_weights=None)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        refinenet_tf.RefineNet(**arguments)


def test_keras_file_round_trip_and_load_model_equals_keras_load_model(tiny_backbone, tmp_path):
    model = _tiny_model(tiny_backbone)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = str(tmp_path / "model.keras")
    model.save(path)
    images = np.random.default_rng(5).uniform(0, 255, (2, 40, 44, 3)).astype(np.float32)
    fast = refinenet_tf.load_model(path)
    slow = keras.models.load_model(path, safe_mode=True)
    for restored in (fast, slow):
        np.testing.assert_array_equal(_outputs(restored, images), _outputs(model, images))
        assert restored.get_config() == model.get_config()
    assert isinstance(fast.loss, keras.losses.SparseCategoricalCrossentropy)
    assert refinenet_tf.load_model(path, compile=False).optimizer is None


def test_load_model_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras.*does not exist"):
        refinenet_tf.load_model(str(tmp_path / "missing.keras"))
    not_zip = tmp_path / "weights.keras"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras archive"):
        refinenet_tf.load_model(str(not_zip))
    with pytest.raises(ValueError, match="no saved_model.pb"):
        refinenet_tf.load_model(str(tmp_path))


# --- variants: the paper's RefineNet and Light-Weight RefineNet ------------------------------------------------

# Trainable parameters of the keras backbones: torchvision's ResNets without the 1000-way classifier
# (2048*1000 + 1000 = 2,049,000) plus the conv biases that keras' ResNets have and PyTorch's lack. A bottleneck
# of width c has biases c + c + 4c (+ 4c on the first block's projection shortcut); conv1 adds 64:
#   ResNet-50  (3, 4, 6, 3):  64 + 1,408 + 3,584 + 10,240 + 11,264                   = 26,560
#   ResNet-101 (3, 4, 23, 3): 64 + 1,408 + 3,584 + 36,352 + 11,264                   = 52,672
#   ResNet-152 (3, 8, 36, 3): 64 + 1,408 + 6,656 + 56,320 + 11,264                   = 75,712
KERAS_CONV_BIASES = {"resnet50": 26_560, "resnet101": 52_672, "resnet152": 75_712}
TORCHVISION_TOTAL = {"resnet50": 25_557_032, "resnet101": 44_549_160, "resnet152": 60_192_808}
BACKBONE_TRAINABLE = {name: TORCHVISION_TOTAL[name] - 2_049_000 + KERAS_CONV_BIASES[name]
                      for name in KERAS_CONV_BIASES}
# MobileNetV2 is tapped up to block 16, without the final 1x1 conv to 1280.
BACKBONE_TRAINABLE["mobilenetv2"] = 1_811_712
# keras' MobileNetV2 drops the 1x1 expansion conv of its first block (expansion 1); the official
# Light-Weight RefineNet's MobileNetV2 keeps it: 32*32 weights + BatchNorm gamma and beta (2*32).
MOBILENETV2_FIRST_EXPANSION = 32 * 32 + 2 * 32

# Slim decoder (the reference code's model()), 21 classes; every conv has BatchNorm (gamma, beta trainable):
#   four 1x1 reductions of P2..P5 to 256: sum(channels)*256 + 4 * 2*256
#   58 3x3 256->256 convs (see test_slim_resnet101_parameter_count_is_pinned) of 9*256*256 + 2*256 each
#   classifier 1x1 256->21 with bias: 256*21 + 21
def slim_decoder(tap_channels):
    return sum(tap_channels) * 256 + 4 * 2 * 256 + 58 * (9 * 256 * 256 + 2 * 256) + 256 * 21 + 21


SLIM_RESNET_DECODER = slim_decoder([256, 512, 1024, 2048])  # 35,229,973
SLIM_MOBILENET_DECODER = slim_decoder([24, 32, 96, 320])  # 34,367,509

# Paper decoder, 21 classes. conv3x3 a->b without bias: 9ab. RCU(c) = 9cc + c (first conv biased) + 9cc.
#   P5: reduce 9*2048*512 + 2 RCU(512) + CRP 4 x 9*512*512 + 3 RCU(512)           = 34,032,128
#   P4: reduce 9*1024*256 + 2 RCU(256) + fusion (9*512*256 + 9*256*256) + CRP 4 x 9*256*256 + 3 RCU(256)
#                                                                                  = 11,797,760 + 1,179,648
#   P3: reduce 9*512*256, same blocks (fusion 9*256*256 + 9*256*256)               = 10,618,112
#   P2: reduce 9*256*256, same                                                     =  9,438,464
#   classifier 3x3 256->21 with bias: 9*256*21 + 21                               =     48,405
PAPER_DECODER = 75_552_277
# Light-Weight decoder (all 1x1, no bias): P5 reduce 2048*512 + CRP 4*512*512; P4 reduce 1024*256 + fusion
# (512*256 + 256*256) + CRP 4*256*256; P3 reduce 512*256 + fusion 2*256*256 + CRP; P2 reduce 256*256 + fusion
# + CRP; classifier 48,405.
LIGHT_WEIGHT_DECODER = 3_849_493
# MobileNetV2 form: fusion convs 320,160 -> 256 (top), 256,96,64 -> 256, 256,32 -> 256, 256,24 -> 256;
# four CRPs of 4 x 256*256; classifier 48,405.
LIGHT_WEIGHT_MOBILENET_DECODER = 1_471_765

#: preset -> its trainable parameters for 21 classes, as derived above.
PRESET_TRAINABLE = {
    "slim_resnet50": BACKBONE_TRAINABLE["resnet50"] + SLIM_RESNET_DECODER,
    "slim_resnet101": BACKBONE_TRAINABLE["resnet101"] + SLIM_RESNET_DECODER,
    "slim_resnet152": BACKBONE_TRAINABLE["resnet152"] + SLIM_RESNET_DECODER,
    "slim_mobilenetv2": BACKBONE_TRAINABLE["mobilenetv2"] + SLIM_MOBILENET_DECODER,
    "refinenet_resnet50": BACKBONE_TRAINABLE["resnet50"] + PAPER_DECODER,
    "refinenet_resnet101": BACKBONE_TRAINABLE["resnet101"] + PAPER_DECODER,
    "refinenet_resnet152": BACKBONE_TRAINABLE["resnet152"] + PAPER_DECODER,
    "lw_resnet50": BACKBONE_TRAINABLE["resnet50"] + LIGHT_WEIGHT_DECODER,
    "lw_resnet101": BACKBONE_TRAINABLE["resnet101"] + LIGHT_WEIGHT_DECODER,
    "lw_resnet152": BACKBONE_TRAINABLE["resnet152"] + LIGHT_WEIGHT_DECODER,
    "lw_mobilenetv2": BACKBONE_TRAINABLE["mobilenetv2"] + LIGHT_WEIGHT_MOBILENET_DECODER,
}

#: The official PyTorch releases' trainable parameters for 21 classes (counted from their code), and how each
#: keras-backbone preset differs from its release: the keras conv biases, or MobileNetV2's first expansion conv.
OFFICIAL_TRAINABLE = {
    "refinenet_resnet101": (118_052_437, -KERAS_CONV_BIASES["resnet101"]),
    "lw_resnet50": (27_357_525, -KERAS_CONV_BIASES["resnet50"]),
    "lw_resnet101": (46_349_653, -KERAS_CONV_BIASES["resnet101"]),
    "lw_resnet152": (61_993_301, -KERAS_CONV_BIASES["resnet152"]),
    "lw_mobilenetv2": (3_284_565, +MOBILENETV2_FIRST_EXPANSION),
}


@_shared(*sorted(PRESET_TRAINABLE))
def test_every_keras_backbone_preset_has_its_derived_parameter_count(preset_model):
    model, preset = preset_model, preset_model.name  # models.build(preset, num_classes=21, backbone_weights=None)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == PRESET_TRAINABLE[preset]


@pytest.mark.parametrize("preset", sorted(OFFICIAL_TRAINABLE))
def test_the_difference_to_the_official_release_is_derived(preset):
    official, keras_minus_official_difference = OFFICIAL_TRAINABLE[preset]
    assert PRESET_TRAINABLE[preset] + keras_minus_official_difference == official
    published = models.get(preset).published["parameters_millions"]
    assert round(official / 1e6, 2 if published >= 100 else 1 if published < 10 else 0) == published


@_shared("refinenet_resnet50")
def test_paper_variant_structure(preset_model):
    model = preset_model  # RefineNet(num_classes=21, backbone="resnet50", variant="paper")
    decoder = [layer for layer in model.layers if layer.name not in ("images", "preprocessing", "resnet50")]
    assert not any("batch_norm" in w.name or "gamma" in w.name for layer in decoder for w in layer.weights)
    assert [l.name for l in model.layers if isinstance(l, keras.layers.Dropout)] == [
        "dropout_p5", "dropout_p4", "dropout_classifier"]
    pooling = model.get_layer("pooling_p3")
    assert (pooling.stages, pooling.chained, pooling.kernel_size) == (4, True, 3)
    assert model.get_layer("reduce_p5").filters == 512 and model.get_layer("reduce_p4").filters == 256
    assert model.get_layer("classifier").kernel_size == 3 and model.get_layer("classifier").conv.use_bias
    assert model.get_layer("fusion_p4").interpolation == "bilinear_align_corners"


@_shared("lw_resnet50")
def test_light_weight_variant_structure(preset_model):
    model = preset_model  # LightWeightRefineNet(num_classes=21, backbone="resnet50")
    assert not [l for l in model.layers if isinstance(l, (layers.ResidualConvUnit, layers.RefineBlock))]
    convs = [l for l in model.layers if isinstance(l, layers.ConvBNReLU) and l.name != "classifier"]
    assert convs and all(l.kernel_size == 1 for l in convs)
    assert all(l.kernel_size == 1 and l.stages == 4 and l.chained for l in model.layers
               if isinstance(l, layers.ChainedResidualPooling))
    assert model.get_layer("classifier").kernel_size == 3
    assert model.get_layer("fusion_p2").interpolation == "bilinear_align_corners"


@_shared("lw_mobilenetv2")
def test_light_weight_mobilenetv2_fuses_six_levels(preset_model):
    model = preset_model  # LightWeightRefineNet(num_classes=21, backbone="mobilenetv2")
    assert len(model.get_layer("mobilenetv2").outputs) == 6
    fusion_widths = {name: [conv.conv.kernel.shape[2] for conv in model.get_layer(name).convs]
                     for name in ("fusion_p5", "fusion_p4", "fusion_p3", "fusion_p2")}
    assert fusion_widths == {"fusion_p5": [320, 160], "fusion_p4": [256, 96, 64], "fusion_p3": [256, 32],
                             "fusion_p2": [256, 24]}


@_shared("refinenet_resnet50", "lw_resnet50", "lw_mobilenetv2", "slim_mobilenetv2",
         ids=["paper-resnet50", "light_weight-resnet50", "light_weight-mobilenetv2", "slim-mobilenetv2"])
@pytest.mark.parametrize("size", [(33, 47), (625, 468)])
def test_variants_take_odd_sizes(preset_model, size):
    model = preset_model  # RefineNet(num_classes=21, backbone=backbone, variant=variant)
    if size == (625, 468) and models.get(model.name).variant == "paper":
        size = (125, 94)  # the paper decoder at 625x468 costs ~10 s on 2 cores; the odd-size logic is the same
    assert tuple(model(tf.zeros((1,) + size + (3,))).shape) == (1,) + size + (21,)


@pytest.mark.parametrize("variant", ["paper", "light_weight"])
def test_variant_keras_round_trip(tiny_backbone, tmp_path, variant):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, variant=variant,
                                   decoder_features=8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    images = np.random.default_rng(6).uniform(0, 255, (1, 45, 51, 3)).astype(np.float32)
    restored = refinenet_tf.load_model(path)
    np.testing.assert_array_equal(_outputs(restored, images), _outputs(model, images))
    assert restored.get_config() == model.get_config()


def test_light_weight_decoder_round_trips_through_saved_model(tiny_backbone, tmp_path):
    # the Light-Weight decoder's layers through Keras' SavedModel (the slim decoder's: the test above); the keras
    # applications' own layers round-trip in Keras' tests
    model = refinenet_tf.LightWeightRefineNet(num_classes=5, backbone=tiny_backbone, backbone_weights=None)
    images = np.random.default_rng(7).uniform(0, 255, (1, 65, 97, 3)).astype(np.float32)
    model.save(str(tmp_path / "saved"), save_format="tf")
    np.testing.assert_allclose(_outputs(refinenet_tf.load_model(str(tmp_path / "saved")), images),
                               _outputs(model, images), atol=1e-5)


def test_presets_carry_their_source_and_build(tiny_backbone):
    assert models.list_models() == sorted(models.PRESETS)
    for name in models.list_models():
        preset = models.get(name)
        assert preset.source and (preset.variant in models.VARIANTS or preset.builder is not None)
        assert preset.backbone in backbones.list_backbones()
    assert models.get("lw_mobilenetv2").published == {"parameters_millions": 3.3, "voc2012_test_miou": 79.2,
                                                      "gflops_512": 9.3}
    with pytest.raises(ValueError, match="Unknown model 'lw_vgg'.*lw_resnet50"):
        models.get("lw_vgg")
    # the preset's name and the classes asked for (its full build, ResNet-50 and all, is counted above)
    model = models.build("lw_resnet50", num_classes=7, backbone_weights=None, backbone=tiny_backbone)
    assert model.name == "lw_resnet50" and model.output_shape[-1] == 7


def test_light_weight_refinenet_rejects_a_variant():
    with pytest.raises(TypeError, match="variant"):
        refinenet_tf.LightWeightRefineNet(variant="slim")


def test_whole_slim_model_matches_the_numpy_reference(tiny_backbone):
    from tests import numpy_reference as ref

    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, decoder_features=8)
    ref.randomize_weights(model, seed=3)
    images = np.random.default_rng(8).uniform(0, 255, (1, 45, 51, 3)).astype(np.float32)
    preprocessed = model.get_layer("preprocessing")(images)
    features = dict(zip(backbones.PYRAMID_LEVELS, [f.numpy().astype(np.float64) for f in
                                                   model.get_layer(tiny_backbone)(preprocessed, training=False)]))
    decoded = None
    for level in ("P5", "P4", "P3", "P2"):  # the slim model(): h[i] = conv1x1(f[i]); g[i] = RefineBlock(g[i-1], h[i])
        reduced = ref.slim_conv2d(features[level], ref.conv_params(model.get_layer(f"reduce_{level.lower()}")))
        decoded = ref.RefineBlock(decoded, reduced, ref.refine_block_params(model.get_layer(f"refine_{level.lower()}")))
    logits = ref.slim_conv2d(decoded, ref.conv_params(model.get_layer("classifier"), "logits"))
    expected = ref.resize_bilinear(logits, 45, 51, mode="half_pixel")
    actual = model(images, training=False).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("upsample_logits, shape", [(True, (None, 64, 96, 3)), (False, (None, 16, 24, 3))])
def test_fixed_input_shape_gives_static_output_shapes(tiny_backbone, upsample_logits, shape):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, decoder_features=8,
                                   input_shape=(64, 96, 3), upsample_logits=upsample_logits)
    assert model.output_shape == shape


def test_numpy_integer_num_classes_is_accepted(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=np.int64(4), backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8)
    assert model.output_shape[-1] == 4
