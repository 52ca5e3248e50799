"""The tests' oracle: PyTorch implementations of the official RefineNet / Light-Weight RefineNet structures,
kept with the tests (not in the package's wheel).

Written here from the releases' published architecture (``DrSleep/light-weight-refinenet`` models/resnet.py,
models/mobilenet.py; ``DrSleep/refinenet-pytorch`` models/resnet.py), with the releases' module names so that
``state_dict()`` has the keys of the official checkpoints. Every function returns the raw logits at 1/4 of the
input, as the releases do; inputs are preprocessed images (NCHW, RGB / 255, ImageNet mean and std).

* ``LightWeightResNet(blocks)``: ``rf_lw50`` / ``rf_lw101`` / ``rf_lw152``.
* ``LightWeightMobileNetV2()``: ``mbv2`` (ReLU6 in the backbone and after each fusion).
* ``RefineNetResNet(blocks)``: ``rf101`` of refinenet-pytorch (RCUs, 3x3 convs everywhere).
* ``MultiTaskMobileNetV2(num_classes, num_tasks)``: ``net`` of ``DrSleep/multi-task-refinenet`` (src/models.py):
  the MobileNetV2 above, its decoder with ``align_corners=False`` and a depthwise last pooling, and per task a
  depthwise 1x1 -> ReLU6 -> 3x3 head; returns the raw head outputs ``(segm, depth[, normals])`` at 1/4.
"""

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    raise ImportError('tests/torch_reference.py needs PyTorch: pip install "refinenet_tf[torch]"') from None

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LAYERS", "Bottleneck", "CRPBlock", "InvertedResidualBlock",
           "LightWeightMobileNetV2", "LightWeightResNet", "MultiTaskMobileNetV2", "RCUBlock", "RefineNetResNet",
           "build", "preprocess", "randomize"]

LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(images_uint8_nhwc):
    """The releases' input: RGB / 255, minus the ImageNet mean, over its std; NHWC uint8 numpy -> NCHW float."""
    x = torch.as_tensor(np.array(images_uint8_nhwc)).float().permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _conv(in_channels, out_channels, kernel_size, stride=1, bias=False, groups=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias,
                     groups=groups)


def _upsample(x, like):
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


class Bottleneck(nn.Module):
    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        self.conv1 = _conv(in_channels, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, 4 * planes, 1)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or in_channels != 4 * planes:
            self.downsample = nn.Sequential(_conv(in_channels, 4 * planes, 1, stride), nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class _ResNetEncoder(nn.Module):
    """torchvision's ResNet trunk: ``conv1``, ``bn1``, max-pool, ``layer1`` .. ``layer4``."""

    def _make_encoder(self, blocks):
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
            stride = 1 if index == 1 else 2
            stage = []
            for block in range(count):
                stage.append(Bottleneck(in_channels, planes, stride if block == 0 else 1))
                in_channels = 4 * planes
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        self.do = nn.Dropout(0.5)

    def encode(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return l1, l2, self.do(l3), self.do(l4)


class CRPBlock(nn.Module):
    """Chained residual pooling: ``top = conv_i(maxpool5x5(top)); x = x + top`` for each stage (``groups``: the
    multi-task release's depthwise ``crp1``)."""

    def __init__(self, in_channels, out_channels, stages, kernel_size, groups=1):
        super().__init__()
        for i in range(stages):
            setattr(self, f"{i + 1}_outvar_dimred",
                    _conv(in_channels if i == 0 else out_channels, out_channels, kernel_size, groups=groups))
        self.stages = stages
        self.maxpool = nn.MaxPool2d(5, stride=1, padding=2)

    def forward(self, x):
        top = x
        for i in range(self.stages):
            top = getattr(self, f"{i + 1}_outvar_dimred")(self.maxpool(top))
            x = top + x
        return x


def _crp(channels, kernel_size):
    return nn.Sequential(CRPBlock(channels, channels, 4, kernel_size))


class LightWeightResNet(_ResNetEncoder):
    def __init__(self, blocks, num_classes=21):
        super().__init__()
        self._make_encoder(blocks)
        self.p_ims1d2_outl1_dimred = _conv(2048, 512, 1)
        self.mflow_conv_g1_pool = _crp(512, 1)
        self.mflow_conv_g1_b3_joint_varout_dimred = _conv(512, 256, 1)
        for stage, channels in zip((2, 3, 4), (1024, 512, 256)):
            setattr(self, f"p_ims1d2_outl{stage}_dimred", _conv(channels, 256, 1))
            setattr(self, f"adapt_stage{stage}_b2_joint_varout_dimred", _conv(256, 256, 1))
            setattr(self, f"mflow_conv_g{stage}_pool", _crp(256, 1))
            if stage < 4:
                setattr(self, f"mflow_conv_g{stage}_b3_joint_varout_dimred", _conv(256, 256, 1))
        self.clf_conv = _conv(256, num_classes, 3, bias=True)

    def forward(self, x):
        levels = self.encode(x)[::-1]  # l4, l3, l2, l1
        x = self.mflow_conv_g1_pool(F.relu(self.p_ims1d2_outl1_dimred(levels[0])))
        for stage in (2, 3, 4):
            x = _upsample(getattr(self, f"mflow_conv_g{stage - 1}_b3_joint_varout_dimred")(x), levels[stage - 1])
            skip = getattr(self, f"p_ims1d2_outl{stage}_dimred")(levels[stage - 1])
            skip = getattr(self, f"adapt_stage{stage}_b2_joint_varout_dimred")(skip)
            x = getattr(self, f"mflow_conv_g{stage}_pool")(F.relu(skip + x))
        return self.clf_conv(x)


class RCUBlock(nn.Module):
    """``blocks`` residual conv units: ``x + conv_b(relu(conv_a(relu(x))))``, only ``conv_a`` with a bias."""

    def __init__(self, channels, blocks):
        super().__init__()
        for i in range(blocks):
            setattr(self, f"{i + 1}_conv", _conv(channels, channels, 3, bias=True))
            setattr(self, f"{i + 1}_conv_relu_varout_dimred", _conv(channels, channels, 3))
        self.blocks = blocks

    def forward(self, x):
        for i in range(self.blocks):
            y = getattr(self, f"{i + 1}_conv")(F.relu(x))
            x = x + getattr(self, f"{i + 1}_conv_relu_varout_dimred")(F.relu(y))
        return x


class RefineNetResNet(_ResNetEncoder):
    def __init__(self, blocks, num_classes=21):
        super().__init__()
        self._make_encoder(blocks)
        for stage, (in_channels, width) in enumerate(((2048, 512), (1024, 256), (512, 256), (256, 256)), start=1):
            setattr(self, f"p_ims1d2_outl{stage}_dimred", _conv(in_channels, width, 3))
            setattr(self, f"adapt_stage{stage}_b", nn.Sequential(RCUBlock(width, 2)))
            if stage > 1:
                setattr(self, f"adapt_stage{stage}_b2_joint_varout_dimred", _conv(256, 256, 3))
            setattr(self, f"mflow_conv_g{stage}_pool", _crp(width, 3))
            setattr(self, f"mflow_conv_g{stage}_b", nn.Sequential(RCUBlock(width, 3)))
            if stage < 4:
                setattr(self, f"mflow_conv_g{stage}_b3_joint_varout_dimred", _conv(width, 256, 3))
        self.clf_conv = _conv(256, num_classes, 3, bias=True)

    def forward(self, x):
        levels = self.encode(x)[::-1]
        x = None
        for stage in (1, 2, 3, 4):
            skip = getattr(self, f"adapt_stage{stage}_b")(getattr(self, f"p_ims1d2_outl{stage}_dimred")(levels[stage - 1]))
            if x is not None:
                x = _upsample(getattr(self, f"mflow_conv_g{stage - 1}_b3_joint_varout_dimred")(x), levels[stage - 1])
                skip = getattr(self, f"adapt_stage{stage}_b2_joint_varout_dimred")(skip) + x
            x = getattr(self, f"mflow_conv_g{stage}_b")(getattr(self, f"mflow_conv_g{stage}_pool")(F.relu(skip)))
        return self.clf_conv(self.do(x))


def _conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, relu6=True):
    parts = [_conv(in_channels, out_channels, kernel_size, stride, groups=groups), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*(parts + [nn.ReLU6()] if relu6 else parts))


class InvertedResidualBlock(nn.Module):
    def __init__(self, in_channels, out_channels, expansion, stride):
        super().__init__()
        hidden = in_channels * expansion
        self.residual = in_channels == out_channels and stride == 1
        self.output = nn.Sequential(_conv_bn(in_channels, hidden, 1),
                                    _conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                    _conv_bn(hidden, out_channels, 1, relu6=False))

    def forward(self, x):
        out = self.output(x)
        return out + x if self.residual else out


class LightWeightMobileNetV2(nn.Module):
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, num_classes=21):
        super().__init__()
        self.layer1 = _conv_bn(3, 32, 3, stride=2)
        channels = 32
        for layer, (expansion, out_channels, blocks, stride) in enumerate(self.STAGES, start=2):
            stage = []
            for block in range(blocks):
                stage.append(InvertedResidualBlock(channels, out_channels, expansion, stride if block == 0 else 1))
                channels = out_channels
            setattr(self, f"layer{layer}", nn.Sequential(*stage))
        for index, in_channels in zip((8, 7, 6, 5, 4, 3), (320, 160, 96, 64, 32, 24)):
            setattr(self, f"conv{index}", _conv(in_channels, 256, 1))
        for index in (4, 3, 2, 1):
            setattr(self, f"crp{index}", _crp(256, 1))
        for index in (4, 3, 2):
            setattr(self, f"conv_adapt{index}", _conv(256, 256, 1))
        self.segm = _conv(256, num_classes, 3, bias=True)

    def upsample(self, x, like):
        return _upsample(x, like)

    def decode(self, x):
        """The encoder and the Light-Weight decoder: the features after ``crp1`` at 1/4 of the input."""
        x = self.layer2(self.layer1(x))
        l3 = self.layer3(x)
        l4 = self.layer4(l3)
        l5 = self.layer5(l4)
        l6 = self.layer6(l5)
        l7 = self.layer7(l6)
        l8 = self.layer8(l7)
        x = self.crp4(F.relu6(self.conv8(l8) + self.conv7(l7)))
        x = self.upsample(self.conv_adapt4(x), l6)
        x = self.crp3(F.relu6(self.conv5(l5) + self.conv6(l6) + x))
        x = self.upsample(self.conv_adapt3(x), l4)
        x = self.crp2(F.relu6(x + self.conv4(l4)))
        x = self.upsample(self.conv_adapt2(x), l3)
        return self.crp1(F.relu6(self.conv3(l3) + x))

    def forward(self, x):
        return self.segm(self.decode(x))


class MultiTaskMobileNetV2(LightWeightMobileNetV2):
    """The multi-task release's ``Net``: the same encoder and 1x1 convs, half-pixel upsampling, ``crp1`` grouped."""

    def __init__(self, num_classes=40, num_tasks=2):
        super().__init__(num_classes)
        del self.segm
        self.crp1 = nn.Sequential(CRPBlock(256, 256, 4, 1, groups=256))
        self.num_tasks = num_tasks
        heads = (("pre_segm", "segm", num_classes), ("pre_depth", "depth", 1), ("pre_normal", "normal", 3))
        self.heads = [(pre, out) for pre, out, _ in heads[:num_tasks]]
        for pre, out, channels in heads[:num_tasks]:
            setattr(self, pre, _conv(256, 256, 1, groups=256))
            setattr(self, out, _conv(256, channels, 3, bias=True))

    def upsample(self, x, like):
        return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        x = self.decode(x)
        return tuple(getattr(self, out)(F.relu6(getattr(self, pre)(x))) for pre, out in self.heads)


def build(architecture, num_classes=21, num_tasks=2):
    """The reference module of a preset name (``lw_resnet50_official`` ...), in eval mode (``num_tasks``: the
    multi-task model's heads, 2 or 3)."""
    if architecture == "multitask_mobilenetv2_official":
        model = MultiTaskMobileNetV2(num_classes, num_tasks)
    elif architecture == "lw_mobilenetv2_official":
        model = LightWeightMobileNetV2(num_classes)
    elif architecture == "refinenet_resnet101_official":
        model = RefineNetResNet(LAYERS[101], num_classes)
    else:
        depth = int(architecture[len("lw_resnet"):-len("_official")])
        model = LightWeightResNet(LAYERS[depth], num_classes)
    return model.eval()


def randomize(model, seed=0):
    """Random weights and non-trivial BatchNorm statistics (running mean/var, affine), in place; returns it.

    Conv kernels keep PyTorch's default initialisation (drawn from ``seed``); every BatchNorm gets a random
    running mean (N(0, 0.1)), running variance (U(0.5, 2)), scale (U(0.5, 1.5)) and shift (N(0, 0.1)), so that a
    swapped or transposed statistic changes the output.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
        elif isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(size, generator=generator))
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
            module.num_batches_tracked.fill_(1000)
    return model
