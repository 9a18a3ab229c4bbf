"""tf.data pipelines over the decoded cache: batches of (float32 images in [0, 255], labels).

Batches are read from the memory-mapped cache (engine.data.cache), so an epoch never decodes a
file; TensorFlow is imported only when a pipeline is made.
"""

from __future__ import annotations

import numpy as np


def cache_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    num_classes: int,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    one_hot: bool = False,
    drop_remainder: bool = False,
    with_index: bool = False,
):
    """A tf.data pipeline over the rows `indices` of `images` (N x S x S x 3 uint8) and `labels`.

    With with_index, each batch also carries its item numbers, so predictions stay matched to
    their items whatever order the cache is read in.
    """
    import tensorflow as tf

    size = images.shape[1]

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Order within a batch does not matter to training, so read the cache file in order
        # (one fancy-index copy) and hand back the item numbers in that order too.
        batch = np.sort(batch)
        return images[batch], labels[batch], batch

    def load(batch):
        rows, batch_labels, batch = tf.numpy_function(
            gather, [batch], (tf.uint8, tf.int64, tf.int64), stateful=False
        )
        rows = tf.ensure_shape(tf.cast(rows, tf.float32), (None, size, size, 3))
        batch_labels = tf.ensure_shape(batch_labels, (None,))
        target = tf.one_hot(batch_labels, num_classes) if one_hot else batch_labels
        return (rows, target, batch) if with_index else (rows, target)

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle:
        dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
