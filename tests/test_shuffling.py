"""Training reads every epoch in a new order over the whole example list, before decoding; evaluation in list order.

The proof runs on a generated VOC layout of 2,000 ids (8 x 8 JPEGs and PNG masks, written in a few seconds) and
goes through the real :func:`refinenet_tf.data.make_dataset` path, augmentation and batching included: each
image is one flat colour that spells its id (three base-16 digits, one per channel, 16 levels apart so that
JPEG's rounding cannot change a digit), so the ids of a batch are read back from its pixels.
"""

import os

import numpy as np
import pytest
from PIL import Image

from refinenet_tf import data

NUM_IDS = 2000
SIDE = 8


def _colour(index):
    return [(index // 16 ** digit) % 16 * 16 + 8 for digit in range(3)]


def _ids_of(images):
    """The ids spelt by a batch of flat images ``[N, H, W, 3]``."""
    digits = np.clip(np.round((images[:, SIDE // 2, SIDE // 2, :] - 8) / 16), 0, 15).astype(int)
    return (digits * 16 ** np.arange(3)).sum(axis=1).tolist()


@pytest.fixture(scope="module")
def voc_2000(tmp_path_factory):
    """``voc:`` spec of a VOC layout with ids ``000000``..``001999`` (train, sorted) whose images spell their ids."""
    voc = tmp_path_factory.mktemp("voc_2000") / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(voc / folder)
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(voc / "SegmentationClass" / "mask.png")
    mask = (voc / "SegmentationClass" / "mask.png").read_bytes()
    for index in range(NUM_IDS):
        image = np.broadcast_to(np.array(_colour(index), np.uint8), (SIDE, SIDE, 3))
        Image.fromarray(image).save(voc / "JPEGImages" / f"{index:06d}.jpg", quality=95, subsampling=0)
        (voc / "SegmentationClass" / f"{index:06d}.png").write_bytes(mask)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i:06d}\n" for i in range(NUM_IDS)))
    return f"voc:{voc}"


def _training_ids(spec, epochs=3, seed=0, **kwargs):
    """The ids of ``epochs`` epochs of a repeating, seeded training pipeline (whole 8 x 8 crops, flips on)."""
    batch_size = 100
    dataset = data.make_dataset(spec, "train", batch_size=batch_size, crop_size=SIDE, min_scale=1.0, max_scale=1.0,
                                seed=seed, repeat=True, **kwargs)
    ids = []
    for images, _ in dataset.take(epochs * NUM_IDS // batch_size):
        ids.extend(_ids_of(images.numpy()))
    return [ids[epoch * NUM_IDS:(epoch + 1) * NUM_IDS] for epoch in range(epochs)]


def _assert_shuffled_everywhere(epochs):
    for order in epochs:
        assert sorted(order) == list(range(NUM_IDS)), "an epoch is not a permutation of all ids"
        quarters = np.bincount(np.array(order[:100]) * 4 // NUM_IDS, minlength=4)
        assert quarters.min() >= 10, f"the first 100 ids of an epoch come from some quarters only: {quarters}"
    assert len({tuple(order) for order in epochs}) == len(epochs), "two epochs came in the same order"
    assert len({order[0] for order in epochs}) == len(epochs), "epochs start at the same id"


def test_every_training_epoch_is_a_new_permutation_drawn_from_the_whole_list(voc_2000):
    epochs = _training_ids(voc_2000)
    _assert_shuffled_everywhere(epochs)
    # the same seed gives the same orders, another seed others
    assert _training_ids(voc_2000, epochs=1) == epochs[:1]
    assert _training_ids(voc_2000, epochs=1, seed=1) != epochs[:1]


def test_read_examples_carries_ids_and_shuffles_before_decoding(voc_2000):
    examples = data.read_examples(voc_2000, shuffle=True, seed=3, repeat=True).take(3 * NUM_IDS)
    ids = [int(example["id"].numpy()) for example in examples]
    _assert_shuffled_everywhere([ids[e * NUM_IDS:(e + 1) * NUM_IDS] for e in range(3)])


def test_cached_files_are_still_shuffled_whole_every_epoch(voc_2000):
    epochs = _training_ids(voc_2000, epochs=2, seed=5, cache=True)
    _assert_shuffled_everywhere(epochs)
    assert epochs == _training_ids(voc_2000, epochs=2, seed=5)  # caching the bytes changes nothing else


def test_evaluation_reads_in_list_order(voc_2000):
    ids = []
    for images, _ in data.make_dataset(voc_2000, "train", batch_size=250, training=False):
        ids.extend(_ids_of(images.numpy()))
    assert ids == list(range(NUM_IDS))
    first = [example["id"].numpy().decode() for example in data.read_examples(voc_2000).take(3)]
    assert first == ["000000", "000001", "000002"]


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_a_shuffle_buffer_below_one_is_refused(voc_2000, value):
    with pytest.raises(ValueError, match="shuffle_buffer must be a positive integer"):
        data.make_dataset(voc_2000, "train", shuffle_buffer=value)


def test_caching_a_tfds_source_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match="drop cache="):
        data.read_examples(f"tfds:voc2012_segmentation:{tmp_path}", "train", cache=True)
