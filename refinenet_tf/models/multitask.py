"""Joint semantic segmentation and depth (and surface normals): the multi-task Light-Weight RefineNet.

Nekrasov, Dharmasiri, Spek, Drummond, Shen, Reid: "Real-Time Joint Semantic Segmentation and Depth Estimation
Using Asymmetric Annotations", ICRA 2019 (official release ``multi-task-refinenet``, ``src/models.py``; training
code in DenseTorch). One Light-Weight RefineNet decoder is shared by every task; each task has a small head.
The official structure, on its MobileNetV2 (``layer1`` .. ``layer8``, :mod:`refinenet_tf.models.torch_backbones`)::

    x = relu6(conv8(l8) + conv7(l7));                 x = crp4(x)           # 1x1 projections to 256, 1/32
    x = relu6(conv6(l6) + conv5(l5) + up(adapt4(x))); x = crp3(x)           # 1/16
    x = relu6(conv4(l4) + up(adapt3(x)));             x = crp2(x)           # 1/8
    x = relu6(conv3(l3) + up(adapt2(x)));             x = crp1(x)           # 1/4, crp1 depthwise ("grouped")
    task = conv3x3_bias(relu6(depthwise_conv1x1(x)))                        # per task, at 1/4

Every ``crp`` is a 4-stage chained residual pooling with 1x1 convolutions (5x5 max-pools); every ``up`` a
bilinear resize with ``align_corners=False`` (half-pixel centres, unlike the single-task Light-Weight release).
Here each fusion is a :class:`~refinenet_tf.models.layers.MultiResolutionFusion` (``fusion_p5`` .. ``fusion_p2``: its
convolution on the previous level is the release's ``conv_adapt``), each pooling a
:class:`~refinenet_tf.models.layers.ChainedResidualPooling` (``pooling_p5`` .. ``pooling_p2``), each head a depthwise
1x1 :class:`~refinenet_tf.models.layers.ConvBNReLU` with ReLU6 (``<task>_head``) and a 3x3 one with a bias
(``<task>_predictor``, float32). On a backbone with four levels (the ResNets) the same decoder fuses one level
per stride.

The outputs are what the release's notebooks read off the network: the predictions are resized bilinearly to
the input size (``align_corners=False``; the notebooks use a cubic resize after the network), then depth is the
absolute value (``np.abs(depth)``: metres for NYUDv2 and KITTI) and normals are scaled to unit length.
Segmentation logits are returned as they are.
"""

import tf_keras as keras

from refinenet_tf.models import backbones as backbones_lib
from refinenet_tf.models import layers
from refinenet_tf._checks import positive_int

__all__ = ["TASKS", "TASK_CHANNELS", "MultiTaskRefineNet"]

#: The tasks a head can be built for, in the order of the release's outputs.
TASKS = ("segmentation", "depth", "normals")

#: Output channels of each task's head (``None``: ``num_classes``).
TASK_CHANNELS = {"segmentation": None, "depth": 1, "normals": 3}

#: How each task's resized prediction becomes its output (see :class:`~refinenet_tf.models.layers.TaskOutput`).
_TASK_TRANSFORMS = {"segmentation": "identity", "depth": "absolute", "normals": "unit_vector"}

#: The decoder's fusion groups, coarse to fine: levels of one stride are fused together (MobileNetV2 taps two
#: levels at strides 16 and 32, ``P4a``/``P5a``; the ResNets one).
_FUSION_GROUPS = (("P5", "P5a"), ("P4", "P4a"), ("P3",), ("P2",))


def _check_tasks(tasks):
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks={tasks!r}: give distinct tasks among {TASKS}, e.g. ('segmentation', 'depth').")
    return tasks


def _decoder(features, decoder_features):
    """The shared Light-Weight decoder of the release; returns the 1/4-resolution features after ``crp1``."""
    plain = dict(use_batch_norm=False, activation=None, use_bias=False, weight_decay=None)
    groups = [tuple(level for level in group if level in features) for group in _FUSION_GROUPS]
    groups = [group for group in groups if group]
    x = None
    for index, group in enumerate(groups):
        name = group[0].lower()
        paths = ([[x]] if x is not None else []) + [[features[level] for level in group]]
        fused = layers.MultiResolutionFusion(decoder_features, 1, interpolation="bilinear",
                                             name=f"fusion_{name}", **plain)(paths)
        fused = keras.layers.ReLU(6.0, name=f"relu6_{name}")(fused)
        x = layers.ChainedResidualPooling(decoder_features, 1, stages=4, chained=True,
                                          depthwise=index == len(groups) - 1, name=f"pooling_{name}", **plain)(fused)
    return x


def MultiTaskRefineNet(num_classes, tasks=("segmentation", "depth"), backbone="mobilenetv2_lw_torch",
                       backbone_weights=None, upsample_outputs=True, name=None, decoder_features=256,
                       input_shape=(None, None, 3), batch_norm_momentum=None):
    """Builds the multi-task Light-Weight RefineNet (Nekrasov et al., ICRA 2019): one decoder, a head per task.

    The model takes RGB images in [0, 255] (uint8 or float) of any size, applies the backbone's preprocessing
    inside and returns a dict of float32 tensors, one per task, under the task's name (also the name of the
    output layer, so ``model.compile(loss={"segmentation": ..., "depth": ...})`` works):

    * ``"segmentation"``: logits ``[N, H, W, num_classes]``;
    * ``"depth"``: depth in the units of the training data (metres for the official checkpoints),
      ``[N, H, W, 1]``, the absolute value of the head's output;
    * ``"normals"``: unit surface normals ``[N, H, W, 3]``.

    Args:
        num_classes: segmentation classes (40 for NYUDv2-40, 46 for the release's NYUD + KITTI model).
        tasks: the heads, among ``"segmentation"``, ``"depth"`` and ``"normals"`` (the release: the first two,
            or all three); a head's layers are named after its task.
        backbone: a registered backbone (see ``refinenet_tf.models.backbones``): ``"mobilenetv2_lw_torch"`` (the
            release's), ``"mobilenetv2"`` (keras.applications, six levels as well), or a ResNet (``"resnet50"``,
            ``"resnet50_torch"``, ...: one level per stride).
        backbone_weights: ``None`` (random), ``"imagenet"`` (the keras.applications backbones) or a keras
            weights file of the backbone.
        upsample_outputs: resize the predictions (computed at 1/4 of the input) bilinearly to the input size
            (``align_corners=False``); ``False`` returns them at ``ceil(H/4) x ceil(W/4)``.
        name: the model's name (default ``multitask_refinenet_<backbone>``).
        decoder_features: width of the decoder and of the heads (256 as released).
        input_shape: ``(height, width, 3)``; ``(None, None, 3)`` takes any size.
        batch_norm_momentum: momentum of the backbone's BatchNorm layers (``None``: the backbone's own; the
            decoder has no BatchNorm). Lower it (e.g. 0.9) to train from scratch for few steps.

    Returns:
        A functional ``keras.Model`` whose output is a dict ``{task: tensor}``.

    Example:
        >>> model = MultiTaskRefineNet(num_classes=40, decoder_features=16)
        >>> outputs = model(tf.zeros([1, 33, 47, 3], tf.uint8))
        >>> {task: tuple(output.shape) for task, output in outputs.items()}
        {'segmentation': (1, 33, 47, 40), 'depth': (1, 33, 47, 1)}
    """
    num_classes = positive_int("num_classes", num_classes, hint="40 for NYUDv2-40")
    tasks = _check_tasks(tasks)
    decoder_features = positive_int("decoder_features", decoder_features)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB images, got {input_shape!r}.")
    spec = backbones_lib.get_backbone_spec(backbone)
    levels = tuple(level for group in _FUSION_GROUPS for level in group if level in spec.taps)[::-1]

    images = keras.Input(shape=input_shape, name="images")
    preprocessed = layers.ImagePreprocessing(spec.preprocessing, name="preprocessing")(images)
    backbone_model = backbones_lib.build_backbone(backbone, weights=backbone_weights, input_shape=input_shape,
                                                  batch_norm_momentum=batch_norm_momentum, levels=levels)
    outputs = backbone_model(preprocessed)
    features = dict(zip(levels, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    shared = _decoder(features, decoder_features)

    predictions = {}
    for task in tasks:
        head = layers.ConvBNReLU(decoder_features, 1, depthwise=True, use_batch_norm=False, activation="relu6",
                                 use_bias=False, weight_decay=None, name=f"{task}_head")(shared)
        prediction = layers.ConvBNReLU(TASK_CHANNELS[task] or num_classes, 3, use_batch_norm=False,
                                       activation=None, use_bias=True, weight_decay=None, dtype="float32",
                                       name=f"{task}_predictor")(head)
        if upsample_outputs:
            prediction = layers.ResizeToMatch(interpolation="bilinear", dtype="float32",
                                              name=f"{task}_upsample")([prediction, images])
        predictions[task] = layers.TaskOutput(_TASK_TRANSFORMS[task], name=task)(prediction)
    return keras.Model(images, predictions, name=name or f"multitask_refinenet_{backbone}")
