"""Training recipes as data: what to train and how, each with its source.

A :class:`Recipe` is a frozen dataclass of plain values; :data:`RECIPES` holds the published ones by name.
A recipe of your own is a :class:`Recipe` object: give it to ``TrainConfig(recipe=...)`` directly, or
:func:`register_recipe` it to use its name (``refinenet-tf train --recipe NAME`` in a process that registered
it). This module imports no TensorFlow, so that the command line can list the recipes without it.

Example:
    >>> recipe = Recipe("my_lw50", "lw_resnet50", "my experiment", learning_rate=1e-3, epochs=5)
    >>> register_recipe(recipe) is recipe, get_recipe("my_lw50").epochs
    (True, 5)
    >>> _ = RECIPES.pop("my_lw50")
"""

import dataclasses

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "register_recipe"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one model.

    Attributes:
        name: the recipe's name.
        model: a model preset (:func:`refinenet_tf.models.list_models`).
        source: where the settings come from.
        optimizer: ``"sgd"`` (momentum), ``"adam"`` or ``"adamw"``
            (:func:`refinenet_tf.training.make_optimizer`).
        learning_rate: the backbone's learning rate.
        decoder_lr_multiplier: the decoder learns this many times faster (its learning rate, for every
            optimizer).
        momentum: SGD momentum.
        weight_decay: coupled weight decay, added to the gradient as PyTorch's ``SGD`` and ``Adam`` do (sgd,
            adam; refused with adamw); the slim recipes' L2 lives in the model instead
            (``RefineNet(weight_decay=...)``).
        decoupled_weight_decay: AdamW's decay, ``w -= lr * decay * w`` each step (adamw only).
        schedule: ``"constant"``, ``"poly"`` (``(1 - step / steps) ** 0.9``) or ``"step"`` (multiplied by
            ``step_gamma`` at every ``step_epochs`` boundary: epochs 100 and 200 of 250 with step 100).
        step_epochs, step_gamma: for ``"step"``.
        warmup_epochs: a linear warm-up of the learning rate over this many epochs (may be a fraction) in front
            of the schedule (:class:`refinenet_tf.training.optimizers.LinearWarmup`); 0: none.
        use_ema: keep an exponential moving average of the weights (the optimizer's ``average_weights``);
            training updates the raw weights, while validation, ``best.weights.h5``, ``last.weights.h5`` and
            ``model.keras`` use the averaged ones (:class:`refinenet_tf.training.AveragedWeights`).
        ema_momentum: its decay.
        freeze_batch_norm: run every BatchNorm layer in inference mode and do not train it.
        crop_size, batch_size, epochs: the data side.
        min_scale, max_scale: range of the random rescaling of training images.
        model_kwargs: extra arguments of the preset's builder (:func:`refinenet_tf.RefineNet`, or
            ``MultiTaskRefineNet`` for a multi-task preset).
        loss_weights: per-task loss weights of a multi-task model (``{"segmentation": 0.5, "depth": 0.5}``);
            empty for a segmentation model.
        depth_loss: the depth loss of a multi-task model, ``"berhu"`` or ``"l1"``
            (:func:`refinenet_tf.models.losses.depth_loss`).
        scale_depth: RGB-D training: divide depth by the random zoom factor (see
            :func:`refinenet_tf.data.make_dataset`).
    """

    name: str
    model: str
    source: str
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    decoder_lr_multiplier: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    decoupled_weight_decay: float = 0.0
    schedule: str = "constant"
    step_epochs: int = 100
    step_gamma: float = 0.5
    warmup_epochs: float = 0.0
    use_ema: bool = False
    ema_momentum: float = 0.99
    freeze_batch_norm: bool = False
    crop_size: int = 512
    batch_size: int = 8
    epochs: int = 100
    min_scale: float = 0.5
    max_scale: float = 2.0
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    loss_weights: dict = dataclasses.field(default_factory=dict)
    depth_loss: str = "berhu"
    scale_depth: bool = False

    @property
    def multitask(self):
        """Whether the recipe trains a multi-task (segmentation + depth) model: it has per-task loss weights."""
        return bool(self.loss_weights)


_SLIM_SOURCE = ("the reference blog's TF-slim training: Adam 1e-4, L2 1e-5 on every conv (in the model), moving "
                "average 0.997 of the weights, 512 x 512 crops; batch size and epochs are our defaults; trained "
                "without the reference code's ReLU on the logits (logits_relu=False), which would keep every logit "
                ">= 0 and stall the classes it pushes to 0 (slim_resnet101_seed keeps it)")
_SLIM_SEED_SOURCE = ("the reference blog's TF-slim training reproduced exactly, the reference code's ReLU on the "
                     "logits included (logits_relu=True, as its slim.conv2d(..., activation_fn=tf.nn.relu)): Adam "
                     "1e-4, L2 1e-5 on every conv (in the model), moving average 0.997 of the weights, 512 x 512 "
                     "crops; batch size and epochs are our defaults; for fine-tuning the reference checkpoints, "
                     "converted with their ReLU (refinenet_tf.convert.slim), the way they were trained")
_PAPER_SOURCE = ("RefineNet (Lin et al., CVPR 2017) trained as the official releases do: SGD with momentum 0.9, "
                 "decoder learning rate 10x the backbone's, weight decay; the values are our defaults, not "
                 "reproduced here")
_LW_SOURCE = ("Light-Weight RefineNet (Nekrasov et al., BMVC 2018) official training configuration as we read it: "
              "SGD momentum 0.9, encoder 5e-4 / decoder 5e-3, weight decay 1e-5, BatchNorm frozen, 500 crops, "
              "batch 6, learning rate halved every 100 epochs; not reproduced here")
_MULTITASK_SOURCE = (
    "DenseTorch's multi-task example (github.com/DrSleep/DenseTorch, examples/multitask/config.py and train.py), "
    "after Nekrasov et al., Real-Time Joint Semantic Segmentation and Depth Estimation Using Asymmetric "
    "Annotations, ICRA 2019: SGD momentum 0.9, encoder 1e-3 / decoder 1e-2, weight decay 1e-5 on both, loss "
    "weights 0.5 / 0.5 (cross-entropy ignoring 255, inverse Huber ignoring depth 0), 400 x 400 random crops with "
    "mirroring and no rescaling, batch 4, 1000 epochs, learning rate x0.1 every 100 epochs (DenseTorch's "
    "MultiStepLR milestones are arange(start + 1, 1000, 100), so its first decay comes after epoch 1; here at "
    "epochs 100, 200, ...), BatchNorm trained; its README says these are not the paper's hyperparameters; not "
    "reproduced here")
_JOINT_DEMO_SOURCE = (
    "this project's joint demo: the multi-task Light-Weight RefineNet, its decoder 64 wide, on the synthetic RGB-D "
    "scenes (refinenet_tf.data.synthetic.write_rgbd_dataset), from scratch, sized for 2 CPU cores. Its decoder has "
    "no BatchNorm: from random weights, 256 wide, Adam at 3e-4 (and at 1e-3 with BatchNorm momentum 0.9) froze "
    "it within an epoch (one class everywhere) and 1e-4 learnt no shape in 12 epochs; 64 wide, 1e-3 learns both "
    "tasks and 2e-3 froze it. "
    "Segmentation weighs 1.0 and depth 0.2: the inverse Huber loss in metres is several times the cross-entropy")

#: recipe name -> :class:`Recipe`.
RECIPES = {recipe.name: recipe for recipe in [
    Recipe("slim_resnet101_voc", "slim_resnet101", _SLIM_SOURCE, optimizer="adam", learning_rate=1e-4,
           use_ema=True, ema_momentum=0.997, crop_size=512, batch_size=8, epochs=100,
           model_kwargs={"logits_relu": False}),
    Recipe("slim_resnet101_seed", "slim_resnet101", _SLIM_SEED_SOURCE, optimizer="adam", learning_rate=1e-4,
           use_ema=True, ema_momentum=0.997, crop_size=512, batch_size=8, epochs=100,
           model_kwargs={"logits_relu": True}),
    Recipe("refinenet_resnet101_voc", "refinenet_resnet101", _PAPER_SOURCE, optimizer="sgd", learning_rate=5e-4,
           decoder_lr_multiplier=10.0, weight_decay=1e-5, schedule="poly", crop_size=512, batch_size=8,
           epochs=100),
    Recipe("demo_shapes", "slim_mobilenetv2", "this project's demo: the slim RefineNet, 64 wide, on MobileNetV2 "
           "from scratch on the synthetic shapes dataset (refinenet_tf.data.synthetic), sized for 2 CPU cores; "
           "BatchNorm momentum 0.9 so that its statistics settle within a few hundred steps; no ReLU on the logits "
           "(logits_relu=False), as every recipe that trains from scratch",
           optimizer="adam", learning_rate=1e-3, crop_size=128, batch_size=8, epochs=15, min_scale=0.75,
           max_scale=1.25, model_kwargs={"decoder_features": 64, "batch_norm_momentum": 0.9, "logits_relu": False}),
    Recipe("multitask_mobilenetv2_nyud", "multitask_mobilenetv2_official", _MULTITASK_SOURCE, optimizer="sgd",
           learning_rate=1e-3, decoder_lr_multiplier=10.0, momentum=0.9, weight_decay=1e-5, schedule="step",
           step_epochs=100, step_gamma=0.1, crop_size=400, batch_size=4, epochs=1000, min_scale=1.0,
           max_scale=1.0, loss_weights={"segmentation": 0.5, "depth": 0.5}, depth_loss="berhu"),
    Recipe("demo_joint", "multitask_mobilenetv2_official", _JOINT_DEMO_SOURCE, optimizer="adam", learning_rate=1e-3,
           crop_size=96, batch_size=8, epochs=30, min_scale=1.0, max_scale=1.0,
           model_kwargs={"decoder_features": 64}, loss_weights={"segmentation": 1.0, "depth": 0.2},
           depth_loss="berhu"),
] + [
    Recipe(f"lw_{backbone}_voc", f"lw_{backbone}", _LW_SOURCE, optimizer="sgd", learning_rate=5e-4,
           decoder_lr_multiplier=10.0, weight_decay=1e-5, schedule="step", step_epochs=100, freeze_batch_norm=True,
           crop_size=500, batch_size=6, epochs=300)
    for backbone in ("resnet50", "resnet101", "resnet152", "mobilenetv2")
]}


def list_recipes():
    """Names of the recipes.

    Example:
        >>> "lw_resnet50_voc" in list_recipes()
        True
    """
    return sorted(RECIPES)


def get_recipe(recipe):
    """The :class:`Recipe` called ``recipe``; a :class:`Recipe` object is returned as it is."""
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[recipe]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown recipe {recipe!r}; use one of {list_recipes()} or a Recipe object.") from None


def register_recipe(recipe, overwrite=False):
    """Adds ``recipe`` (a :class:`Recipe`) to :data:`RECIPES` under its name; returns it.

    A name that is taken is refused unless ``overwrite``.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe= must be a Recipe, got {type(recipe).__name__}.")
    if recipe.name in RECIPES and not overwrite and RECIPES[recipe.name] != recipe:
        raise ValueError(f"recipe {recipe.name!r} is already registered; pass overwrite=True to replace it.")
    RECIPES[recipe.name] = recipe
    return recipe
