"""``tf.data`` pipelines that feed ``model.fit`` / ``model.evaluate``: source -> decode -> transforms -> batches.

Example:
    >>> import tempfile
    >>> import refinenet_tf.data as data
    >>> from refinenet_tf.data import synthetic
    >>> voc = synthetic.write_shapes_dataset(tempfile.mkdtemp(), num_train=2, num_val=1, height=40, width=50)
    >>> dataset = data.make_dataset(f"voc:{voc}", "train", batch_size=2, crop_size=32, seed=0)
    >>> images, masks = next(iter(dataset))
    >>> images.shape, masks.shape
    (TensorShape([2, 32, 32, 3]), TensorShape([2, 32, 32]))
"""

import tensorflow as tf

from refinenet_tf._checks import positive_int
from refinenet_tf.data import decoding, sources, transforms

__all__ = ["make_dataset", "read_examples"]

_AUTOTUNE = tf.data.AUTOTUNE


def _file_examples(source):
    if source.has_depth:
        return _rgbd_file_examples(source)
    ids, images, masks = (list(column) for column in zip(*source.examples))
    dataset = tf.data.Dataset.from_tensor_slices({"id": ids, "image_path": images, "mask_path": masks})
    num_classes = source.num_classes
    ignore_value = source.ignore_value

    def read(image_path, mask_path):
        return decoding.read_pair(image_path.decode(), mask_path.decode(), num_classes, ignore_value)

    def decode(example):
        image, mask = tf.numpy_function(read, [example["image_path"], example["mask_path"]], [tf.uint8, tf.uint8],
                                        stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        mask = tf.ensure_shape(mask, [None, None])
        return {"id": example["id"], "image": image, "mask": mask}

    return dataset, decode


def _rgbd_file_examples(source):
    ids, images, masks = (list(column) for column in zip(*source.examples))
    dataset = tf.data.Dataset.from_tensor_slices({"id": ids, "image_path": images, "mask_path": masks,
                                                  "depth_path": list(source.depths)})
    num_classes, ignore_value, depth_scale = source.num_classes, source.ignore_value, source.depth_scale

    def read(image_path, mask_path, depth_path):
        return decoding.read_example(image_path.decode(), mask_path.decode(), depth_path.decode(), num_classes,
                                     ignore_value, depth_scale)

    def decode(example):
        image, mask, depth = tf.numpy_function(
            read, [example["image_path"], example["mask_path"], example["depth_path"]],
            [tf.uint8, tf.uint8, tf.float32], stateful=False)
        return {"id": example["id"], "image": tf.ensure_shape(image, [None, None, 3]),
                "mask": tf.ensure_shape(mask, [None, None]), "depth": tf.ensure_shape(depth, [None, None])}

    return dataset, decode


def _tfds_examples(source):
    import tensorflow_datasets as tfds

    from refinenet_tf.data import nyu_depth_v2_segmentation, voc2012_segmentation  # noqa: F401  (registers them)

    try:
        dataset = tfds.load(source.name, split=source.split, data_dir=source.data_dir, download=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"tfds:{source.name} ({source.split}) is not prepared in {source.data_dir or '~/tensorflow_datasets'}: "
            f"{str(error).splitlines()[0]}; prepare it first with tfds.builder({source.name!r}, "
            "data_dir=...).download_and_prepare().") from None
    num_classes, ignore_value = source.num_classes, source.ignore_value

    def decode(element):
        if source.has_depth:
            image, mask, depth = source.to_image_and_mask(element)
        else:
            image, mask = source.to_image_and_mask(element)
        mask = tf.cast(mask, tf.uint8)
        name = element.get("file_name", tf.constant(""))
        bad = tf.logical_and(mask >= num_classes, mask != ignore_value)
        tf.debugging.assert_equal(tf.reduce_any(bad), False, message=(
            f"tfds:{source.name}: a mask has values outside [0, {num_classes}) and not {ignore_value}"))
        example = {"id": name, "image": tf.ensure_shape(image, [None, None, 3]), "mask": mask}
        if source.has_depth:
            example["depth"] = tf.ensure_shape(tf.cast(depth, tf.float32), [None, None])
        return example

    return dataset, decode


def read_examples(source, split="train", num_classes=None, ignore_value=None):
    """The decoded, validated examples of a source: a dataset of ``{"id", "image", "mask"}`` dicts.

    RGB-D sources (a folder spec with ``depth=``, ``tfds:nyu_depth_v2_segmentation``) add ``"depth"``: ``[H, W]``
    float32 metres, 0 where missing; a missing mask is all ``ignore_value``.

    Args:
        source: a spec string (see :mod:`refinenet_tf.data.sources`) or a resolved source.
        split: the split, for spec strings.
        num_classes, ignore_value: override the source's.
    """
    if isinstance(source, str):
        source = sources.resolve(source, split, num_classes=num_classes, ignore_value=ignore_value)
    if isinstance(source, sources.FileSource):
        dataset, decode = _file_examples(source)
    elif isinstance(source, sources.TfdsSource):
        dataset, decode = _tfds_examples(source)
    else:
        raise TypeError(f"source must be a spec string, FileSource or TfdsSource, got {type(source).__name__}.")
    return dataset.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=True)


def make_dataset(source, split="train", batch_size=8, training=None, crop_size=512, min_scale=0.5, max_scale=2.0,
                 flip=True, color=False, shuffle=None, seed=None, cache=False, repeat=False, num_classes=None,
                 ignore_value=None, drop_remainder=None, scale_depth=False):
    """A batched ``tf.data.Dataset`` of ``(images, masks)`` for ``model.fit`` / ``model.evaluate``.

    Images are float32 RGB in [0, 255] (the models preprocess inside); masks are int32 class indices with
    ``ignore_value`` (255) where pixels do not count. RGB-D sources give ``(images, {"segmentation": masks,
    "depth": depths})`` instead, for a model with outputs named ``segmentation`` and ``depth``; depths are float32
    metres, 0 where missing (see :func:`refinenet_tf.data.transforms.train_transform_rgbd`).

    Args:
        source: a spec string (``voc:PATH``, ``voc_aug:PATH``, ``folder:IMAGES:MASKS``, ``tfds:NAME``) or a
            resolved source.
        split: ``train``, ``val``, ...
        batch_size: examples per batch.
        training: random scale / pad / crop / flip (/ colour) when true; whole images otherwise. Default:
            ``split`` starts with ``"train"``.
        crop_size: side of the square training crops.
        min_scale, max_scale: range of the random rescaling (0.5-2.0 as in the slim and official recipes).
        flip: random horizontal flips.
        color: random colour distortion (slim's ``distort_color``).
        shuffle: shuffle examples (default: when training).
        seed: makes shuffling and augmentation reproducible.
        cache: cache the decoded examples in memory (``True``) or in a file (a path).
        repeat: repeat forever.
        num_classes, ignore_value: override the source's.
        drop_remainder: drop the last incomplete batch (default: when training).
        scale_depth: RGB-D training: divide depth by the random zoom factor (see
            :func:`~refinenet_tf.data.transforms.train_transform_rgbd` for why it is off by default).

    Returns:
        A ``tf.data.Dataset``. Evaluation batches of several images are padded to the largest one (images with
        zeros, masks with ``ignore_value``), so padding never counts in a metric; ``batch_size=1`` evaluates
        every image at its own size (depth is padded with 0, missing).
    """
    batch_size = positive_int("batch_size", batch_size)
    crop_size = positive_int("crop_size", crop_size)
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}.")
    if isinstance(source, str):
        source = sources.resolve(source, split, num_classes=num_classes, ignore_value=ignore_value)
    training = split.startswith("train") if training is None else training
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    ignore = source.ignore_value
    has_depth = getattr(source, "has_depth", False)

    dataset = read_examples(source)
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def augment(example, example_seed):
            if has_depth:
                image, mask, depth = transforms.train_transform_rgbd(
                    example["image"], example["mask"], example["depth"], example_seed, crop_size=crop_size,
                    min_scale=min_scale, max_scale=max_scale, flip=flip, color=color, ignore_value=ignore,
                    scale_depth=scale_depth)
                return image, {"segmentation": tf.cast(mask, tf.int32), "depth": depth}
            image, mask = transforms.train_transform(
                example["image"], example["mask"], example_seed, crop_size=crop_size, min_scale=min_scale,
                max_scale=max_scale, flip=flip, color=color, ignore_value=ignore)
            return image, tf.cast(mask, tf.int32)

        dataset = dataset.map(augment, num_parallel_calls=_AUTOTUNE, deterministic=seed is not None)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    elif has_depth:
        dataset = dataset.map(lambda e: (tf.cast(e["image"], tf.float32), {
            "segmentation": tf.cast(e["mask"], tf.int32), "depth": e["depth"]}), num_parallel_calls=_AUTOTUNE)
        if batch_size == 1:
            dataset = dataset.batch(1)
        else:
            dataset = dataset.padded_batch(
                batch_size, padded_shapes=([None, None, 3], {"segmentation": [None, None], "depth": [None, None]}),
                padding_values=(tf.constant(0.0), {"segmentation": tf.constant(ignore, tf.int32),
                                                   "depth": tf.constant(0.0)}), drop_remainder=drop_remainder)
    else:
        dataset = dataset.map(lambda e: (tf.cast(e["image"], tf.float32), tf.cast(e["mask"], tf.int32)),
                              num_parallel_calls=_AUTOTUNE)
        if batch_size == 1:
            dataset = dataset.batch(1)
        else:
            dataset = dataset.padded_batch(
                batch_size, padded_shapes=([None, None, 3], [None, None]),
                padding_values=(tf.constant(0.0), tf.constant(ignore, tf.int32)), drop_remainder=drop_remainder)
    return dataset.prefetch(_AUTOTUNE)
