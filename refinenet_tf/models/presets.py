"""The named presets: a variant on a backbone, with where it comes from and what was published for it.

:func:`list_models` names them, :func:`get` gives one (a :class:`ModelPreset`) and :func:`build` builds it: a
:func:`refinenet_tf.models.RefineNet` (slim, paper or Light-Weight decoder), or the multi-task model of
:func:`refinenet_tf.models.MultiTaskRefineNet`.
"""

import dataclasses
import inspect
from typing import Callable, Mapping, Optional

from refinenet_tf.models import multitask
from refinenet_tf.models.refinenet import RefineNet

__all__ = ["PRESETS", "ModelPreset", "build", "get", "list_models"]


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    """A named model: variant + backbone, with where it comes from and what was published for it.

    Attributes:
        name: the preset's name.
        variant: a key of :data:`VARIANTS`.
        backbone: a registered backbone name.
        source: the paper / code and the table that the published numbers come from.
        published: published figures, e.g. ``{"parameters_millions": 27, "voc2012_test_miou": 81.1}``.
        options: arguments of the builder that the preset sets (``build``'s own arguments override them).
        builder: the function that builds it: ``None`` for :func:`RefineNet` (then ``variant`` is its argument),
            or another builder taking ``num_classes``, ``backbone``, ``backbone_weights`` and ``name``, such as
            :func:`refinenet_tf.multitask.MultiTaskRefineNet` (then ``variant`` only labels the preset).
    """

    name: str
    variant: str
    backbone: str
    source: str
    published: Mapping[str, float] = dataclasses.field(default_factory=dict)
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)
    builder: Optional[Callable] = None

    @property
    def build_function(self):
        """The function :meth:`build` calls with :meth:`arguments` (:func:`RefineNet` unless ``builder`` says)."""
        return self.builder or RefineNet

    def arguments(self, num_classes=21, backbone_weights="imagenet", **kwargs):
        """The arguments of :attr:`build_function` that build this preset, every one of them (defaults filled
        in); ``kwargs`` override them (``backbone=`` swaps the backbone). What a training run records.

        Example:
            >>> arguments = get("lw_resnet50").arguments(num_classes=4, decoder_features=16)
            >>> arguments["variant"], arguments["backbone"], arguments["decoder_features"], arguments["name"]
            ('light_weight', 'resnet50', 16, 'lw_resnet50')
            >>> sorted(get("multitask_mobilenetv2_official").arguments(num_classes=40)["tasks"])
            ['depth', 'segmentation']
        """
        kwargs = {**self.options, "backbone": self.backbone, "name": self.name, **kwargs}
        if self.builder is None:
            kwargs["variant"] = self.variant
        bound = inspect.signature(self.build_function).bind(num_classes=num_classes,
                                                            backbone_weights=backbone_weights, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def build(self, num_classes=21, backbone_weights="imagenet", **kwargs):
        """Builds the preset's model; ``kwargs`` go to :attr:`build_function` (``backbone=`` swaps the backbone)."""
        return self.build_function(**self.arguments(num_classes, backbone_weights, **kwargs))


_SLIM_SOURCE = ("TF-slim RefineNet of the reference blog post (itself a copy of the public TF-slim RefineNet); "
                "no published figures")
_SEED_SOURCE = ("the reference TF-slim RefineNet's whole network, model() of the blog post: TF-slim's resnet_v1 "
                "tapped at pool1 and blocks 1, 2 and 4, mean_image_subtraction; its checkpoints convert with "
                "refinenet_tf.convert.slim; no published figures")
_PAPER_SOURCE = ("Lin, Milan, Shen, Reid: RefineNet, CVPR 2017; structure and parameter count of the official "
                 "release (MatConvNet code, PyTorch port with the VOC weights)")
_LW_SOURCE = ("Nekrasov, Shen, Reid: Light-Weight RefineNet for Real-Time Semantic Segmentation, BMVC 2018, "
              "results table (PASCAL VOC 2012 test) and abstract")

_LW_OFFICIAL_SOURCE = ("the official Light-Weight RefineNet release (github.com/DrSleep/light-weight-refinenet, "
                       "models/resnet.py, models/mobilenet.py), layout and parameter names; " + _LW_SOURCE)
_PAPER_OFFICIAL_SOURCE = ("the official RefineNet-101 PyTorch release (github.com/DrSleep/refinenet-pytorch, "
                          "models/resnet.py; its README: 80.5 mIoU on VOC 2012 val, single scale); " + _PAPER_SOURCE)

_MULTITASK_SOURCE = ("Nekrasov, Dharmasiri, Spek, Drummond, Shen, Reid: Real-Time Joint Semantic Segmentation and "
                     "Depth Estimation Using Asymmetric Annotations, ICRA 2019 (NYUDv2 table: mIoU, RMSE; "
                     "GFLOPs at 640x480); structure and parameter names of the official release "
                     "(github.com/DrSleep/multi-task-refinenet, src/models.py)")

#: preset name -> :class:`ModelPreset`.
PRESETS = {preset.name: preset for preset in [
    ModelPreset("slim_resnet50", "slim", "resnet50", _SLIM_SOURCE),
    ModelPreset("slim_resnet101", "slim", "resnet101", _SLIM_SOURCE),
    ModelPreset("slim_resnet152", "slim", "resnet152", _SLIM_SOURCE),
    ModelPreset("slim_mobilenetv2", "slim", "mobilenetv2", _SLIM_SOURCE + "; on keras' MobileNetV2 (P2..P5)"),
    ModelPreset("seed_resnet_v1_50", "slim", "resnet_v1_50", _SEED_SOURCE),
    ModelPreset("seed_resnet_v1_101", "slim", "resnet_v1_101", _SEED_SOURCE),
    ModelPreset("seed_resnet_v1_152", "slim", "resnet_v1_152", _SEED_SOURCE),
    ModelPreset("refinenet_resnet50", "paper", "resnet50", _PAPER_SOURCE),
    ModelPreset("refinenet_resnet101", "paper", "resnet101", _PAPER_SOURCE, {"parameters_millions": 118.05}),
    ModelPreset("refinenet_resnet152", "paper", "resnet152",
                _PAPER_SOURCE + "; 83.4 mIoU on VOC 2012 test is the paper's best (abstract), with ResNet-152",
                {"voc2012_test_miou": 83.4}),
    ModelPreset("lw_resnet50", "light_weight", "resnet50", _LW_SOURCE,
                {"parameters_millions": 27, "voc2012_test_miou": 81.1}),
    ModelPreset("lw_resnet101", "light_weight", "resnet101", _LW_SOURCE,
                {"parameters_millions": 46, "voc2012_test_miou": 82.0}),
    ModelPreset("lw_resnet152", "light_weight", "resnet152", _LW_SOURCE,
                {"parameters_millions": 62, "voc2012_test_miou": 82.7}),
    ModelPreset("lw_mobilenetv2", "light_weight", "mobilenetv2", _LW_SOURCE,
                {"parameters_millions": 3.3, "voc2012_test_miou": 79.2, "gflops_512": 9.3}),
    # The official releases' exact structures (PyTorch-layout backbones): official checkpoints convert into these
    # (refinenet_tf.convert.pytorch). tests/test_convert_pytorch.py pins their exact parameter counts.
    ModelPreset("lw_resnet50_official", "light_weight", "resnet50_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 27, "voc2012_test_miou": 81.1}),
    ModelPreset("lw_resnet101_official", "light_weight", "resnet101_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 46, "voc2012_test_miou": 82.0}),
    ModelPreset("lw_resnet152_official", "light_weight", "resnet152_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 62, "voc2012_test_miou": 82.7}),
    ModelPreset("lw_mobilenetv2_official", "light_weight", "mobilenetv2_lw_torch",
                _LW_OFFICIAL_SOURCE + "; ReLU6 after each fusion, as models/mobilenet.py",
                {"parameters_millions": 3.3, "voc2012_test_miou": 79.2}, {"decoder_activation": "relu6"}),
    ModelPreset("refinenet_resnet101_official", "paper", "resnet101_torch", _PAPER_OFFICIAL_SOURCE,
                {"parameters_millions": 118.05, "voc2012_val_miou": 80.5}),
    # Joint segmentation and depth (refinenet_tf.multitask); the normals head: tasks=(..., "normals").
    ModelPreset("multitask_mobilenetv2_official", "multitask", "mobilenetv2_lw_torch", _MULTITASK_SOURCE,
                {"parameters_millions": 3.07, "nyudv2_40_miou": 42.0, "gflops_640x480": 6.5},
                {"tasks": ("segmentation", "depth")}, builder=multitask.MultiTaskRefineNet),
]}


def list_models():
    """Names of the presets.

    Example:
        >>> "lw_resnet50" in list_models()
        True
    """
    return sorted(PRESETS)


def get(name):
    """The :class:`ModelPreset` called ``name``.

    Example:
        >>> get("lw_resnet50").published["voc2012_test_miou"]
        81.1
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}; use one of {list_models()}.") from None


def build(name, num_classes=21, backbone_weights="imagenet", **kwargs):
    """Builds the preset ``name`` (see :func:`list_models`); ``kwargs`` go to its builder (:func:`RefineNet`, or
    :func:`refinenet_tf.multitask.MultiTaskRefineNet` for ``multitask_*``)."""
    return get(name).build(num_classes=num_classes, backbone_weights=backbone_weights, **kwargs)
