"""Segmentation and prediction: class probabilities at the input's own resolution, with optional test-time
augmentation (multi-scale + horizontal flip).

One TensorFlow function, :func:`segment`, is what every consumer runs: :func:`predict` (NumPy arrays),
:func:`predict_files` (PNG files), :func:`refinenet_tf.evaluation.evaluate` (a confusion matrix) and the exported
SavedModel / TFLite signatures (:mod:`refinenet_tf.export`). That is why the exported models give the same labels
as the Python API. Loading a model to run (a run folder, a ``.keras`` file, a preset) is
:func:`refinenet_tf.runs.load_inference_model`.

Example:
    >>> from refinenet_tf import RefineNet
    >>> model = RefineNet(num_classes=3, backbone="resnet50", backbone_weights=None)
    >>> image = np.zeros((37, 53, 3), np.uint8)
    >>> labels = predict(model, image)
    >>> labels.shape, labels.dtype
    ((37, 53), dtype('int32'))
"""

import glob
import os
import weakref

import numpy as np
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import _files, folding, layers, runs, visualization

__all__ = ["FREEZE_CHOICES", "FROZEN_WEIGHTS", "FrozenModel", "collect_images", "freeze", "model_to_run", "predict",
           "predict_files", "predict_joint", "predict_joint_files", "segment", "segment_and_depth"]


def _check_scales(scales):
    scales = tuple(float(s) for s in scales)
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75); got {scales}.")
    return scales


def _resize_to(values, size):
    """``values`` (``[N, h, w, C]`` float) resized bilinearly to ``size`` (TF2's ``tf.image.resize``,
    :func:`refinenet_tf.layers.resize_bilinear` ``"bilinear"``), without a pass over them where they already have
    ``size``: every preset upsamples its logits to the input size itself (``upsample_logits=True``). At the same
    size the resize samples every pixel exactly and returns finite values unchanged, so skipping it changes
    nothing (an infinite value stays itself instead of becoming NaN). The sizes are compared when tracing where
    both are known (``size`` as Python ints, :func:`refinenet_tf.layers._spatial_size`), else when running.

    Example:
        >>> logits = tf.random.stateless_normal([1, 5, 7, 3], seed=[1, 2])
        >>> bool(tf.reduce_all(_resize_to(logits, [5, 7]) == tf.image.resize(logits, [5, 7])))
        True
        >>> _resize_to(logits, tf.constant([10, 14])).shape
        TensorShape([1, 10, 14, 3])
    """
    static_size = tf.get_static_value(size)
    if static_size is not None and values.shape[1:3].is_fully_defined():
        if tuple(values.shape[1:3]) == tuple(int(side) for side in static_size):
            return values
        return layers.resize_bilinear(values, size, "bilinear")
    same = tf.reduce_all(tf.equal(tf.shape(values)[1:3], size))
    return tf.cond(same, lambda: tf.identity(values), lambda: layers.resize_bilinear(values, size, "bilinear"))


def segment(model, images, scales=(1.0,), flip=False, max_side=None):
    """Class probabilities of ``images`` at their own resolution, averaged over scales and flips.

    For each scale the batch is resized (bilinear) to ``round(scale * size)``, run through ``model`` (and, with
    ``flip``, also mirrored left-right, run, and mirrored back); the logits are resized (bilinear) to the input
    size, turned into probabilities by a softmax, and all views' probabilities are averaged. With the default
    ``scales=(1.0,)`` and no flip this is ``softmax(resize(model(images)))``.

    Args:
        model: a segmentation model mapping float32 RGB ``[N, H, W, 3]`` in [0, 255] to logits ``[N, h, w, C]``
            (any ``h, w``: RefineNet's 1/4-resolution logits or full-resolution ones).
        images: ``[N, H, W, 3]`` tensor, uint8 or float in [0, 255].
        scales: input scales to average over (e.g. ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``).
        flip: also average over horizontally mirrored inputs.
        max_side: if the longer side of ``images`` exceeds it, every scale is shrunk by
            ``max_side / longer side`` (memory-safe inference on huge images); the output keeps the input size.

    Returns:
        float32 ``[N, H, W, C]`` probabilities (they sum to 1 over ``C``).
    """
    scales = _check_scales(scales)
    images = tf.cast(images, tf.float32)
    size = layers._spatial_size(images)
    factor = tf.constant(1.0)
    if max_side is not None:
        factor = tf.minimum(1.0, float(max_side) / tf.cast(tf.reduce_max(size), tf.float32))
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0 or max_side is not None:
            scaled_size = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * scale * factor), tf.int32))
            scaled = _resize_to(images, scaled_size)
        for mirrored in (False, True) if flip else (False,):
            view = tf.reverse(scaled, axis=[2]) if mirrored else scaled
            logits = tf.cast(model(view, training=False), tf.float32)
            if mirrored:
                logits = tf.reverse(logits, axis=[2])
            probabilities = tf.nn.softmax(_resize_to(logits, size), axis=-1)
            total = probabilities if total is None else total + probabilities
    return total / float(len(scales) * (2 if flip else 1))


#: what ``weights_as=`` takes in :func:`freeze`
FROZEN_WEIGHTS = ("auto", "snapshots", "constants")


class FrozenModel:
    """A Keras model's inference graph on a private copy of its weights: what :func:`freeze` returns.

    It maps float RGB ``[N, H, W, 3]`` (any ``H, W``) to the model's outputs (logits; a multi-task model's dict),
    like ``model(images, training=False)``, and goes wherever a model goes for inference (:func:`segment`,
    :func:`predict`, :func:`evaluate`, :func:`predict_files`). Its weights are a copy taken when it was made:
    later training of the Keras model does not reach it. It cannot be trained or saved; export the Keras model
    instead.

    Attributes:
        name, input_shape, output_shape: the Keras model's.
        weights_as: ``"snapshots"`` (private ``tf.Variable`` copies of the weights, which share memory with the
            model's until either changes) or ``"constants"`` (the weights written into the graph).
        function: the frozen ``tf.function`` graph (a ``ConcreteFunction``; ``function.graph`` is what the
            TensorFlow profiler reads, see :func:`refinenet_tf.profiling.count_flops`).
        folded_batch_norms: how many batch normalizations were folded into (or fused with) their convolutions
            (:func:`refinenet_tf.folding.fold_batch_norms`, :func:`refinenet_tf.folding.fuse_onednn_convolutions`).
        folded_channel_reversals: how many RGB -> BGR reversals of the input were folded into the first
            convolution (:func:`refinenet_tf.folding.fold_channel_reversals`).
        fused_convolutions: how many convolutions run as oneDNN's fused convolution
            (:func:`refinenet_tf.folding.fuse_onednn_convolutions`; snapshots on oneDNN only), which keeps its
            weights converted to oneDNN's layout except in ``plain_weight_convolutions`` of them: those of the
            deepest levels, which do at most 5 % of the work with many of the weights
            (:func:`refinenet_tf.folding.light_work_convolutions`).
    """

    def __init__(self, model, batch_shape=None, fold=True, weights_as="auto"):
        if not isinstance(model, keras.Model):
            raise TypeError(f"freeze needs a keras.Model, got {type(model).__name__}.")
        if weights_as not in FROZEN_WEIGHTS:
            raise ValueError(f"weights_as={weights_as!r} must be one of {FROZEN_WEIGHTS}.")
        self.name, self.input_shape, self.output_shape = model.name, model.input_shape, model.output_shape
        spec = tf.TensorSpec(batch_shape or [None, *model.input_shape[1:]], tf.float32)
        concrete = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
        onednn = folding.onednn_available()
        snapshot = None
        if weights_as == "snapshots" or (weights_as == "auto" and onednn):
            snapshot = folding.snapshot_graph_def(concrete, model.variables)
            if snapshot is None and weights_as == "snapshots":
                raise ValueError(f"{model.name}: its graph does more with its variables than read them (or calls "
                                 "other functions), which snapshots do not cover; use weights_as='constants'.")
        # how a later call tells whether the model's weights are still those of this copy (model_to_run)
        self._read_sources = self._source_buffers = self.weights_fingerprint = None
        if snapshot is not None:
            graph_def, inputs, outputs, self._snapshots, sources = snapshot
            self.weights_as = "snapshots"
            names = list(sources)
            self._read_sources = _buffer_reader([sources[name] for name in names])
            self._source_buffers = self._read_sources()
            # read once, eagerly: a traced read of every variable costs tens of MiB (slim RefineNet-101: 44)
            if self._source_buffers != tuple(_buffer_address(self._snapshots[name].read_value()) for name in names):
                self._read_sources = self._source_buffers = None  # not shared: fall back to the fingerprint
        else:
            graph_def, inputs, outputs = folding.constant_graph_def(concrete)
            self._snapshots = None
            self.weights_as = "constants"
        if self._source_buffers is None:
            self.weights_fingerprint = _weights_fingerprint(model)
        variables = self._snapshots
        batch_norms = _count_batch_norms(graph_def)
        self.folded_channel_reversals = folding.fold_channel_reversals(graph_def, outputs, variables) if fold else 0
        self.fused_convolutions = self.plain_weight_convolutions = 0
        if fold and variables is None:
            folding.fold_batch_norms(graph_def, outputs)
        elif fold:  # depthwise weights are small: folded into new constants; the rest fused by oneDNN
            folding.fold_batch_norms(graph_def, outputs, variables, convolutions=("DepthwiseConv2dNative",))
            if onednn:
                plain = folding.light_work_convolutions(graph_def, variables,
                                                        folding.output_strides(graph_def, inputs, variables))
                self.fused_convolutions = folding.fuse_onednn_convolutions(graph_def, outputs, variables, plain)
                self.plain_weight_convolutions = len(plain)
        self.folded_batch_norms = batch_norms - _count_batch_norms(graph_def)
        self.function = folding.function_from_graph_def(graph_def, inputs, outputs, captures=variables)
        del graph_def
        self._output_structure = concrete.structured_outputs  # a tensor, or a multi-task model's dict

    def _has_weights_of(self, model):
        """Whether ``model``'s weights are still those this copy was made of."""
        if self._source_buffers is not None:
            return self._read_sources() == self._source_buffers
        return self.weights_fingerprint == _weights_fingerprint(model)

    def __call__(self, images, training=False):
        if training:
            raise ValueError(f"{self.name} is frozen for inference; train the keras model it was made from.")
        flat = self.function(tf.cast(images, tf.float32))  # the frozen graph returns its outputs flattened
        return tf.nest.pack_sequence_as(self._output_structure, list(flat))

    def __repr__(self):
        return f"<FrozenModel {self.name!r}: {self.input_shape} -> {self.output_shape}, weights as {self.weights_as}>"


def _buffer_reader(variables):
    """A function that returns where each of ``variables`` keeps its values now: the addresses of their buffers.

    A snapshot (:func:`refinenet_tf.folding.snapshot_graph_def`) shares its variable's buffer, and TensorFlow
    copies a shared buffer before it writes to it (``assign``, an optimizer step, ``set_weights``,
    ``load_weights``), so the variable's address changes with any change of its values while the snapshot
    holds the old buffer (which no new buffer can then share an address with). One traced read of every
    variable: 1.5 ms for LW-RefineNet-50's 346 variables, where :func:`_weights_fingerprint` of their values took
    9.8 ms and raised the peak memory by about the weights' size (319 MiB for slim RefineNet-101's 297)."""
    read = tf.function(lambda: [variable.read_value() for variable in variables])
    return lambda: tuple(_buffer_address(value) for value in read())


def _buffer_address(tensor):
    return np.asarray(tensor).__array_interface__["data"][0]


def _count_batch_norms(graph_def):
    return sum(node.op.startswith("FusedBatchNorm") for node in graph_def.node)


def freeze(model, batch_shape=None, fold=True, weights_as="auto"):
    """The model's inference graph on a private copy of its weights (a :class:`FrozenModel`), for faster
    inference.

    ``batch_shape`` fixes the input shape (e.g. ``(1, 512, 512, 3)``); by default any batch and image size.
    On a CPU with oneDNN (TensorFlow's default on x86), a convolution whose weights do not change keeps them in
    the layout it computes with instead of converting them on every call, which makes the forward pass faster
    (``refinenet-tf benchmark`` measures both; the documentation's Benchmarks page has the figures).

    ``weights_as`` says how the frozen graph holds the weights: ``"snapshots"``, private ``tf.Variable`` copies
    that share memory with the model's weights until either changes, with each convolution written as oneDNN's
    fused convolution marked to keep its converted weights (:func:`refinenet_tf.folding.fuse_onednn_convolutions`),
    but for the deepest levels where they do at most 5 % of the work
    (:func:`refinenet_tf.folding.light_work_convolutions`);
    ``"constants"``, written into the graph (portable, what a SavedModel export keeps, but TensorFlow holds
    several copies of them: 5 times the Keras path's peak memory for slim RefineNet-101); ``"auto"`` (the
    default), snapshots where TensorFlow runs on oneDNN, else constants.
    With ``fold=True``, each inference-mode batch normalization after a convolution is folded into it or fused
    with it (:mod:`refinenet_tf.folding`), so that the convolution, its bias and the ReLU after it run as one
    kernel, and the RGB -> BGR channel reversal of a Caffe-style preprocessing (``keras.applications`` ResNets)
    is folded into the first convolution's weights (``fold=False`` keeps the graph as the model is built).
    Freezing takes seconds, so it pays for many images, not for one. Results equal the Keras model's up to
    float rounding.

    Example:
        >>> from refinenet_tf import RefineNet
        >>> model = RefineNet(num_classes=3, backbone="resnet50", backbone_weights=None)
        >>> frozen = freeze(model)
        >>> image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
        >>> bool((predict(frozen, image) == predict(model, image)).mean() > 0.99)
        True
    """
    if isinstance(model, FrozenModel):
        return model
    return FrozenModel(model, batch_shape, fold, weights_as)


#: what ``freeze=`` takes in :func:`predict`, :func:`predict_files` and :func:`refinenet_tf.evaluation.evaluate`.
FREEZE_CHOICES = ("auto", True, False)


def _check_freeze(freeze):
    """``freeze`` exactly as one of :data:`FREEZE_CHOICES`: ``0``, ``1`` or NumPy booleans compare equal to
    ``False``/``True`` but would not be read as them below, so they are refused rather than guessed."""
    if not (freeze is True or freeze is False or (isinstance(freeze, str) and freeze == "auto")):
        raise ValueError(f"freeze={freeze!r} must be one of {FREEZE_CHOICES} (the Python bools, or 'auto').")

#: ``freeze="auto"`` freezes for a call with at least this many images ...
AUTO_FREEZE_IMAGES = 8
#: ... or when the same image size comes back this many times in calls on one model (a serving loop).
AUTO_FREEZE_REPEATS = 3
#: ... and only when the memory the system has available exceeds this many times the model's weights, by how
#: :func:`freeze` holds them (``"auto"``: snapshots where oneDNN runs, else constants). Measured with
#: ``benchmarks/frozen_memory.py`` for slim RefineNet-101 at 512 (297 MiB of weights; docs/benchmarks.md): the
#: snapshots' peak 297 MiB over the Keras path's (oneDNN's converted copy of the weights but the deepest
#: level's, and freezing's own), the constants' about 5 GiB (17 times in make bench: the graph's constants,
#: TensorFlow's copies of its definition, oneDNN's copy).
AUTO_FREEZE_MEMORY_FACTORS = {"snapshots": 4, "constants": 24}

_FROZEN = weakref.WeakKeyDictionary()  # keras model -> its FrozenModel (refreshed when the weights change)
_SIZES_SEEN = weakref.WeakKeyDictionary()  # keras model -> {(height, width): calls at that size}
_FINGERPRINT_FUNCTIONS = weakref.WeakKeyDictionary()  # keras model -> its traced _weights_fingerprint


def _weights_fingerprint(model):
    """A fingerprint of the model's weights, cheap enough to take on every call that reuses a frozen copy:
    per variable, the sum of its float bits weighted by odd numbers along its last axis and along the rest, in
    int32 arithmetic that wraps around. One pass over the weights (the forward pass reads them too), and the
    same on every run (wrapping sums do not depend on the order). Any change of one element changes it (an odd
    weight times a non-zero change is not 0 modulo 2**32); a transpose or a swap of elements changes it unless
    the values' difference times the weights' difference is a multiple of 2**32.
    Training, ``load_weights`` or ``set_weights`` change it, so a frozen copy is never used with stale weights."""
    if not model.weights:
        return ()
    function = _FINGERPRINT_FUNCTIONS.get(model)
    if function is None:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def odd(count):
            return tf.range(count, dtype=tf.int32) * 2 + 1

        @tf.function
        def function():
            sums = []
            for variable in model_ref().weights:
                last = variable.shape[-1] if variable.shape.rank else 1
                rows = tf.reshape(tf.bitcast(tf.cast(variable, tf.float32), tf.int32), [-1, last])
                # the weighted row sums as an int32 matrix-vector product: the same sums as
                # reduce_sum(rows * odd(last), axis=1) in one pass, without a temporary of the weights' size
                sums.append(tf.reduce_sum(tf.linalg.matvec(rows, odd(last)) * odd(tf.shape(rows)[0])))
            return tf.stack(sums)

        _FINGERPRINT_FUNCTIONS[model] = function
    return tuple(function().numpy().tolist())


def _available_memory_bytes():
    """MemAvailable of /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _freezing_fits(model):
    available = _available_memory_bytes()
    weight_bytes = sum(int(np.prod(w.shape)) * w.dtype.size for w in model.weights)
    factor = AUTO_FREEZE_MEMORY_FACTORS["snapshots" if folding.onednn_available() else "constants"]
    return available is None or available > factor * weight_bytes


def model_to_run(model, freeze="auto", num_images=1, image_size=None):
    """The model :func:`predict`, :func:`predict_files` and :func:`refinenet_tf.evaluation.evaluate` run: the
    frozen graph (:func:`freeze`) where it pays, else ``model`` itself.

    Args:
        model: a keras model (or a :class:`FrozenModel`, returned as it is).
        freeze: ``True`` (always frozen), ``False`` (never), or ``"auto"``: frozen when the call brings at least
            ``AUTO_FREEZE_IMAGES`` images (``num_images``, ``None`` for an unknown, large count), or when
            ``image_size`` has come back ``AUTO_FREEZE_REPEATS`` times in calls on this model, or when a frozen
            copy already exists; and only when the available memory exceeds ``AUTO_FREEZE_MEMORY_FACTORS`` (for
            the way :func:`freeze` holds the weights here)
            times the weights. One image of a new size runs the Keras model: freezing costs seconds.

    The frozen copy is kept with the model and made afresh when its weights change (training, ``load_weights``),
    so a later call never runs stale weights.
    """
    _check_freeze(freeze)
    if isinstance(model, FrozenModel) or not isinstance(model, keras.Model) or freeze is False:
        return model
    cached = _FROZEN.get(model)
    if freeze == "auto":
        sizes = _SIZES_SEEN.setdefault(model, {})
        if image_size is not None:
            key = tuple(int(side) for side in image_size)
            if key in sizes or len(sizes) < 1024:  # bounded: a loop over random sizes does not grow it forever
                sizes[key] = sizes.get(key, 0) + 1
        repeats = sizes.get(tuple(image_size), 0) if image_size is not None else 0
        wanted = (cached is not None or num_images is None or num_images >= AUTO_FREEZE_IMAGES
                  or repeats >= AUTO_FREEZE_REPEATS)
        if not wanted or (cached is None and not _freezing_fits(model)):
            return model
    if cached is not None and cached._has_weights_of(model):
        return cached
    _FROZEN.pop(model, None)  # the stale copy goes before the new one is made
    frozen = globals()["freeze"](model)  # the module's freeze (the argument of that name is the choice)
    _FROZEN[model] = frozen
    return frozen


_SEGMENT_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {(scales, flip, max_side): traced function}


def _segment_function(model, scales, flip, max_side):
    """A traced :func:`segment` for uint8 batches of any size: traced once per model and augmentation, not per
    image size or call (a loop of :func:`predict` calls reuses it)."""
    functions = _SEGMENT_FUNCTIONS.setdefault(model, {})
    key = (tuple(scales), bool(flip), max_side)
    if key not in functions:
        functions[key] = _trace_segment(model, *key)
    return functions[key]


def _trace_segment(model, scales, flip, max_side):
    model_ref = weakref.ref(model)  # the cache must not keep the model alive

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True)
    def run(images):
        return segment(model_ref(), images, scales, flip, max_side)

    return run


def _as_uint8_batch(image, what):
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB image [height, width, 3], got shape {array.shape}; convert "
                         "grayscale or RGBA images to RGB first (refinenet_tf.data.decoding.read_image does).")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{what}: the image is empty (shape {array.shape}).")
    if array.dtype != np.uint8:
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 255 or not np.all(np.isfinite(array))):
            raise ValueError(f"{what}: pixel values must lie in [0, 255]; got [{np.nanmin(array)}, "
                             f"{np.nanmax(array)}].")
        array = np.rint(array).astype(np.uint8)
    return array[None]


def predict(model, images, scales=(1.0,), flip=False, max_side=None, return_probabilities=False, freeze="auto"):
    """Segments one image or a list of images of any sizes.

    Args:
        model: a segmentation model (see :func:`segment`).
        images: one ``[H, W, 3]`` RGB array (uint8, or floats in [0, 255]) or a sequence of them.
        scales, flip, max_side: test-time augmentation, see :func:`segment`.
        return_probabilities: also return the float32 ``[H, W, C]`` probabilities.
        freeze: run the frozen graph: ``"auto"`` (where it pays: many images, or an image size that repeats
            across calls; see :func:`model_to_run`), ``True`` or ``False``.

    Returns:
        int32 ``[H, W]`` class indices for one image, a list of them for a sequence; with
        ``return_probabilities``, ``(labels, probabilities)`` pairs instead.
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    batch = [images] if single else list(images)
    scales = _check_scales(scales)
    size = np.shape(batch[0])[:2] if len(batch) == 1 else None
    run = _segment_function(model_to_run(model, freeze, len(batch), size), scales, flip, max_side)
    results = []
    for index, image in enumerate(batch):
        probabilities = run(_as_uint8_batch(image, f"images[{index}]"))[0]
        labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32).numpy()  # TensorFlow's: multi-threaded
        results.append((labels, probabilities.numpy()) if return_probabilities else labels)
    return results[0] if single else results


# ---------------------------------------------------------------------------------------------- files

_GLOB_CHARACTERS = set("*?[")


def collect_images(inputs):
    """Expands files, folders (their image files, sorted) and glob patterns into a list of image paths.

    Folders contribute the files with an image extension (.jpg, .jpeg, .png, .bmp, any case); other files in
    them are not images and are left out. Raises ``FileNotFoundError`` for a path that does not exist or a
    pattern or folder that yields no image.
    """
    from refinenet_tf.data.sources import IMAGE_EXTENSIONS

    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, name)))
            if not found:
                raise FileNotFoundError(f"input folder {item!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        elif os.path.isfile(item):
            found = [item]
        elif _GLOB_CHARACTERS & set(item):
            found = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
            if not found:
                raise FileNotFoundError(f"input pattern {item!r} matches no file.")
        else:
            raise FileNotFoundError(f"input {item!r} does not exist; give image files, folders or glob patterns.")
        paths.extend(found)
    if not paths:
        raise ValueError("no input images given.")
    return list(dict.fromkeys(paths))  # the same file twice is predicted once


def _output_names(paths):
    """Maps each input to an output stem, and refuses two inputs that would write the same file."""
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise ValueError(f"inputs {stems[stem]!r} and {path!r} would both write {stem}.png; predict them into "
                             "separate output_dir= folders.")
        stems[stem] = path
    return {path: stem for stem, path in stems.items()}


MAX_PIXELS = 4096 * 4096


def _check_outputs_and_write_legend(paths, output_dir, suffixes, num_classes, palette, class_names):
    """The checks and the legend every file-writing prediction starts with: ``output_dir`` writable and never the
    folder of an input whose name an output (``NAME + suffix``) would take. Returns ``(output stems, palette)``."""
    stems = _output_names(paths)
    _files.writable_folder(output_dir, "output_dir=")
    inputs_real = {os.path.realpath(path) for path in paths}
    for path, stem in stems.items():
        for suffix in suffixes:
            if os.path.realpath(os.path.join(output_dir, stem + suffix)) in inputs_real:
                raise ValueError(f"output_dir={output_dir!r} would overwrite the input {path!r}; choose another "
                                 "folder.")
    palette = visualization.voc_palette() if palette is None else np.asarray(palette, np.uint8)
    visualization.save_image_png(os.path.join(output_dir, "legend.png"),
                                 visualization.legend(runs.class_names_for(num_classes, class_names), palette))
    return stems, palette


def _write_labels(stem, image, labels, palette, overlay_alpha):
    """``STEM.png`` (palette PNG of the labels) and ``STEM_overlay.png``; returns the first's path."""
    visualization.save_image_png(stem + "_overlay.png", visualization.overlay(image, labels, overlay_alpha, palette))
    return visualization.save_label_png(stem + ".png", labels, palette)


def _read_each_image(paths, num_classes, max_pixels, skip_errors, progress, failed, max_side_hint=True):
    """Yields ``(path, image)`` for each readable image of ``paths``, with a progress bar; an image above
    ``max_pixels`` or unreadable raises its one-line error, or with ``skip_errors`` goes into ``failed``
    (path -> message) and is passed over. ``max_side_hint``: the caller takes ``max_side=``, so say so."""
    from refinenet_tf.data import decoding

    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    for index, path in enumerate(paths):
        try:
            width, height = decoding.image_size(path)  # from the header: a huge image is refused undecoded
            if max_pixels is not None and width * height > max_pixels:
                raise decoding.DataError(
                    f"{path}: {width}x{height} pixels is above the limit of {max_pixels:,} "
                    f"(max_pixels=): its {num_classes}-class probabilities alone would take "
                    f"{4 * num_classes * width * height / 2**30:.1f} GiB; downscale the image or "
                    "raise max_pixels=" + (" (with max_side= to bound the model's input)." if max_side_hint else "."))
            image = decoding.read_image(path)
        except decoding.DataError as error:
            if not skip_errors:
                raise
            failed[path] = str(error)
        else:
            yield path, image
        if bar is not None:
            bar.update(index + 1)


def predict_files(model, inputs, output_dir, scales=(1.0,), flip=False, max_side=None, palette=None,
                  class_names=None, probabilities=False, overlay_alpha=0.5, skip_errors=False, progress=True,
                  max_pixels=MAX_PIXELS, freeze="auto"):
    """Segments image files and writes, for each ``NAME.ext``, into ``output_dir``:

    * ``NAME.png``: the class indices as an 8-bit palette PNG at the image's size (VOC ``SegmentationClass``
      format, VOC palette unless ``palette`` is given),
    * ``NAME_overlay.png``: the prediction blended over the image,
    * ``NAME_probabilities.npy`` (with ``probabilities``): float32 ``[H, W, C]`` class probabilities,

    plus ``legend.png`` (the classes' colours). Every file is written atomically (temporary file, then rename).

    Args:
        model: a segmentation model (see :func:`segment`).
        inputs: image files, folders or glob patterns (see :func:`collect_images`).
        output_dir: created if missing; must not be the folder of an input whose name would be overwritten.
        scales, flip, max_side: test-time augmentation, see :func:`segment`.
        palette: ``[K, 3]`` colours (default: VOC's).
        class_names: names for the legend (default: VOC's for 21 classes, else ``class_i``).
        probabilities: also write the probabilities.
        overlay_alpha: opacity of the colours in the overlay.
        skip_errors: go on past images that cannot be read (they are reported in the result) instead of stopping
            at the first.
        max_pixels: refuse images with more pixels (default 4096 x 4096): the probabilities alone take
            ``4 * classes`` bytes per pixel at the image's size. ``max_side`` bounds what the model sees, not
            this; ``None`` lifts the limit.
        progress: show a Keras progress bar.
        freeze: run the frozen graph: ``"auto"`` (for many images, see :func:`model_to_run`), ``True``, ``False``.

    Returns:
        A dict: ``written`` (input path -> its label PNG) and ``failed`` (input path -> error message).
    """
    _check_freeze(freeze)
    paths = collect_images(inputs)
    num_classes = model.output_shape[-1]
    stems, palette = _check_outputs_and_write_legend(paths, output_dir, (".png", "_overlay.png", "_probabilities.npy"),
                                                     num_classes, palette, class_names)
    run = _segment_function(model_to_run(model, freeze, len(paths)), _check_scales(scales), flip, max_side)
    written, failed = {}, {}
    for path, image in _read_each_image(paths, num_classes, max_pixels, skip_errors, progress, failed):
        result = run(image[None])[0].numpy()
        labels = result.argmax(-1)
        stem = os.path.join(output_dir, stems[path])
        written[path] = _write_labels(stem, image, labels, palette, overlay_alpha)
        if probabilities:
            with _files.atomic_path(stem + "_probabilities.npy", suffix=".npy") as temporary:
                np.save(temporary, result)
    return {"written": written, "failed": failed}


# ---------------------------------------------------------------------------------------------- joint (multi-task)

def segment_and_depth(model, images, flip=False):
    """Class probabilities and depth of a multi-task model at the images' own resolution.

    The model's ``"segmentation"`` logits and ``"depth"`` (metres) are resized bilinearly to the input size (the
    identity for a model that upsamples its outputs), the logits turned into probabilities by a softmax; with
    ``flip`` the mirrored image's outputs, mirrored back, are averaged in (probabilities and depth alike).

    Args:
        model: a model returning ``{"segmentation": [N, h, w, C] logits, "depth": [N, h, w, 1] metres}``
            (``refinenet_tf.multitask.MultiTaskRefineNet``).
        images: ``[N, H, W, 3]`` tensor, uint8 or float in [0, 255].
        flip: also average over horizontally mirrored inputs.

    Returns:
        ``(probabilities [N, H, W, C] float32, depth [N, H, W] float32 metres)``.
    """
    images = tf.cast(images, tf.float32)
    size = layers._spatial_size(images)
    probabilities, depth = 0.0, 0.0
    views = (False, True) if flip else (False,)
    for mirrored in views:
        outputs = model(tf.reverse(images, axis=[2]) if mirrored else images, training=False)
        logits = _resize_to(tf.cast(outputs["segmentation"], tf.float32), size)
        view_depth = tf.cast(outputs["depth"], tf.float32)
        if view_depth.shape.rank == 3:
            view_depth = view_depth[..., None]
        view_depth = _resize_to(view_depth, size)[..., 0]
        if mirrored:
            logits, view_depth = tf.reverse(logits, axis=[2]), tf.reverse(view_depth, axis=[2])
        probabilities += tf.nn.softmax(logits, axis=-1)
        depth += view_depth
    return probabilities / len(views), depth / len(views)


_JOINT_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {flip: traced function}


def _joint_function(model, flip):
    """A traced :func:`segment_and_depth` for uint8 batches of any size, once per model and flip."""
    functions = _JOINT_FUNCTIONS.setdefault(model, {})
    if bool(flip) not in functions:
        model_ref = weakref.ref(model)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True)
        def run(images):
            return segment_and_depth(model_ref(), images, bool(flip))

        functions[bool(flip)] = run
    return functions[bool(flip)]


def predict_joint(model, image, flip=False):
    """Labels and depth of one ``[H, W, 3]`` RGB image from a multi-task model.

    Returns:
        ``(labels [H, W] int32, depth [H, W] float32 metres)``.

    Example:
        >>> import tf_keras
        >>> inputs = tf_keras.Input([None, None, 3])
        >>> model = tf_keras.Model(inputs, {"segmentation": tf_keras.layers.Conv2D(3, 1)(inputs),
        ...                                 "depth": tf_keras.layers.Conv2D(1, 1)(inputs)})
        >>> labels, depth = predict_joint(model, np.zeros((37, 53, 3), np.uint8))
        >>> labels.shape, depth.shape, depth.dtype
        ((37, 53), (37, 53), dtype('float32'))
    """
    probabilities, depth = _joint_function(model, flip)(_as_uint8_batch(image, "image"))
    return probabilities[0].numpy().argmax(-1).astype(np.int32), depth[0].numpy()


def predict_joint_files(model, inputs, output_dir, flip=False, palette=None, class_names=None, max_depth=None,
                        overlay_alpha=0.5, skip_errors=False, progress=True, max_pixels=MAX_PIXELS, freeze="auto"):
    """Segments image files and estimates their depth with a multi-task model; writes, for each ``NAME.ext``:

    * ``NAME.png``: the class indices as an 8-bit palette PNG at the image's size (as :func:`predict_files`),
    * ``NAME_overlay.png``: the prediction blended over the image,
    * ``NAME_depth.png``: the depth colour-mapped (near yellow to far dark blue,
      :func:`refinenet_tf.visualization.colorize_depth`),
    * ``NAME_depth_mm.png``: the depth as a 16-bit PNG in millimetres (``depth_scale=1000`` of the folder spec),

    plus ``legend.png``. Every file is written atomically. Arguments are those of :func:`predict_files`;
    ``max_depth`` fixes the depth drawn darkest (default: each image's farthest).

    Returns:
        A dict: ``written`` (input path -> its label PNG) and ``failed`` (input path -> error message).
    """
    _check_freeze(freeze)
    paths = collect_images(inputs)
    num_classes = runs.output_classes(model)
    stems, palette = _check_outputs_and_write_legend(paths, output_dir,
                                                     (".png", "_overlay.png", "_depth.png", "_depth_mm.png"),
                                                     num_classes, palette, class_names)
    run = _joint_function(model_to_run(model, freeze, len(paths)), flip)
    written, failed = {}, {}
    for path, image in _read_each_image(paths, num_classes, max_pixels, skip_errors, progress, failed,
                                        max_side_hint=False):
        probabilities, depth = run(image[None])
        labels, depth = probabilities[0].numpy().argmax(-1), depth[0].numpy()
        stem = os.path.join(output_dir, stems[path])
        written[path] = _write_labels(stem, image, labels, palette, overlay_alpha)
        visualization.save_image_png(stem + "_depth.png", visualization.colorize_depth(depth, max_depth))
        visualization.save_depth_png(stem + "_depth_mm.png", np.maximum(depth, 0.0))
    return {"written": written, "failed": failed}
