"""The recipes' optimizers: per-variable learning rates, weight decay, the moving average of the weights, and the
learning-rate schedules.

Everything per variable happens in one place, :meth:`RecipeOptimizerMixin.update_step`, which tf-keras calls once
per variable and step with the gradient already summed over the replicas (``tf.distribute``) and unscaled (the
``LossScaleOptimizer`` of ``mixed_float16``): a decay or a multiplier applied there is the recipe's whatever the
number of devices and the precision. :class:`SGDWithMultipliers`, :class:`AdamWithMultipliers` and
:class:`AdamWWithMultipliers` are Keras' SGD and Adam with it; :func:`make_optimizer` builds the recipe's one.

Their SGD and Adam steps on a dense gradient run as TensorFlow's fused training ops (``ResourceApplyKerasMomentum``,
``ResourceApplyAdam``): Keras' own formulas in one kernel per variable, 7 graph operations per variable in all
instead of Keras' 14 (SGD with momentum) and 16 instead of 40 (Adam). The train step's graph is that much smaller,
so the first step (tracing and graph optimisation) took 1.3-2.1 times less time and the update itself 1.8-3.2
times less, on three presets (``python benchmarks/training.py --update``; docs/training.md has the table). A sparse
gradient (``tf.IndexedSlices``) and Adam's ``amsgrad`` take Keras' own update.
"""

import contextlib
import math

import tensorflow as tf
import tf_keras as keras


__all__ = ["AdamWWithMultipliers", "AdamWithMultipliers", "LinearWarmup", "RecipeOptimizerMixin",
           "SGDWithMultipliers", "averaged_weights", "decoder_variable_names", "learning_rate_schedule",
           "make_optimizer", "weight_averages"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


class _PerVariable:
    """What the optimizer knows of each model variable once built (a plain object, so that checkpoints skip it):
    ``settings`` maps each local copy's ``ref()`` to ``(name, multiplier, average copy)``; ``pairs`` holds the
    ``(model variable, average)`` pairs in the order of ``build``'s list."""

    def __init__(self):
        self.settings, self.pairs = {}, []


class RecipeOptimizerMixin:
    """Learning-rate multipliers, weight decay and a moving average of the weights for a tf-keras optimizer.

    Mixed in before a ``keras.optimizers`` class (``class SGDWithMultipliers(RecipeOptimizerMixin,
    keras.optimizers.SGD)``), it changes the update of each variable in ``update_step``, which tf-keras calls in
    the cross-replica update with the gradient summed over the replicas and unscaled by the loss-scale optimizer.
    So each of these is applied once per step, as the recipe states it, on any number of devices and under any
    precision policy:

    * ``multiplier``: the variables named in ``multiplied_variables`` (the decoder's) learn with ``multiplier``
      times the learning rate (the first ``build`` records their positions in its list as
      ``multiplied_indices``, which a reloaded optimizer follows: tf-keras renames some nested variables when it
      loads a ``.keras`` file): the optimizer's ``learning_rate`` reads that much larger while they are updated.
      For SGD with momentum this is the same as multiplying their gradient (the momentum buffer holds
      ``lr * g``); for Adam it is not: Adam divides the gradient by its running magnitude, so a multiplied
      gradient would change almost nothing, and the multiplier scales the step instead, as PyTorch's parameter
      groups do.
    * ``coupled_weight_decay`` (SGD, Adam): ``g + decay * w`` is what the optimizer sees, as PyTorch's
      ``SGD(weight_decay=)`` and ``Adam(weight_decay=)`` do (for Adam that is an L2 penalty, normalised with the
      gradient).
    * ``decoupled_weight_decay`` (AdamW): ``w -= lr * multiplier * decay * w`` before the Adam step, as PyTorch's
      ``AdamW`` does with a parameter group's learning rate. (Keras' own ``weight_decay=`` decays every variable at
      the base learning rate; it is refused here so that a decay is never applied twice.)
    * ``average_weights``: an exponential moving average of every trainable variable,
      ``a = average_momentum * a + (1 - average_momentum) * w`` after each update, kept in optimizer variables
      made by ``add_variable_from_reference`` (so checkpoints and ``model.keras`` carry them) and given by the
      public :meth:`averaged_variables`. ``finalize_variable_values`` (called by ``fit`` when it ends) puts them
      into the model, as Keras' ``use_ema`` does. Keras' ``use_ema`` itself is refused: its averages live in
      private attributes that a Keras upgrade may rename.

    Every setting is part of ``get_config``, with the learning rate or its schedule, so the optimizer serializes
    with the model.
    """

    #: which weight decay the optimizer takes: "coupled" (added to the gradient) or "decoupled" (AdamW).
    weight_decay_kind = "coupled"
    _learning_rate_factor = 1.0  # > 1 only while a multiplied variable is updated

    def __init__(self, *args, multiplied_variables=(), multiplier=1.0, coupled_weight_decay=0.0,
                 decoupled_weight_decay=0.0, average_weights=False, average_momentum=0.99, multiplied_indices=None,
                 **kwargs):
        name = type(self).__name__
        if kwargs.get("use_ema"):
            raise ValueError(f"{name}: use average_weights=True (and average_momentum=) instead of use_ema: Keras "
                             "keeps use_ema's averages where validation and checkpoints cannot see them.")
        if kwargs.get("weight_decay"):
            raise ValueError(f"{name}: Keras' weight_decay= decays at the base learning rate and would add to this "
                             "optimizer's own; give coupled_weight_decay= (SGD, Adam) or decoupled_weight_decay= "
                             "(AdamW).")
        if self.weight_decay_kind == "coupled" and decoupled_weight_decay:
            raise ValueError(f"{name} takes coupled_weight_decay (added to the gradient), not "
                             f"decoupled_weight_decay={decoupled_weight_decay}; use AdamWWithMultipliers for it.")
        if self.weight_decay_kind == "decoupled" and coupled_weight_decay:
            raise ValueError(f"{name} takes decoupled_weight_decay, not coupled_weight_decay="
                             f"{coupled_weight_decay}; use SGDWithMultipliers or AdamWithMultipliers for it.")
        for argument, value in (("multiplier", multiplier), ("coupled_weight_decay", coupled_weight_decay),
                                ("decoupled_weight_decay", decoupled_weight_decay)):
            if not float(value) >= 0:
                raise ValueError(f"{name}: {argument} must be 0 or more, got {value!r}.")
        if not 0 <= float(average_momentum) <= 1:
            raise ValueError(f"{name}: average_momentum must be in [0, 1], got {average_momentum!r}.")
        super().__init__(*args, **kwargs)
        self.multiplied_variables = sorted(multiplied_variables)
        self.multiplied_indices = None if multiplied_indices is None else sorted(int(i) for i in multiplied_indices)
        self.multiplier = float(multiplier)
        self.coupled_weight_decay = float(coupled_weight_decay)
        self.decoupled_weight_decay = float(decoupled_weight_decay)
        self.average_weights = bool(average_weights)
        self.average_momentum = float(average_momentum)
        self._per_variable = None
        self._learning_rate_reads = 0

    @property
    def learning_rate(self):
        """The learning rate (a variable), or, while a multiplied variable is updated, ``multiplier`` times it."""
        rate = super().learning_rate
        if self._learning_rate_factor == 1.0:
            return rate
        self._learning_rate_reads += 1
        return rate * self._learning_rate_factor

    @learning_rate.setter
    def learning_rate(self, value):
        keras.optimizers.Optimizer.learning_rate.fset(self, value)

    def build(self, var_list):
        """Builds the optimizer's own variables, then the averages (``average_weights``) and the per-variable
        settings; a name in ``multiplied_variables`` that is not among ``var_list`` is an error."""
        super().build(var_list)
        if self._per_variable is not None:
            return
        var_list = list(var_list)
        if self.multiplied_indices is None:  # names, until the first build turns them into positions
            names = [variable.name for variable in var_list]
            unknown = sorted(set(self.multiplied_variables) - set(names))
            if unknown:
                raise ValueError(f"{type(self).__name__}: multiplied_variables names {unknown[:3]} (of "
                                 f"{len(unknown)}), which are not among the variables it trains; give the names of "
                                 "the model's trainable variables (decoder_variable_names(model)).")
            self.multiplied_indices = [i for i, name in enumerate(names) if name in set(self.multiplied_variables)]
        elif self.multiplied_indices and self.multiplied_indices[-1] >= len(var_list):
            raise ValueError(f"{type(self).__name__}: multiplied_indices go up to {self.multiplied_indices[-1]} but "
                             f"it trains {len(var_list)} variables; compile the model with a new optimizer.")
        multiplied = set(self.multiplied_indices)
        strategy = tf.distribute.get_strategy()
        per_variable = _PerVariable()
        for index, variable in enumerate(var_list):
            average = None
            if self.average_weights:
                average = self.add_variable_from_reference(variable, "average", initial_value=variable)
                per_variable.pairs.append((variable, average))
            multiplier = self.multiplier if index in multiplied else 1.0
            copies = strategy.experimental_local_results(variable)
            averages = strategy.experimental_local_results(average) if average is not None else [None] * len(copies)
            if len(averages) != len(copies):
                raise ValueError(f"{type(self).__name__}: {variable.name} has {len(copies)} local copies but its "
                                 f"average {len(averages)}; build the optimizer under the model's strategy scope.")
            for copy, average_copy in zip(copies, averages):
                per_variable.settings[copy.ref()] = (variable.name, multiplier, average_copy)
        self._per_variable = per_variable

    def update_step(self, gradient, variable):
        """Updates ``variable`` (one local copy) from its summed, unscaled ``gradient``: coupled decay, the
        learning-rate multiplier, decoupled decay, the optimizer's own step, then the moving average."""
        settings = self._per_variable.settings if self._per_variable is not None else {}
        if variable.ref() not in settings:
            raise KeyError(f"{type(self).__name__} was not built for variable {variable.name}; build it with "
                           "every variable it updates (optimizer.build(model.trainable_variables)).")
        name, multiplier, average = settings[variable.ref()]
        if self.coupled_weight_decay:
            gradient = tf.convert_to_tensor(gradient)  # a sparse gradient becomes dense: the decay touches all of w
            gradient = gradient + tf.cast(self.coupled_weight_decay, gradient.dtype) * tf.cast(variable,
                                                                                                gradient.dtype)
        with self._multiplied_learning_rate(multiplier):
            if self.decoupled_weight_decay:
                rate = tf.cast(self.learning_rate, variable.dtype)
                variable.assign_sub(variable * (rate * tf.cast(self.decoupled_weight_decay, variable.dtype)))
            self._learning_rate_reads = 0
            if isinstance(gradient, tf.IndexedSlices):
                super().update_step(gradient, variable)
            else:
                self._dense_update(tf.convert_to_tensor(gradient), variable)
            if multiplier != 1.0 and not self._learning_rate_reads:
                raise RuntimeError(f"{type(self).__name__}: its parent's update_step did not read "
                                   f"learning_rate, so the multiplier of {name} cannot be applied; this tf-keras "
                                   "version needs another way to scale it.")
        if average is not None:
            momentum = tf.cast(self.average_momentum, average.dtype)
            average.assign(momentum * average + (1 - momentum) * tf.cast(variable, average.dtype))

    def _dense_update(self, gradient, variable):
        """The parent optimizer's step on a dense ``gradient``; an optimizer below replaces it with the fused
        TensorFlow op of the same update."""
        super().update_step(gradient, variable)

    @contextlib.contextmanager
    def _multiplied_learning_rate(self, factor):
        self._learning_rate_factor = float(factor)
        try:
            yield
        finally:
            self._learning_rate_factor = 1.0

    def averaged_variables(self):
        """``(variable, moving average)`` for every variable the optimizer averages (``average_weights``), in the
        order ``build`` got them; empty without ``average_weights`` or before the optimizer is built (its first
        step), when the averages are still the weights."""
        return list(self._per_variable.pairs) if self._per_variable is not None else []

    def finalize_variable_values(self, var_list):
        """Puts the averages into ``var_list`` (``average_weights``; ``fit`` calls this when it ends, so the model
        it returns, and a ``model.keras`` saved then, hold the averaged weights)."""
        if not self.average_weights or self._per_variable is None:
            return
        averages = {variable.ref(): average for variable, average in self._per_variable.pairs}
        missing = [variable.name for variable in var_list if variable.ref() not in averages]
        if missing:
            raise ValueError(f"{type(self).__name__} has no moving average of {missing[:3]}: the model's trainable "
                             "variables changed after the optimizer was built; compile the model again.")
        for variable in var_list:
            variable.assign(averages[variable.ref()])

    def get_config(self):
        """The parent optimizer's config and every setting of this mixin."""
        config = super().get_config()
        config.update(multiplied_variables=list(self.multiplied_variables), multiplied_indices=self.multiplied_indices,
                      multiplier=self.multiplier,
                      coupled_weight_decay=self.coupled_weight_decay,
                      decoupled_weight_decay=self.decoupled_weight_decay, average_weights=self.average_weights,
                      average_momentum=self.average_momentum)
        return config


@_register
class SGDWithMultipliers(RecipeOptimizerMixin, keras.optimizers.SGD):
    """SGD with momentum, PyTorch-style (coupled) weight decay, a learning-rate multiplier for chosen variables
    and an optional moving average of the weights (:class:`RecipeOptimizerMixin`), as the official RefineNet
    recipes train.

    The update of a variable with multiplier ``m`` is ``v = momentum * v - lr * m * (g + decay * w); w += v``,
    with ``g`` the gradient of the whole (global) batch.

    Args:
        learning_rate: the base (backbone) learning rate or schedule.
        multiplied_variables: names of the variables that learn ``multiplier`` times faster (the decoder's).
        multiplier: their learning-rate factor.
        coupled_weight_decay: decay added to every gradient (0: none).
        average_weights, average_momentum: keep a moving average of the weights.
        **kwargs: ``keras.optimizers.SGD`` arguments (``momentum``, ``nesterov``, ...).

    Example:
        >>> w = tf.Variable([1.0], name="w")
        >>> sgd = SGDWithMultipliers(0.1, multiplied_variables=[w.name], multiplier=10.0, coupled_weight_decay=0.5)
        >>> _ = sgd.apply_gradients([(tf.constant([2.0]), w)])
        >>> round(float(w[0]), 6)  # 1 - 0.1 * 10 * (2 + 0.5 * 1)
        -1.5
    """

    def __init__(self, learning_rate=0.01, multiplied_variables=(), multiplier=1.0, coupled_weight_decay=0.0,
                 name="SGDWithMultipliers", **kwargs):
        super().__init__(learning_rate=learning_rate, multiplied_variables=multiplied_variables,
                         multiplier=multiplier, coupled_weight_decay=coupled_weight_decay, name=name, **kwargs)

    def _dense_update(self, gradient, variable):
        """Keras' SGD step, ``m = momentum * m - lr * g; w += m`` (Nesterov: ``w += momentum * m - lr * g``), as
        TensorFlow's one op for it."""
        momentum = self.momentums[self._index_dict[self._var_key(variable)]]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.handle, lr=tf.cast(self.learning_rate, variable.dtype),
            grad=gradient, momentum=tf.cast(self.momentum, variable.dtype), use_nesterov=self.nesterov)


def _adam_dense_update(optimizer, gradient, variable):
    """Keras' Adam step (``adaptive_epsilon=False``: ``w -= alpha * m / (sqrt(v) + epsilon)``, ``alpha = lr *
    sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)``) as TensorFlow's one op for it; ``amsgrad`` takes Keras' own. It
    reads the moments where Keras' Adam keeps them (``_momentums``, ``_velocities``), as Keras' own ``update_step``
    does: a tf-keras release that moved them fails here at the first step, and tests/test_optimizers.py with it."""
    if optimizer.amsgrad or getattr(optimizer, "adaptive_epsilon", False):
        keras.optimizers.Adam.update_step(optimizer, gradient, variable)
        return
    dtype = variable.dtype
    index = optimizer._index_dict[optimizer._var_key(variable)]
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=optimizer._momentums[index].handle, v=optimizer._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(optimizer.learning_rate, dtype),
        beta1=beta_1, beta2=beta_2, epsilon=tf.cast(optimizer.epsilon, dtype), grad=gradient)


@_register
class AdamWithMultipliers(RecipeOptimizerMixin, keras.optimizers.Adam):
    """Adam with a learning-rate multiplier for chosen variables, PyTorch-style coupled weight decay (an L2
    penalty added to the gradient, as ``torch.optim.Adam(weight_decay=)``) and an optional moving average of the
    weights (:class:`RecipeOptimizerMixin`).

    The multiplier scales the learning rate of those variables, not their gradient: Adam divides the gradient by
    its running magnitude, which would cancel a scaled gradient.

    Args:
        learning_rate: the base (backbone) learning rate or schedule.
        multiplied_variables: names of the variables that learn ``multiplier`` times faster (the decoder's).
        multiplier: their learning-rate factor.
        coupled_weight_decay: decay added to every gradient before Adam's moments (0: none).
        average_weights, average_momentum: keep a moving average of the weights.
        **kwargs: ``keras.optimizers.Adam`` arguments (``beta_1``, ``epsilon``, ...).

    Example:
        >>> w = tf.Variable([1.0, 1.0], name="w")
        >>> adam = AdamWithMultipliers(0.01, multiplied_variables=[w.name], multiplier=10.0)
        >>> _ = adam.apply_gradients([(tf.constant([3.0, 0.1]), w)])
        >>> [round(float(x), 4) for x in w]  # Adam's first step is lr * sign(g), here 10 x 0.01
        [0.9, 0.9]
    """

    def __init__(self, learning_rate=0.001, multiplied_variables=(), multiplier=1.0, coupled_weight_decay=0.0,
                 name="AdamWithMultipliers", **kwargs):
        super().__init__(learning_rate=learning_rate, multiplied_variables=multiplied_variables,
                         multiplier=multiplier, coupled_weight_decay=coupled_weight_decay, name=name, **kwargs)

    _dense_update = _adam_dense_update


@_register
class AdamWWithMultipliers(RecipeOptimizerMixin, keras.optimizers.Adam):
    """AdamW: Adam with decoupled weight decay ``w -= lr * multiplier * decay * w`` at each step (as
    ``torch.optim.AdamW`` with per-group learning rates), a learning-rate multiplier for chosen variables and an
    optional moving average of the weights (:class:`RecipeOptimizerMixin`).

    Args:
        learning_rate: the base (backbone) learning rate or schedule.
        multiplied_variables: names of the variables that learn ``multiplier`` times faster (the decoder's).
        multiplier: their learning-rate factor (their decay scales with it too).
        decoupled_weight_decay: the decay (0: none; PyTorch's default is 0.01).
        average_weights, average_momentum: keep a moving average of the weights.
        **kwargs: ``keras.optimizers.Adam`` arguments (``beta_1``, ``epsilon``, ...).

    Example:
        >>> w = tf.Variable([2.0], name="w")
        >>> adamw = AdamWWithMultipliers(0.1, decoupled_weight_decay=0.5)
        >>> _ = adamw.apply_gradients([(tf.constant([1.0]), w)])
        >>> round(float(w[0]), 5)  # 2 - 0.1 * 0.5 * 2, then Adam's first step - 0.1
        1.8
    """

    weight_decay_kind = "decoupled"

    def __init__(self, learning_rate=0.001, multiplied_variables=(), multiplier=1.0, decoupled_weight_decay=0.0,
                 name="AdamWWithMultipliers", **kwargs):
        super().__init__(learning_rate=learning_rate, multiplied_variables=multiplied_variables,
                         multiplier=multiplier, decoupled_weight_decay=decoupled_weight_decay, name=name, **kwargs)

    _dense_update = _adam_dense_update


@_register
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up in front of a learning rate or schedule: ``rate(step) * min(1, (step + 1) / warmup_steps)``.

    The first step runs at ``1 / warmup_steps`` of the rate, step ``warmup_steps - 1`` (counted from 0) at the full
    rate; the schedule behind keeps its own step count, so its decays stay where the recipe puts them.

    Args:
        learning_rate: a float or a ``LearningRateSchedule``.
        warmup_steps: the length of the ramp (1: no warm-up).

    Example:
        >>> schedule = LinearWarmup(0.1, warmup_steps=4)
        >>> [round(float(schedule(step)), 3) for step in range(6)]
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    """

    def __init__(self, learning_rate, warmup_steps):
        super().__init__()
        if int(warmup_steps) < 1:
            raise ValueError(f"LinearWarmup: warmup_steps must be 1 or more, got {warmup_steps!r}.")
        self.learning_rate = learning_rate
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        with tf.name_scope("LinearWarmup"):
            rate = self.learning_rate
            rate = rate(step) if callable(rate) else tf.convert_to_tensor(rate, tf.float32)
            ramp = tf.minimum(1.0, (tf.cast(step, rate.dtype) + 1) / tf.cast(self.warmup_steps, rate.dtype))
            return rate * ramp

    def get_config(self):
        """``learning_rate`` (a float or a serialized schedule) and ``warmup_steps``."""
        rate = self.learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = keras.optimizers.schedules.serialize(rate)
        return {"learning_rate": rate, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        """The schedule of :meth:`get_config`'s dict."""
        config = dict(config)
        if isinstance(config["learning_rate"], dict):
            config["learning_rate"] = keras.optimizers.schedules.deserialize(config["learning_rate"])
        return cls(**config)


def _backbone_layer(model):
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name}: expected one nested backbone model, found {[l.name for l in nested]}.")
    return nested[0]


def decoder_variable_names(model):
    """Names of the trainable variables that are not the backbone's (the model's one nested ``keras.Model``)."""
    backbone = {id(v) for v in _backbone_layer(model).trainable_variables}
    return [v.name for v in model.trainable_variables if id(v) not in backbone]


def learning_rate_schedule(recipe, learning_rate, steps_per_epoch, epochs):
    """The learning rate of ``recipe`` per step: a float or a serializable Keras schedule.

    ``step`` below counts the updates made before this one (the optimizer's ``iterations``):

    * ``"constant"``: ``learning_rate``.
    * ``"poly"``: ``learning_rate * (1 - step / (steps_per_epoch * epochs)) ** 0.9``.
    * ``"step"``: multiplied by ``step_gamma`` at every ``step_epochs`` boundary before the end of training: every
      step of epoch ``k * step_epochs`` (counted from 0) and after runs at ``learning_rate * step_gamma ** k``
      (250 epochs, step 100: decays at epochs 100 and 200, as PyTorch's ``MultiStepLR`` stepped per epoch).
    * ``warmup_epochs > 0``: the above times a linear ramp (:class:`LinearWarmup`) over
      ``round(warmup_epochs * steps_per_epoch)`` steps (at least 1).

    Example:
        >>> from refinenet_tf.training.recipes import Recipe
        >>> recipe = Recipe("r", "lw_resnet50", "", schedule="step", step_epochs=2, step_gamma=0.1)
        >>> schedule = learning_rate_schedule(recipe, 1.0, steps_per_epoch=3, epochs=5)
        >>> [round(float(schedule(step)), 3) for step in range(15)]
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    """
    steps_per_epoch, epochs = int(steps_per_epoch), int(epochs)
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch and epochs must be 1 or more, got {steps_per_epoch} and {epochs}.")
    if recipe.schedule == "constant":
        schedule = learning_rate
    elif recipe.schedule == "poly":
        schedule = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps_per_epoch * epochs, 0.0,
                                                              power=0.9)
    elif recipe.schedule == "step":
        if int(recipe.step_epochs) < 1:
            raise ValueError(f"recipe {recipe.name}: step_epochs must be 1 or more, got {recipe.step_epochs}.")
        decays = range(1, math.ceil(epochs / recipe.step_epochs))  # the boundaries before the end of training
        # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i]: the last step of each period
        boundaries = [steps_per_epoch * recipe.step_epochs * k - 1 for k in decays]
        values = [learning_rate * recipe.step_gamma ** k for k in range(len(boundaries) + 1)]
        schedule = (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values) if boundaries
                    else learning_rate)
    else:
        raise ValueError(f"recipe {recipe.name}: unknown schedule {recipe.schedule!r}; use constant, poly or step.")
    warmup_epochs = getattr(recipe, "warmup_epochs", 0) or 0
    if warmup_epochs < 0:
        raise ValueError(f"recipe {recipe.name}: warmup_epochs must be 0 or more, got {warmup_epochs}.")
    if warmup_epochs:
        schedule = LinearWarmup(schedule, max(1, round(warmup_epochs * steps_per_epoch)))
    return schedule


_OPTIMIZERS = {"sgd": SGDWithMultipliers, "adam": AdamWithMultipliers, "adamw": AdamWWithMultipliers}


def make_optimizer(recipe, model, learning_rate):
    """The optimizer of ``recipe`` for ``model``, at ``learning_rate`` (a float or a schedule).

    ``recipe.optimizer`` picks :class:`SGDWithMultipliers` (``"sgd"``, with ``momentum``),
    :class:`AdamWithMultipliers` (``"adam"``) or :class:`AdamWWithMultipliers` (``"adamw"``); the decoder (every
    trainable variable outside the nested backbone) learns ``decoder_lr_multiplier`` times faster;
    ``weight_decay`` is coupled (sgd, adam), ``decoupled_weight_decay`` decoupled (adamw); ``use_ema`` keeps the
    moving average of the weights (``ema_momentum``). A setting the optimizer cannot take is a ``ValueError``.
    """
    kind = _OPTIMIZERS.get(recipe.optimizer)
    if kind is None:
        raise ValueError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}; use one of "
                         f"{sorted(_OPTIMIZERS)}.")
    decoupled = getattr(recipe, "decoupled_weight_decay", 0.0) or 0.0
    if recipe.optimizer == "adamw" and recipe.weight_decay:
        raise ValueError(f"recipe {recipe.name}: weight_decay={recipe.weight_decay} is coupled (added to the "
                         "gradient) but AdamW decays decoupled; set decoupled_weight_decay instead, or use "
                         "optimizer='adam' for a coupled (L2) decay.")
    if recipe.optimizer != "adamw" and decoupled:
        raise ValueError(f"recipe {recipe.name}: decoupled_weight_decay={decoupled} needs optimizer='adamw'; "
                         f"{recipe.optimizer} takes a coupled weight_decay.")
    multiplied = decoder_variable_names(model) if recipe.decoder_lr_multiplier != 1.0 else []
    arguments = dict(multiplied_variables=multiplied, multiplier=recipe.decoder_lr_multiplier,
                     average_weights=recipe.use_ema, average_momentum=recipe.ema_momentum)
    if recipe.optimizer == "sgd":
        arguments.update(momentum=recipe.momentum, coupled_weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        arguments.update(coupled_weight_decay=recipe.weight_decay)
    else:
        arguments.update(decoupled_weight_decay=decoupled)
    return kind(learning_rate, **arguments)


def weight_averages(model):
    """``(variable, moving average)`` for each trainable variable of ``model``, from its optimizer's public
    :meth:`RecipeOptimizerMixin.averaged_variables`; empty when the optimizer keeps no averages (or has not taken
    its first step, when the averages are the weights).

    Raises ``ValueError`` rather than let the raw weights stand for the averages: for an optimizer with Keras'
    ``use_ema`` (its averages are private), or when a trainable variable of ``model`` has no average.
    """
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    if getattr(optimizer, "use_ema", False):
        raise ValueError(f"{type(optimizer).__name__} averages the weights with Keras' use_ema, whose averages are "
                         "private; use refinenet_tf's optimizers with average_weights=True (make_optimizer does for a "
                         "recipe with use_ema).")
    if not isinstance(optimizer, RecipeOptimizerMixin) or not optimizer.average_weights:
        return []
    pairs = optimizer.averaged_variables()
    if not pairs:
        return []
    averaged = {variable.ref() for variable, _ in pairs}
    missing = [variable.name for variable in model.trainable_variables if variable.ref() not in averaged]
    if missing:
        raise ValueError(f"{model.name}: the optimizer has no moving average of {missing[:3]} (of {len(missing)}): "
                         "the trainable variables changed after it was built; compile the model again.")
    return [(variable, average) for variable, average in pairs]


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block ``model``'s trainable weights are its optimizer's moving averages (:func:`weight_averages`);
    after it the raw weights are back. Without averages nothing changes; averages that should be there but
    cannot be found raise ``ValueError``.

    ``fit`` puts the averages into the model for good when it ends (``finalize_variable_values``); this puts
    them in for a while (validation, saving) and training goes on with the raw weights.

    Example:
        >>> model = keras.Sequential([keras.Input([1]), keras.layers.Dense(1, kernel_initializer="ones")])
        >>> model.compile(SGDWithMultipliers(1.0, average_weights=True, average_momentum=0.5), "mse")
        >>> _ = model.train_on_batch(tf.constant([[1.0]]), tf.constant([[-1.0]]))  # kernel 1 -> 1 - 4
        >>> with averaged_weights(model):  # 0.5 * 1 + 0.5 * -3
        ...     float(model.layers[0].kernel[0, 0])
        -1.0
        >>> float(model.layers[0].kernel[0, 0])
        -3.0
    """
    pairs = weight_averages(model)
    with model.distribute_strategy.scope():
        raw = [variable.numpy().copy() for variable, _ in pairs]
        for variable, average in pairs:
            variable.assign(average)
    try:
        yield model
    finally:
        with model.distribute_strategy.scope():
            for (variable, _), value in zip(pairs, raw):
                variable.assign(value)
