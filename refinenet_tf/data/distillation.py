"""Filling missing labels with a teacher's predictions (the distillation of Nekrasov et al., ICRA 2019).

In the paper, a large teacher network annotates the images that lack a segmentation mask, so that the compact
joint network learns both tasks on every image. Here the teacher is any Keras model returning
``{"segmentation": logits, "depth": metres}``: a model in memory, a ``.keras`` file or a run folder
(read by :func:`refinenet_tf.load_model`).
"""

import tensorflow as tf

__all__ = ["fill_missing_labels"]


def _as_model(teacher):
    if isinstance(teacher, str) or hasattr(teacher, "__fspath__"):
        from refinenet_tf.models.saving import load_model

        return load_model(teacher, compile=False)
    return teacher


def fill_missing_labels(dataset, teacher, ignore_class=255, fill_masks=True, fill_depth=True):
    """Replaces each missing label of a multi-task dataset with the teacher's prediction.

    An example's mask is missing when every pixel is ``ignore_class`` (it becomes the teacher's arg-max), its
    depth when every pixel is 0 (it becomes the teacher's depth). Present labels, and the partly missing ones
    (holes in a depth map, 255 borders in a mask), are left exactly as they are. Meant for training pipelines:
    evaluation should count only true labels.

    Args:
        dataset: a ``tf.data.Dataset`` of ``(images, {"segmentation": masks, "depth": depths})``, batched
            (``[B, H, W, 3]``, ``[B, H, W]``, ``[B, H, W]``) or not (no ``B``), as
            :func:`refinenet_tf.data.make_dataset` gives for RGB-D sources.
        teacher: a Keras model returning ``{"segmentation": [B, h, w, classes] logits, "depth": [B, h, w(, 1)]}``
            from the same images (outputs of another size are resized bilinearly to the labels'), or the path
            of a ``.keras`` file or run folder holding one.
        ignore_class: the mask value of unlabelled pixels.
        fill_masks, fill_depth: which missing labels to fill.

    Returns:
        The dataset with the same structure and dtypes.
    """
    teacher = _as_model(teacher)

    def fill(images, labels):
        batched = images.shape.rank == 4
        masks, depths = labels["segmentation"], labels["depth"]
        if not batched:
            images, masks, depths = images[None], masks[None], depths[None]
        size = tf.shape(masks)[1:3]
        outputs = teacher(images, training=False)
        if fill_masks:
            logits = tf.image.resize(tf.cast(outputs["segmentation"], tf.float32), size, method="bilinear")
            predicted = tf.cast(tf.argmax(logits, axis=-1), masks.dtype)
            missing = tf.reduce_all(tf.equal(masks, tf.cast(ignore_class, masks.dtype)), axis=[1, 2])
            masks = tf.where(missing[:, None, None], predicted, masks)
        if fill_depth:
            predicted = tf.cast(outputs["depth"], tf.float32)
            if predicted.shape.rank == 3:
                predicted = predicted[..., None]
            predicted = tf.cast(tf.image.resize(predicted, size, method="bilinear")[..., 0], depths.dtype)
            missing = tf.reduce_all(tf.equal(depths, 0), axis=[1, 2])
            depths = tf.where(missing[:, None, None], predicted, depths)
        if not batched:
            images, masks, depths = images[0], masks[0], depths[0]
        return images, {**labels, "segmentation": masks, "depth": depths}

    return dataset.map(fill, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
