"""Image/mask transforms as small pure TensorFlow functions.

Each takes ``image`` (``[H, W, 3]``, RGB in [0, 255]) and ``mask`` (``[H, W]`` class indices), and the random
ones a ``seed`` (a ``[2]`` int tensor, as the ``tf.random.stateless_*`` ops take): the same seed gives the
same result, so a pipeline seeded once is reproducible. Images become float32 and stay in [0, 255]; masks keep
their dtype and are never interpolated (nearest neighbour), and padding marks them ``ignore_value``.

Depth maps (``[H, W]`` float32 metres, 0 = missing) go through :func:`train_transform_rgbd`, which moves them with
the image exactly as the mask moves: nearest-neighbour resizing (a missing pixel is never blended with valid
ones, nor two surfaces into a depth that exists on neither), padding with 0 (missing), the same crop and flip.
"""

import tensorflow as tf

__all__ = ["IMAGENET_MEAN_RGB", "color_distortion", "pad_to_size", "random_crop", "random_flip", "random_scale",
           "split_seed", "train_transform", "train_transform_rgbd"]

#: Padding colour for images: the ImageNet mean, which the backbones' preprocessing maps to about zero.
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)


def split_seed(seed, count):
    """``count`` independent ``[2]`` seeds from one (``tf.random.experimental.stateless_split``)."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), count))


def random_scale(image, mask, seed, min_scale=0.5, max_scale=2.0):
    """Rescales by a factor drawn uniformly from ``[min_scale, max_scale]``: bilinear image, nearest mask.

    Example:
        >>> image, mask = random_scale(tf.zeros([10, 20, 3]), tf.zeros([10, 20], tf.uint8), [1, 2], 2.0, 2.0)
        >>> image.shape, mask.shape
        (TensorShape([20, 40, 3]), TensorShape([20, 40]))
    """
    scale = tf.random.stateless_uniform([], seed, min_scale, max_scale)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
    size = tf.maximum(size, 1)
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def pad_to_size(image, mask, height, width, ignore_value=255):
    """Pads bottom/right up to at least ``height`` x ``width``: image with the mean colour, mask with ignore."""
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    image = tf.cast(image, tf.float32) - IMAGENET_MEAN_RGB
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]]) + IMAGENET_MEAN_RGB
    mask = tf.pad(mask, [[0, pad_h], [0, pad_w]], constant_values=tf.cast(ignore_value, mask.dtype))
    return image, mask


def random_crop(image, mask, height, width, seed):
    """Crops the same random ``height`` x ``width`` window from both (inputs must be at least that large)."""
    shape = tf.shape(image)
    limit = tf.stack([shape[0] - height + 1, shape[1] - width + 1])
    offset = tf.random.stateless_uniform([2], seed, 0, tf.int32.max, dtype=tf.int32) % limit
    image = tf.slice(image, [offset[0], offset[1], 0], [height, width, -1])
    mask = tf.slice(mask, [offset[0], offset[1]], [height, width])
    return image, mask


def random_flip(image, mask, seed):
    """Flips both left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    return image, mask


def color_distortion(image, seed):
    """Random brightness, saturation, hue and contrast, in the order of slim's ``distort_color`` (ordering 0)."""
    seeds = split_seed(seed, 4)
    x = tf.cast(image, tf.float32) / 255.0
    x = tf.image.stateless_random_brightness(x, 32.0 / 255.0, seeds[0])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 0.5, 1.5, seeds[1])
    x = tf.image.stateless_random_hue(x, 0.2, seeds[2])
    x = tf.image.stateless_random_contrast(x, 0.5, 1.5, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def train_transform(image, mask, seed, crop_size=512, min_scale=0.5, max_scale=2.0, flip=True, color=False,
                    ignore_value=255):
    """The training augmentation: random scale, pad to the crop, random crop, flip, optional colour.

    Returns:
        ``(image [crop, crop, 3] float32 in [0, 255], mask [crop, crop])``.
    """
    scale_seed, crop_seed, flip_seed, color_seed = split_seed(seed, 4)
    if (min_scale, max_scale) != (1.0, 1.0):
        image, mask = random_scale(image, mask, scale_seed, min_scale, max_scale)
    image, mask = pad_to_size(image, mask, crop_size, crop_size, ignore_value)
    image, mask = random_crop(image, mask, crop_size, crop_size, crop_seed)
    if flip:
        image, mask = random_flip(image, mask, flip_seed)
    if color:
        image = color_distortion(image, color_seed)
    image = tf.ensure_shape(tf.cast(image, tf.float32), [crop_size, crop_size, 3])
    mask = tf.ensure_shape(mask, [crop_size, crop_size])
    return image, mask


def train_transform_rgbd(image, mask, depth, seed, crop_size=512, min_scale=0.5, max_scale=2.0, flip=True,
                         color=False, ignore_value=255, scale_depth=False):
    """:func:`train_transform` for RGB-D examples: the depth map follows the image pixel for pixel.

    For the same ``seed`` the image and mask are exactly those of :func:`train_transform`; the depth is resized
    by nearest neighbour to the image's new size (as the mask), padded with 0 (missing), cropped and flipped with
    them.

    Args:
        image, mask, seed, crop_size, min_scale, max_scale, flip, color, ignore_value: as
            :func:`train_transform`.
        depth: ``[H, W]`` float32 depth in metres, 0 where missing.
        scale_depth: divide the depth by the zoom factor of the random scale (DenseTorch's ``ResizeAndScale``
            does): zooming in by 2 then looks like a camera twice as close. Off by default because that is only
            right when the augmentation imitates moving the camera with fixed intrinsics; zooming also changes
            the apparent focal length, under which the metric depth of every pixel is unchanged, and a model
            that should read depth from known object sizes learns a contradiction from the division. Turn it on
            to follow DenseTorch's NYUDv2 recipe.

    Returns:
        ``(image [crop, crop, 3] float32, mask [crop, crop], depth [crop, crop] float32)``.

    Example:
        >>> image, mask, depth = train_transform_rgbd(
        ...     tf.zeros([33, 47, 3]), tf.zeros([33, 47], tf.uint8), tf.ones([33, 47]), [3, 4], crop_size=40)
        >>> image.shape, mask.shape, depth.shape
        (TensorShape([40, 40, 3]), TensorShape([40, 40]), TensorShape([40, 40]))
    """
    scale_seed, crop_seed, flip_seed, color_seed = split_seed(seed, 4)
    depth = tf.cast(depth, tf.float32)
    if (min_scale, max_scale) != (1.0, 1.0):
        image, mask = random_scale(image, mask, scale_seed, min_scale, max_scale)
        depth = tf.image.resize(depth[..., None], tf.shape(image)[:2], method="nearest")[..., 0]
        if scale_depth:
            depth = depth / tf.random.stateless_uniform([], scale_seed, min_scale, max_scale)
    image, mask = pad_to_size(image, mask, crop_size, crop_size, ignore_value)
    shape = tf.shape(depth)
    depth = tf.pad(depth, [[0, tf.shape(image)[0] - shape[0]], [0, tf.shape(image)[1] - shape[1]]])
    # image and depth as one tensor, so that crop and flip cannot move them apart
    image_and_depth = tf.concat([tf.cast(image, tf.float32), depth[..., None]], axis=-1)
    image_and_depth, mask = random_crop(image_and_depth, mask, crop_size, crop_size, crop_seed)
    if flip:
        image_and_depth, mask = random_flip(image_and_depth, mask, flip_seed)
    image, depth = image_and_depth[..., :3], image_and_depth[..., 3]
    if color:
        image = color_distortion(image, color_seed)
    image = tf.ensure_shape(tf.cast(image, tf.float32), [crop_size, crop_size, 3])
    mask = tf.ensure_shape(mask, [crop_size, crop_size])
    depth = tf.ensure_shape(depth, [crop_size, crop_size])
    return image, mask, depth
