"""The recipes' optimizers: learning-rate multipliers, weight decay, schedules and the moving average of the
weights."""

import contextlib

import tensorflow as tf
import tf_keras as keras


__all__ = ["SGDWithMultipliers", "averaged_weights", "decoder_variable_names", "learning_rate_schedule",
           "make_optimizer"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


@_register
class SGDWithMultipliers(keras.optimizers.SGD):
    """SGD with momentum where chosen variables learn ``multiplier`` times faster, and PyTorch-style decay.

    The official RefineNet recipes give the decoder 10x the backbone's learning rate and add the weight decay
    to the gradient (``g + decay * w``) before the step. Both are done here on the gradient, which for SGD
    with momentum is exactly a per-variable learning rate: the update of a multiplied variable is
    ``lr * multiplier * (g + decay * w)`` (through the momentum).

    Args:
        learning_rate: the base (backbone) learning rate or schedule.
        multiplied_variables: names of the variables that get ``multiplier`` (the decoder's).
        multiplier: their learning-rate factor.
        coupled_weight_decay: decay added to every gradient (0: none).
        **kwargs: ``keras.optimizers.SGD`` arguments (``momentum``, ``nesterov``, ``use_ema``, ...).
    """

    def __init__(self, learning_rate=0.01, multiplied_variables=(), multiplier=1.0, coupled_weight_decay=0.0,
                 name="SGDWithMultipliers", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.multiplied_variables = sorted(multiplied_variables)
        self.multiplier = float(multiplier)
        self.coupled_weight_decay = float(coupled_weight_decay)
        self._multiplied = frozenset(self.multiplied_variables)

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        adjusted = []
        for gradient, variable in grads_and_vars:
            if gradient is not None:
                if self.coupled_weight_decay:
                    gradient = gradient + tf.cast(self.coupled_weight_decay, gradient.dtype) * tf.cast(
                        variable, gradient.dtype)
                if variable.name in self._multiplied and self.multiplier != 1.0:
                    gradient = gradient * tf.cast(self.multiplier, gradient.dtype)
            adjusted.append((gradient, variable))
        return super().apply_gradients(adjusted, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(multiplied_variables=self.multiplied_variables, multiplier=self.multiplier,
                      coupled_weight_decay=self.coupled_weight_decay)
        return config


def _backbone_layer(model):
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name}: expected one nested backbone model, found {[l.name for l in nested]}.")
    return nested[0]


def decoder_variable_names(model):
    """Names of the trainable variables that are not the backbone's."""
    backbone = {id(v) for v in _backbone_layer(model).trainable_variables}
    return [v.name for v in model.trainable_variables if id(v) not in backbone]


def learning_rate_schedule(recipe, learning_rate, steps_per_epoch, epochs):
    if recipe.schedule == "constant":
        return learning_rate
    if recipe.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(learning_rate, max(1, steps_per_epoch * epochs), 0.0,
                                                          power=0.9)
    if recipe.schedule == "step":
        boundaries = [steps_per_epoch * recipe.step_epochs * k for k in range(1, max(1, epochs // recipe.step_epochs))]
        if not boundaries:
            return learning_rate
        values = [learning_rate * recipe.step_gamma ** k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"recipe {recipe.name}: unknown schedule {recipe.schedule!r}; use constant, poly or step.")


def make_optimizer(recipe, model, learning_rate):
    """The optimizer of ``recipe`` for ``model``, at ``learning_rate`` (a float or a schedule)."""
    ema = dict(use_ema=recipe.use_ema, ema_momentum=recipe.ema_momentum) if recipe.use_ema else {}
    if recipe.optimizer == "adam":
        if recipe.decoder_lr_multiplier != 1.0 or recipe.weight_decay:
            raise ValueError(f"recipe {recipe.name}: a decoder learning-rate multiplier or coupled weight decay "
                             "needs optimizer='sgd' (Adam normalises gradient scales away).")
        optimizer = keras.optimizers.Adam(learning_rate, **ema)
    elif recipe.optimizer == "sgd":
        optimizer = SGDWithMultipliers(learning_rate, multiplied_variables=decoder_variable_names(model),
                                       multiplier=recipe.decoder_lr_multiplier,
                                       coupled_weight_decay=recipe.weight_decay, momentum=recipe.momentum, **ema)
    else:
        raise ValueError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}; use adam or sgd.")
    return optimizer


def _ema_pairs(model):
    """``(variable, its moving average)`` for the trainable variables the optimizer averages (``use_ema``);
    empty without EMA or before the optimizer's first step."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        return []
    pairs = []
    for variable in model.trainable_variables:
        index = optimizer._index_dict.get(optimizer._var_key(variable))
        if index is not None:
            pairs.append((variable, averages[index]))
    return pairs


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block ``model``'s trainable weights are its optimizer's moving averages (``use_ema``); after
    it the raw weights are back. Without EMA (or before the first training step) nothing changes.

    tf-keras' optimizer keeps the averages but only ``finalize_variable_values`` (at the end of ``fit``) puts
    them into the model, for good; this puts them in for a while (validation, saving) and training goes on
    with the raw weights.
    """
    pairs = _ema_pairs(model)
    raw = [variable.numpy().copy() for variable, _ in pairs]
    for variable, average in pairs:
        variable.assign(average)
    try:
        yield model
    finally:
        for (variable, _), value in zip(pairs, raw):
            variable.assign(value)
