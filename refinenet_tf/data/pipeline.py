"""``tf.data`` pipelines that feed ``model.fit`` / ``model.evaluate``: source -> decode -> transforms -> batches.

Training shuffles before decoding, anew every epoch: a file source shuffles its whole list of names (so an
epoch is a permutation of all examples, and its first batches come from across the whole list), then reads and
decodes in parallel; memory holds only the few examples in flight, never a buffer of decoded images. A TFDS
source shuffles its file shards, then mixes examples in a small buffer of decoded ones
(:data:`DECODED_SHUFFLE_BUFFER`). Evaluation reads in list order.

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

__all__ = ["DECODED_SHUFFLE_BUFFER", "make_dataset", "read_examples"]

_AUTOTUNE = tf.data.AUTOTUNE

#: Decoded examples a shuffled TFDS source holds to mix its shards (about 50 MB of VOC-sized examples).
DECODED_SHUFFLE_BUFFER = 64


def _read_file(path):
    """The file's bytes; ``""`` for an empty path (a label the example does not have)."""
    return tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: tf.constant(""))


def _file_examples(source):
    """``(names, load, decode)``: a dataset of the examples' ids and paths, in list order; ``load`` adds the
    files' bytes (``tf.io.read_file``); ``decode`` turns them into the validated ``{"id", "image", "mask"[,
    "depth"]}``."""
    ids, images, masks = (list(column) for column in zip(*source.examples))
    columns = {"id": ids, "image_path": images, "mask_path": masks}
    if source.has_depth:
        columns["depth_path"] = list(source.depths)
    names = tf.data.Dataset.from_tensor_slices(columns)
    labels = ("image", "mask", "depth") if source.has_depth else ("image", "mask")
    num_classes, ignore_value, depth_scale = source.num_classes, source.ignore_value, source.depth_scale

    def load(example):
        return {**example, **{f"{label}_contents": _read_file(example[f"{label}_path"]) for label in labels}}

    def read(*paths_and_contents):
        paths = [path.decode() for path in paths_and_contents[:len(labels)]]
        contents = dict(zip(("image_contents", "mask_contents", "depth_contents"), paths_and_contents[len(labels):]))
        if source.has_depth:
            return decoding.read_example(*paths, num_classes, ignore_value, depth_scale, **contents)
        return decoding.read_pair(*paths, num_classes, ignore_value, **contents)

    def decode(example):
        arguments = [example[f"{label}_path"] for label in labels] + [example[f"{label}_contents"] for label in labels]
        arrays = tf.numpy_function(read, arguments, [tf.uint8, tf.uint8, tf.float32][:len(labels)], stateful=False)
        decoded = {"id": example["id"], "image": tf.ensure_shape(arrays[0], [None, None, 3]),
                   "mask": tf.ensure_shape(arrays[1], [None, None])}
        if source.has_depth:
            decoded["depth"] = tf.ensure_shape(arrays[2], [None, None])
        return decoded

    return names, load, decode


def _file_pipeline(source, shuffle, seed, repeat, cache):
    """Shuffles the list of names (all of it, anew each epoch), then reads and decodes in parallel; with
    ``cache``, the files' bytes are read once, cached, and their list shuffled before decoding."""
    names, load, decode = _file_examples(source)
    count = len(source.examples)
    deterministic = seed is not None or not shuffle
    dataset = names.map(load, num_parallel_calls=_AUTOTUNE, deterministic=True).cache(
        "" if cache is True else str(cache)) if cache else names
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    read = decode if cache else (lambda example: decode(load(example)))
    return dataset.map(read, num_parallel_calls=_AUTOTUNE, deterministic=deterministic)


def _tfds_pipeline(source, shuffle, seed, repeat, cache, shuffle_buffer):
    """Reads a prepared TFDS split; shuffling shuffles its file shards every epoch (``shuffle_files`` with a
    seeded ``tfds.ReadConfig``), then mixes examples in a buffer of ``shuffle_buffer`` decoded ones."""
    import tensorflow_datasets as tfds

    from refinenet_tf.data import nyu_depth_v2_segmentation, voc2012_segmentation  # noqa: F401  (registers them)

    if cache:
        raise ValueError(f"cache={cache!r} with tfds:{source.name}: a TFDS split is read from prepared local files "
                         "and its examples come decoded, so caching them would hold the whole decoded split in "
                         "memory; drop cache= (it applies to voc:, voc_aug: and folder: sources).")
    read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True) if shuffle else None
    try:
        dataset = tfds.load(source.name, split=source.split, data_dir=source.data_dir, download=False,
                            shuffle_files=bool(shuffle), read_config=read_config)
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

    dataset = dataset.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=seed is not None or not shuffle)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.repeat() if repeat else dataset


def read_examples(source, split="train", num_classes=None, ignore_value=None, shuffle=False, seed=None,
                  repeat=False, cache=False, shuffle_buffer=DECODED_SHUFFLE_BUFFER):
    """The decoded, validated examples of a source: a dataset of ``{"id", "image", "mask"}`` dicts.

    RGB-D sources (a folder spec with ``depth=``, ``tfds:nyu_depth_v2_segmentation``) add ``"depth"``: ``[H, W]``
    float32 metres, 0 where missing; a missing mask is all ``ignore_value``.

    By default the examples come in list order, once. ``shuffle`` shuffles every epoch before decoding: file
    sources shuffle their whole list of names (each epoch, a new permutation of all of it, and no decoded
    example waits in a buffer); TFDS sources shuffle their file shards and then mix examples in a buffer of
    ``shuffle_buffer`` decoded ones. Decoding runs in parallel, in a reproducible order when ``seed`` is given or
    nothing is shuffled.

    Args:
        source: a spec string (see :mod:`refinenet_tf.data.sources`) or a resolved source.
        split: the split, for spec strings.
        num_classes, ignore_value: override the source's.
        shuffle: shuffle anew every epoch (see above).
        seed: makes the shuffled orders reproducible (each epoch's still differs from the last).
        repeat: repeat forever; with ``shuffle``, every epoch a new order.
        cache: file sources: keep the files' bytes (encoded, as on disk) in memory (``True``) or in a cache file
            (a path), read on the first epoch; every epoch still shuffles all of them and decodes afresh.
            Decoded pixels are never cached. Not for TFDS sources (their examples come decoded).
        shuffle_buffer: decoded examples held to mix a TFDS source's shards (file sources hold none).

    Example:
        >>> import tempfile
        >>> from refinenet_tf.data import synthetic
        >>> voc = synthetic.write_shapes_dataset(tempfile.mkdtemp(), num_train=4, num_val=1, height=8, width=8)
        >>> [e["id"].numpy().decode() for e in read_examples(f"voc:{voc}")]
        ['train_00000', 'train_00001', 'train_00002', 'train_00003']
        >>> epochs = read_examples(f"voc:{voc}", shuffle=True, seed=0, repeat=True).take(8)
        >>> ids = [e["id"].numpy().decode()[-1] for e in epochs]
        >>> sorted(ids[:4]) == sorted(ids[4:]) == ['0', '1', '2', '3']
        True
    """
    if isinstance(source, str):
        source = sources.resolve(source, split, num_classes=num_classes, ignore_value=ignore_value)
    shuffle_buffer = positive_int("shuffle_buffer", shuffle_buffer, hint=f"decoded examples, e.g. "
                                  f"{DECODED_SHUFFLE_BUFFER}")
    if isinstance(source, sources.FileSource):
        return _file_pipeline(source, shuffle, seed, repeat, cache)
    if isinstance(source, sources.TfdsSource):
        return _tfds_pipeline(source, shuffle, seed, repeat, cache, shuffle_buffer)
    raise TypeError(f"source must be a spec string, FileSource or TfdsSource, got {type(source).__name__}.")


def make_dataset(source, split="train", batch_size=8, training=None, crop_size=512, min_scale=0.5, max_scale=2.0,
                 flip=True, color=False, shuffle=None, seed=None, cache=False, repeat=False, num_classes=None,
                 ignore_value=None, drop_remainder=None, scale_depth=False, shuffle_buffer=DECODED_SHUFFLE_BUFFER):
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
        shuffle: shuffle the examples anew every epoch, before decoding (default: when training): file sources
            shuffle their whole list of names, TFDS sources their file shards and then a buffer of
            ``shuffle_buffer`` decoded examples (see :func:`read_examples`). Unshuffled, examples come in list
            order.
        seed: makes shuffling and augmentation reproducible (each epoch's order still differs from the last).
        cache: file sources: keep the files' bytes (encoded, as on disk) in memory (``True``) or in a cache file
            (a path) after the first epoch; every epoch still shuffles all of them and decodes afresh. Decoded
            pixels are never cached (that is the whole decoded dataset in memory, and it would freeze the order).
        repeat: repeat forever (with ``shuffle``, each epoch a new order).
        num_classes, ignore_value: override the source's.
        drop_remainder: drop the last incomplete batch (default: when training).
        scale_depth: RGB-D training: divide depth by the random zoom factor (see
            :func:`~refinenet_tf.data.transforms.train_transform_rgbd` for why it is off by default).
        shuffle_buffer: decoded examples a shuffled TFDS source holds to mix its shards.

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

    dataset = read_examples(source, shuffle=shuffle, seed=seed, repeat=repeat, cache=cache,
                            shuffle_buffer=shuffle_buffer)

    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip((dataset, seeds))
        options = dict(crop_size=crop_size, min_scale=min_scale, max_scale=max_scale, flip=flip, color=color,
                       ignore_value=ignore)

        def augment(example, example_seed):
            if has_depth:
                image, mask, depth = transforms.train_transform_rgbd(
                    example["image"], example["mask"], example["depth"], example_seed, scale_depth=scale_depth,
                    **options)
                return image, {"segmentation": tf.cast(mask, tf.int32), "depth": depth}
            image, mask = transforms.train_transform(example["image"], example["mask"], example_seed, **options)
            return image, tf.cast(mask, tf.int32)

        dataset = dataset.map(augment, num_parallel_calls=_AUTOTUNE, deterministic=seed is not None)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    else:
        def whole(e):
            mask = tf.cast(e["mask"], tf.int32)
            return tf.cast(e["image"], tf.float32), {"segmentation": mask, "depth": e["depth"]} if has_depth else mask

        dataset = dataset.map(whole, num_parallel_calls=_AUTOTUNE)
        label_shape, label_padding = [None, None], tf.constant(ignore, tf.int32)
        if has_depth:
            label_shape = {"segmentation": label_shape, "depth": [None, None]}
            label_padding = {"segmentation": label_padding, "depth": tf.constant(0.0)}
        if batch_size == 1:
            dataset = dataset.batch(1)
        else:
            dataset = dataset.padded_batch(batch_size, padded_shapes=([None, None, 3], label_shape),
                                           padding_values=(tf.constant(0.0), label_padding),
                                           drop_remainder=drop_remainder)
    return dataset.prefetch(_AUTOTUNE)
