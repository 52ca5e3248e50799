"""What a user holds: a :class:`Segmenter`, one RefineNet with its heads, and the :class:`Prediction` it returns.

A segmenter wraps the plain functional ``keras.Model`` (``segmenter.model``, for ``fit``, ``save`` and Keras' own
``predict``, which keeps Keras' meaning: logits) with what a user does with it: load it
(:meth:`Segmenter.from_preset`), run it on images (:meth:`Segmenter.predict`, :meth:`Segmenter.predict_files`),
score it (:meth:`Segmenter.evaluate`) and export it (:meth:`Segmenter.export`). A segmentation model, a
segmentation + depth model (and normals) go through the same methods: the heads are what the model returns.

Example:
    >>> import numpy as np
    >>> from refinenet_tf import LightWeightRefineNet
    >>> segmenter = Segmenter(LightWeightRefineNet(num_classes=3, backbone="mobilenetv2", backbone_weights=None))
    >>> segmenter.heads
    ('segmentation',)
    >>> result = segmenter.predict(np.zeros((37, 53, 3), np.uint8))
    >>> result.labels.shape, result.depth is None
    ((37, 53), True)
"""

import os

import numpy as np  # noqa: F401  (the examples)

from refinenet_tf.inference import prediction
from refinenet_tf.inference.prediction import Prediction

__all__ = ["Segmenter"]

_HEADS = ("segmentation", "depth", "normals")


def _heads_of(model):
    from refinenet_tf.models.outputs import is_multitask

    if not is_multitask(model):
        return ("segmentation",)
    return tuple(head for head in _HEADS if head in model.output_names)


class Segmenter:
    """One RefineNet and its heads (segmentation, depth, normals), with the methods a user runs.

    Args:
        model: the functional ``keras.Model`` (a RefineNet, or a multi-task model whose outputs are named
            ``segmentation``, ``depth``, ``normals``).
        class_names: the segmentation classes' names (for tables and legends); default: the model's record, or
            VOC's for 21 classes.
        trained: ``False`` marks an untrained decoder (:meth:`from_preset` of a preset name without weights):
            :meth:`predict`, :meth:`predict_files`, :meth:`evaluate` and :meth:`export` then refuse it, with one
            line that says how to get weights, unless ``allow_untrained``.
        allow_untrained: run it anyway.
        source: where the model came from (a preset name, a path), for messages and export metadata.
    """

    def __init__(self, model, class_names=None, trained=True, allow_untrained=False, source=None):
        import tf_keras as keras

        if not isinstance(model, keras.Model):
            raise TypeError(f"Segmenter(model=...) takes a keras.Model, got {type(model).__name__}; load files with "
                            "Segmenter.from_preset(PATH).")
        self.model = model
        self.heads = _heads_of(model)
        self.class_names = tuple(class_names) if class_names else None
        self.trained = bool(trained)
        self.allow_untrained = bool(allow_untrained)
        self.source = source if source is not None else model.name

    def __repr__(self):
        state = "" if self.trained else ", untrained"
        return f"Segmenter({self.source!r}, heads={self.heads}{state})"

    @classmethod
    def from_preset(cls, preset, num_classes=None, weights=None, backbone_weights=None, allow_untrained=False):
        """Loads a segmenter: the one loader of the package.

        Args:
            preset: a training run folder (its best weights), a ``.keras`` file (``model.save``, or a checkpoint
                converted by ``refinenet-tf convert``), a SavedModel folder written by ``model.save``, a
                ``.weights.h5`` file inside a run folder, or a preset name (:func:`refinenet_tf.models.list_models`).
            num_classes: the classes of a preset (default 21); for a file, a check of the model's.
            weights: a ``.weights.h5`` file to load into the model (a preset's trained weights).
            backbone_weights: a preset's backbone weights: ``None`` (random; the default, so that nothing is
                downloaded for a model that is refused anyway), ``"imagenet"`` (downloaded by Keras, for training
                it) or a file.
            allow_untrained: a preset name without ``weights`` has an untrained decoder; it is built and marked
                untrained, and running it is refused unless this is true.

        Returns:
            A :class:`Segmenter`.

        Example:
            >>> segmenter = Segmenter.from_preset("lw_mobilenetv2", num_classes=3)
            >>> segmenter
            Segmenter('lw_mobilenetv2', heads=('segmentation',), untrained)
            >>> segmenter.predict(np.zeros((8, 8, 3), np.uint8))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            refinenet_tf.training.runs.UntrainedModelError: preset='lw_mobilenetv2' is a preset name without trained weights: ...
        """
        from refinenet_tf import models
        from refinenet_tf.training import runs

        spec = os.fspath(preset)
        untrained = spec in models.PRESETS and weights is None and not os.path.exists(spec)
        model = runs.load_inference_model(spec, num_classes=num_classes, backbone_weights=backbone_weights,
                                          weights=weights, allow_untrained=True)
        class_names = runs.saved_class_names(spec) if not untrained else None
        return cls(model, class_names=class_names, trained=not untrained, allow_untrained=allow_untrained,
                   source=spec)

    def _check_trained(self, allow_untrained):
        from refinenet_tf.training import runs

        if not (self.trained or self.allow_untrained or allow_untrained):
            raise runs.UntrainedModelError(runs.untrained_preset_message(self.source, "preset"))

    def engine(self, engine=None, scales=(1.0,), flip=False, max_side=None, precision="float32",
               allow_untrained=False):
        """The engine (:mod:`refinenet_tf.inference.engines`) that runs this segmenter: the Keras model by default, or
        ``"openvino"``, ``"onnxruntime"``, ``"tflite"``, ``"saved_model"`` (converted once and kept), at
        ``precision`` (``"float32"`` or ``"bfloat16"``), with test-time augmentation (``scales``, ``flip``,
        ``max_side``; segmentation-only models)."""
        self._check_trained(allow_untrained)
        return prediction.engine_for(self.model, engine, scales, flip, max_side, precision)

    def predict(self, images, scales=(1.0,), flip=False, max_side=None, return_probabilities=False, engine=None,
                precision="float32", allow_untrained=False):
        """Runs every head on one image or a list of images of any sizes.

        Args:
            images: one ``[H, W, 3]`` RGB array (uint8, or floats in [0, 255]) or a sequence of them.
            scales, flip, max_side: test-time augmentation (see :func:`refinenet_tf.models.outputs.segment_outputs`).
            return_probabilities: also give the class probabilities.
            engine, precision: what runs the model (:meth:`engine`).
            allow_untrained: run an untrained decoder anyway.

        Returns:
            A :class:`Prediction` for one image, a list of them for a sequence.
        """
        run = self.engine(engine, scales, flip, max_side, precision, allow_untrained)
        return prediction.predict(run, images, return_probabilities=return_probabilities)

    def predict_files(self, inputs, output_dir, scales=(1.0,), flip=False, max_side=None, engine=None,
                      precision="float32", allow_untrained=False, **options):
        """Writes every head's images for image files, folders or globs (see
        :func:`refinenet_tf.inference.predict_files`, whose ``options`` it takes: ``palette``, ``probabilities``,
        ``overlay_alpha``, ``skip_errors``, ``progress``, ``max_pixels``, ``max_depth``): label PNGs and overlays,
        and for a depth head the depth PNGs. Returns its ``{"written", "failed"}`` record."""
        run = self.engine(engine, scales, flip, max_side, precision, allow_untrained)
        options.setdefault("class_names", self.class_names)
        return prediction.predict_files(run, inputs, output_dir, **options)

    def evaluate(self, data, split="val", num_classes=None, scales=(1.0,), flip=False, max_side=None, limit=None,
                 progress=True, engine=None, precision="float32", allow_untrained=False):
        """Scores every head on a dataset (mean IoU and per-class IoU; with a depth head, the depth metrics too).

        Returns:
            An :class:`refinenet_tf.inference.Evaluation` (with the depth scores for a model with a depth head).
        """
        from refinenet_tf.inference import evaluation

        run = self.engine(engine, scales, flip, max_side, precision, allow_untrained)
        return evaluation.evaluate(run, data, split=split, num_classes=num_classes, class_names=self.class_names,
                                   limit=limit, progress=progress)

    def export(self, path, format="saved_model", allow_untrained=False, **options):
        """Exports the model for serving: ``format`` is ``"saved_model"``, ``"tflite"``, ``"onnx"`` or
        ``"openvino"`` (an ``.xml`` path); ``options`` go to :mod:`refinenet_tf.export`'s function of that format
        (``scales``, ``flip``, ``max_side``, ``overwrite``, ``quantization``, ...). Every format takes uint8 images and
        returns labels and probabilities (and depth, normals), with the same metadata. Returns ``path``."""
        from refinenet_tf import export

        self._check_trained(allow_untrained)
        exporters = {"saved_model": export.export_saved_model, "tflite": export.export_tflite,
                     "onnx": export.export_onnx, "openvino": export.export_openvino}
        if format not in exporters:
            raise ValueError(f"format={format!r}: use one of {sorted(exporters)}.")
        if self.class_names:
            options.setdefault("class_names", list(self.class_names))
        options.setdefault("source", str(self.source))
        exporters[format](self.model, path, **options)
        return path
