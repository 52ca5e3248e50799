"""The networks: the blog's blocks (:mod:`.layers`), the backbones (:mod:`.backbones` on ``keras.applications``,
:mod:`.slim_backbones` in TF-slim's layout, :mod:`.torch_backbones` in the official releases' PyTorch layout),
the decoders (:mod:`.refinenet`: slim, paper and Light-Weight; :mod:`.multitask`: one decoder, a head per task),
the named presets (:mod:`.presets`), what the heads give at the input's size (:mod:`.outputs`), the losses and
metrics the heads are scored with, loading saved models (:mod:`.saving`), applying a foreign checkpoint's
tensors (:mod:`.checkpoints`) and counting parameters and FLOPs (:mod:`.profiling`).

Every builder returns a plain functional ``keras.Model``.

Example:
    >>> from refinenet_tf import models
    >>> "lw_resnet50" in models.list_models()
    True
"""

from refinenet_tf._lazy import lazy_names

_NAMES = {
    "RefineNet": "refinenet", "LightWeightRefineNet": "refinenet", "VARIANTS": "refinenet", "Variant": "refinenet",
    "MultiTaskRefineNet": "multitask", "PRESETS": "presets", "ModelPreset": "presets", "build": "presets",
    "get": "presets", "list_models": "presets", "load_model": "saving", "segment_outputs": "outputs",
    "is_multitask": "outputs", "output_classes": "outputs",
}
_SUBMODULES = ("backbones", "checkpoints", "layers", "losses", "metrics", "multitask", "outputs", "presets",
               "profiling", "refinenet", "saving", "slim_backbones", "torch_backbones")

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, _SUBMODULES)
