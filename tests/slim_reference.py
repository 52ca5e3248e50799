"""The reference code itself, as the tests' oracle: the blog's TF-slim RefineNet on tf-slim's ``resnet_v1``.

``ResidualConvUnit``, ``ChainedResidualPooling``, ``MultiResolutionFusion``, ``RefineBlock``, ``unpool``,
``mean_image_subtraction`` and ``model`` below are the reference code transcribed (the blog post's listing and
its public repository), with ``tf.contrib.slim`` replaced by ``tf_slim`` and ``tf.*`` by ``tf.compat.v1.*``. Two
changes, both for the tests' speed and neither touching what is computed: the decoder width, hard-wired to 256,
is the argument ``features`` (256 unless a test asks for less), and ``num_classes`` is an argument (21 there).

The reference ``model()`` takes ``end_points['pool2'..'pool5']`` of a modified ``resnet_v1`` that names them; on
tf-slim's own ``resnet_v1`` (the same network and variables) :func:`resnet_with_pools` ties them to the tensors
they are there: ``pool2`` is the output of ``pool1``, ``pool3`` of ``block1``, ``pool4`` of ``block2`` and ``pool5``
of ``block4``.

The slim code runs as it ran: in a Python process of its own, in TF1 mode (``tf.compat.v1.disable_v2_behavior``,
so graph mode and reference variables), started by :func:`in_tf1`; the test process never imports tf-slim and its
eager Keras state stays untouched.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
slim = resnet_v1 = None  # tf_slim and tf_slim.nets.resnet_v1, imported by _import_tf_slim in the TF1 process


def _import_tf_slim():
    global slim, resnet_v1
    # tf-slim 1.1.0 imports tf_keras.legacy_tf_layers, which tf-keras now keeps under tf_keras.src.
    import tf_keras.src.legacy_tf_layers as legacy_tf_layers
    import tf_keras.src.legacy_tf_layers.normalization as legacy_normalization

    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
    sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", legacy_normalization)
    import tf_slim
    from tf_slim.nets import resnet_v1 as tf_slim_resnet_v1

    slim, resnet_v1 = tf_slim, tf_slim_resnet_v1


# ---- the reference code (nets/model.py of the reference repository, the blog's listing) -------------------------

def unpool(inputs, scale):
    return tf1.image.resize_bilinear(inputs, size=[tf.shape(inputs)[1] * scale, tf.shape(inputs)[2] * scale])


def ResidualConvUnit(inputs, features=256, kernel_size=3):
    net = tf.nn.relu(inputs)
    net = slim.conv2d(net, features, kernel_size)
    net = tf.nn.relu(net)
    net = slim.conv2d(net, features, kernel_size)
    net = tf.add(net, inputs)
    return net


def ChainedResidualPooling(inputs, features=256):
    net_relu = tf.nn.relu(inputs)
    net = slim.max_pool2d(net_relu, [5, 5], stride=1, padding='SAME')
    net = slim.conv2d(net, features, 3)
    net_sum_1 = tf.add(net, net_relu)

    net = slim.max_pool2d(net_relu, [5, 5], stride=1, padding='SAME')
    net = slim.conv2d(net, features, 3)
    net_sum_2 = tf.add(net, net_sum_1)

    return net_sum_2


def MultiResolutionFusion(high_inputs=None, low_inputs=None, features=256):
    if high_inputs is None:  # refineNet block 4
        rcu_low_1 = low_inputs[0]
        rcu_low_2 = low_inputs[1]

        rcu_low_1 = slim.conv2d(rcu_low_1, features, 3)
        rcu_low_2 = slim.conv2d(rcu_low_2, features, 3)

        return tf.add(rcu_low_1, rcu_low_2)

    else:
        rcu_low_1 = low_inputs[0]
        rcu_low_2 = low_inputs[1]

        rcu_low_1 = slim.conv2d(rcu_low_1, features, 3)
        rcu_low_2 = slim.conv2d(rcu_low_2, features, 3)

        rcu_low = tf.add(rcu_low_1, rcu_low_2)

        rcu_high_1 = high_inputs[0]
        rcu_high_2 = high_inputs[1]

        rcu_high_1 = unpool(slim.conv2d(rcu_high_1, features, 3), 2)
        rcu_high_2 = unpool(slim.conv2d(rcu_high_2, features, 3), 2)

        rcu_high = tf.add(rcu_high_1, rcu_high_2)

        return tf.add(rcu_low, rcu_high)


def RefineBlock(high_inputs=None, low_inputs=None, features=256):
    if high_inputs is None:  # block 4
        rcu_low_1 = ResidualConvUnit(low_inputs, features=features)
        rcu_low_2 = ResidualConvUnit(low_inputs, features=features)
        rcu_low = [rcu_low_1, rcu_low_2]

        fuse = MultiResolutionFusion(high_inputs=None, low_inputs=rcu_low, features=features)
        fuse_pooling = ChainedResidualPooling(fuse, features=features)
        output = ResidualConvUnit(fuse_pooling, features=features)
        return output
    else:
        rcu_low_1 = ResidualConvUnit(low_inputs, features=features)
        rcu_low_2 = ResidualConvUnit(low_inputs, features=features)
        rcu_low = [rcu_low_1, rcu_low_2]

        rcu_high_1 = ResidualConvUnit(high_inputs, features=features)
        rcu_high_2 = ResidualConvUnit(high_inputs, features=features)
        rcu_high = [rcu_high_1, rcu_high_2]

        fuse = MultiResolutionFusion(rcu_high, rcu_low, features=features)
        fuse_pooling = ChainedResidualPooling(fuse, features=features)
        output = ResidualConvUnit(fuse_pooling, features=features)
        return output


def mean_image_subtraction(images, means=[123.68, 116.78, 103.94]):
    images = tf1.to_float(images)
    num_channels = images.get_shape().as_list()[-1]
    if len(means) != num_channels:
        raise ValueError('len(means) must match the number of channels')
    channels = tf.split(axis=3, num_or_size_splits=num_channels, value=images)
    for i in range(num_channels):
        channels[i] -= means[i]
    return tf.concat(axis=3, values=channels)


def model(images, weight_decay=1e-5, is_training=True, resnet="resnet_v1_101", features=256, num_classes=21):
    images = mean_image_subtraction(images)

    with slim.arg_scope(resnet_v1.resnet_arg_scope(weight_decay=weight_decay)):
        logits, end_points = resnet_with_pools(images, is_training=is_training, scope=resnet)

    with tf1.variable_scope('feature_fusion', values=[end_points.values]):
        batch_norm_params = {'decay': 0.997, 'epsilon': 1e-5, 'scale': True, 'is_training': is_training}
        with slim.arg_scope([slim.conv2d],
                            activation_fn=tf.nn.relu,
                            normalizer_fn=slim.batch_norm,
                            normalizer_params=batch_norm_params,
                            weights_regularizer=slim.l2_regularizer(weight_decay)):
            f = [end_points['pool5'], end_points['pool4'],
                 end_points['pool3'], end_points['pool2']]

            g = [None, None, None, None]
            h = [None, None, None, None]

            for i in range(4):
                h[i] = slim.conv2d(f[i], features, 1)

            g[0] = RefineBlock(high_inputs=None, low_inputs=h[0], features=features)
            g[1] = RefineBlock(g[0], h[1], features=features)
            g[2] = RefineBlock(g[1], h[2], features=features)
            g[3] = RefineBlock(g[2], h[3], features=features)
            F_score = slim.conv2d(g[3], num_classes, 1, activation_fn=tf.nn.relu, normalizer_fn=None)

    return F_score


# ---- the end points the reference's resnet_v1 names, on tf-slim's resnet_v1 --------------------------------------

def resnet_with_pools(images, is_training=True, scope="resnet_v1_101", num_classes=None):
    """tf-slim's ``resnet_v1_<depth>`` with the reference's ``pool2``..``pool5`` end points (fully convolutional:
    ``global_pool=False``; ``num_classes`` adds TF-slim's ImageNet classifier, as in its checkpoints)."""
    net, end_points = getattr(resnet_v1, scope)(images, num_classes=num_classes, is_training=is_training,
                                                global_pool=False, scope=scope)
    end_points['pool2'] = tf1.get_default_graph().get_tensor_by_name(f"{scope}/pool1/MaxPool:0")
    end_points['pool3'] = end_points[f'{scope}/block1']
    end_points['pool4'] = end_points[f'{scope}/block2']
    end_points['pool5'] = end_points[f'{scope}/block4']
    return net, end_points


# ---- graphs with random weights, saved as TF1 checkpoints ---------------------------------------------------------

def random_values(variables, seed):
    """``{variable name: value}``: He-scaled conv weights (slim's initializer, drawn again), random biases and
    BatchNorm parameters, and BatchNorm moving statistics far from their initial 0 and 1."""
    rng = np.random.default_rng(seed)
    values = {}
    for variable in variables:
        shape = variable.shape.as_list()
        name = variable.op.name
        if name.endswith("/weights"):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith("/BatchNorm/gamma"):
            value = rng.uniform(0.6, 1.4, shape)
        elif name.endswith(("/BatchNorm/beta", "/biases")):
            value = rng.normal(0.0, 0.1, shape)
        elif name.endswith("/BatchNorm/moving_mean"):
            value = rng.normal(0.0, 0.5, shape)
        elif name.endswith("/BatchNorm/moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            continue
        values[name] = value.astype(variable.dtype.base_dtype.as_numpy_dtype)
    return values


def initialize(session, values):
    """Initializes every variable of the session's graph, those of ``values`` with their value (one run)."""
    variables = tf1.global_variables()
    # the value an initializer assigns (what Variable.load feeds): the initial value, or for an EMA shadow, whose
    # initial value reads its variable, the guarded copy of it
    feed = {variable.initializer.inputs[1]: values[variable.op.name] for variable in variables
            if variable.op.name in values}
    session.run([variable.initializer for variable in variables], feed)


def batch_statistics(image, values, **model_kwargs):
    """The per-channel mean and variance that every BatchNorm of ``model()`` sees on ``image`` (``model()`` in
    training mode, with ``values``), as ``{".../BatchNorm/moving_mean": mean, ".../moving_variance": var}``:
    moving statistics that keep the activations at the scale a trained network has."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [1, *image.shape])
        model(images, is_training=True, **model_kwargs)
        norms = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]
        with tf1.Session(graph=graph) as session:
            initialize(session, values)
            fetched = session.run([(op.outputs[1], op.outputs[2]) for op in norms], {images: image[None]})
    statistics = {}
    for op, (mean, variance) in zip(norms, fetched):
        scope = op.name.rsplit("/", 1)[0]  # .../BatchNorm
        statistics[f"{scope}/moving_mean"], statistics[f"{scope}/moving_variance"] = mean, variance
    return statistics


def run_reference(checkpoint_prefix, image, resnet="resnet_v1_101", features=256, num_classes=21, seed=0,
                  ema_shadows=False):
    """Builds the reference ``model()`` at the image's size in a graph of its own, gives it random weights, saves
    them with ``tf.compat.v1.train.Saver`` to ``checkpoint_prefix`` and returns ``(logits, regularization_loss)``
    computed by the slim graph in inference mode (``is_training=False``).

    The BatchNorm moving statistics are those of :func:`batch_statistics`, each mean shifted by a random 0.3
    standard deviations and each variance scaled by a random factor in [0.5, 2]: far from 0 and 1 and from
    the batch's own, at a trained network's scale.

    ``ema_shadows`` also writes ``<variable>/ExponentialMovingAverage`` for every trainable variable (the
    reference training's ``ExponentialMovingAverage(0.997).apply(tf.trainable_variables())``), with values
    different from the raw ones, and returns a third result: the logits with those shadows, restored as the
    reference ``demo.py`` restores them (``Saver(ExponentialMovingAverage.variables_to_restore())``).
    """
    model_kwargs = dict(resnet=resnet, features=features, num_classes=num_classes)
    rng = np.random.default_rng(seed + 1)
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [1, *image.shape])
        global_step = tf1.train.get_or_create_global_step()
        logits = model(images, is_training=False, **model_kwargs)
        regularization = tf1.add_n(tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES))
        values = random_values(tf1.global_variables(), seed)
        for name, value in batch_statistics(image, values, **model_kwargs).items():
            if name.endswith("moving_mean"):
                spread = np.sqrt(values[name[:-len("moving_mean")] + "moving_variance"])
                values[name] = (value + 0.3 * spread * rng.standard_normal(value.shape)).astype(np.float32)
            else:
                values[name] = (value * rng.uniform(0.5, 2.0, value.shape)).astype(np.float32)
        averages = None
        if ema_shadows:
            averages = tf1.train.ExponentialMovingAverage(0.997, global_step)
            averages.apply(tf1.trainable_variables())
            for variable in tf1.trainable_variables():
                raw = values[variable.op.name]
                values[averages.average_name(variable)] = (raw * rng.uniform(0.5, 1.5, raw.shape)).astype(np.float32)
        feed = {images: image[None].astype(np.float32)}
        with tf1.Session(graph=graph) as session:
            initialize(session, values)
            tf1.train.Saver(tf1.global_variables()).save(session, checkpoint_prefix, write_meta_graph=False)
            results = session.run([logits, regularization], feed)
            if averages is not None:
                tf1.train.Saver(averages.variables_to_restore()).restore(session, checkpoint_prefix)
                results.append(session.run(logits, feed))
            return tuple(results)


def save_backbone(checkpoint_prefix, image, resnet="resnet_v1_50", seed=0):
    """A TF-slim-style ImageNet checkpoint of ``resnet`` alone, as TF-slim's ``resnet_v1_50.ckpt`` is: one file in
    the V1 checkpoint format, variables ``<resnet>/...``, the 1000-class classifier ``<resnet>/logits`` and
    ``global_step``.

    Returns ``{variable name: value}`` and, under ``pool2``..``pool5``, the end points the reference code taps,
    computed on ``image`` in inference mode.
    """
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [1, *image.shape])
        tf1.train.get_or_create_global_step()
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            _, end_points = resnet_with_pools(images, is_training=False, scope=resnet, num_classes=1000)
        values = random_values(tf1.global_variables(), seed)
        with tf1.Session(graph=graph) as session:
            initialize(session, values)
            tf1.train.Saver(tf1.global_variables(), write_version=tf1.train.SaverDef.V1).save(
                session, checkpoint_prefix, write_meta_graph=False)
            # one run for all of them: a run per variable re-prunes the graph each time (14 s for resnet_v1_101)
            stored = session.run({variable.op.name: variable for variable in tf1.global_variables()})
            pools = ("pool2", "pool3", "pool4", "pool5")
            features = session.run([end_points[pool] for pool in pools], {images: image[None].astype(np.float32)})
    return {**stored, **{pool: feature for pool, feature in zip(pools, features)}}


def write_checkpoint(checkpoint_prefix, tensors):
    """Writes ``tensors`` (``{name: array}``) under their names in the checkpoint format ``Saver`` writes (the
    ``SaveV2`` op it runs), from the test process: for checkpoints edited from a ``Saver``'s."""
    names = list(tensors)
    tf.raw_ops.SaveV2(prefix=checkpoint_prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])


# ---- running it in a TF1 process -----------------------------------------------------------------------------------

_FUNCTIONS = {"run_reference": run_reference, "save_backbone": save_backbone}


def in_tf1(function, folder, **kwargs):
    """Runs ``function(**kwargs)`` (``"run_reference"`` or ``"save_backbone"``) in a fresh
    Python process in TF1 mode and returns its result. NumPy arrays in ``kwargs`` and the result (a tuple or a
    dict of arrays) travel as ``.npy`` / ``.npz`` files in ``folder``."""
    folder = os.fspath(folder)
    arguments = {}
    for name, value in kwargs.items():
        if isinstance(value, np.ndarray):
            path = os.path.join(folder, f"{function}_{name}.npy")
            np.save(path, value)
            value = {"npy": path}
        arguments[name] = value
    request = os.path.join(folder, f"{function}.json")
    result = os.path.join(folder, f"{function}_result.npz")
    with open(request, "w") as stream:
        json.dump({"function": function, "arguments": arguments, "result": result}, stream)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
                       TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([sys.executable, "-m", "tests.slim_reference", request], cwd=root, env=environment,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"the TF1 process failed:\n{completed.stderr[-4000:]}")
    with np.load(result) as stored:
        names, kind = json.loads(str(stored["names"])), str(stored["kind"])
        values = [stored[f"t{i}"] for i in range(len(names))]
    return dict(zip(names, values)) if kind == "dict" else tuple(values)


def _main(request):
    tf1.disable_v2_behavior()
    _import_tf_slim()
    with open(request) as stream:
        spec = json.load(stream)
    arguments = {}
    for name, value in spec["arguments"].items():
        arguments[name] = np.load(value["npy"]) if isinstance(value, dict) else value
    output = _FUNCTIONS[spec["function"]](**arguments)
    if isinstance(output, dict):
        kind, names, values = "dict", list(output), list(output.values())
    else:
        kind, names, values = "tuple", [str(i) for i in range(len(output))], list(output)
    np.savez(spec["result"], names=json.dumps(names), kind=kind,
             **{f"t{i}": np.asarray(v) for i, v in enumerate(values)})


if __name__ == "__main__":
    _main(sys.argv[1])
