"""Ensemble member architectures; every member returns logits.

Usage::

    from cce_tf.models import build_member
    member = build_member("cnn", input_shape=(32, 32, 3), num_classes=10)

Parts:
    cnn_layers       the standard CNNs of the paper's Table 8 (columns MNIST, CIFAR10, CIFAR100)
    resnet20_v1      ResNet-20 v1 as in ADP's code (Pang et al. 2019), used for the paper's Table 3
    build_member     arch name -> keras.Model mapping [0,1] images to logits
    feature_layers   the intermediate features DVERGE may distil at, input side first
    feature_model    member input -> the chosen candidate feature(s), sharing the member's weights

`arch="cnn"` picks the Table 8 column from the input and class count: 1-channel inputs use the
MNIST column (MNIST, Fashion-MNIST), 100 classes the CIFAR100 column, otherwise the CIFAR10 one.
Inputs are [0,1] pixels with no mean subtracted (DESIGN.md, contract 1; see docs/differences.md).
"""
from __future__ import annotations

import keras
from keras import layers

from cce_tf.config import ARCHS

# Table 8: (convs per block, filters of block 1, filters of block 2, dense width, dense layers after dropout)
_TABLE8 = {
    "mnist": (2, 32, 64, 200, 1),
    "cifar10": (2, 64, 128, 256, 1),
    "cifar100": (3, 64, 128, 256, 2),
}


def table8_column(input_shape: tuple[int, int, int], num_classes: int) -> str:
    """The Table 8 column that serves this input: 'mnist', 'cifar10' or 'cifar100'."""
    if input_shape[-1] == 1:
        return "mnist"
    return "cifar100" if num_classes == 100 else "cifar10"


def cnn_layers(column: str, num_classes: int) -> list[layers.Layer]:
    """Table 8: Conv(k) is 3x3, stride 1, ReLU; FC(k) is linear unless followed by ReLU; dropout 0.5."""
    n_conv, f1, f2, width, n_dense_after = _TABLE8[column]
    stack: list[layers.Layer] = []
    for filters in (f1, f2):
        stack += [layers.Conv2D(filters, 3, activation="relu") for _ in range(n_conv)]
        stack.append(layers.MaxPooling2D())
    stack += [layers.Flatten(), layers.Dense(width, activation="relu"), layers.Dropout(0.5)]
    stack += [layers.Dense(width, activation="relu") for _ in range(n_dense_after)]
    stack.append(layers.Dense(num_classes))  # logits: the softmax of Table 8 lives in the losses
    return stack


def _conv_bn(x, filters: int, kernel_size: int = 3, strides: int = 1, relu: bool = True,
             batch_norm: bool = True):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      kernel_initializer="he_normal",
                      kernel_regularizer=keras.regularizers.l2(1e-4))(x)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x) if relu else x


def resnet20_v1(inputs, num_classes: int):
    """ResNet-20 v1: 16/32/64 filters, 3 basic blocks a stage, BN, 1x1 projection shortcuts, GAP."""
    x = _conv_bn(inputs, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn(x, filters, strides=strides)
            y = _conv_bn(y, filters, relu=False)
            if strides != 1:  # dimensions change: linear 1x1 projection, as ADP's resnet_v1
                x = _conv_bn(x, filters, kernel_size=1, strides=strides, relu=False, batch_norm=False)
            x = layers.Activation("relu")(layers.add([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(num_classes, kernel_initializer="he_normal")(x)


def build_member(arch: str, input_shape: tuple[int, int, int], num_classes: int,
                 name: str | None = None) -> keras.Model:
    """One ensemble member: [0,1] NHWC images -> logits [B, num_classes]."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    inputs = keras.Input(shape=tuple(input_shape))
    if arch == "resnet20":
        outputs = resnet20_v1(inputs, num_classes)
    else:
        outputs = inputs
        for layer in cnn_layers(table8_column(tuple(input_shape), num_classes), num_classes):
            outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=name)


def feature_layers(member: keras.Model) -> list:
    """The candidate features of a member for DVERGE's distillation, input side first; the last
    is the logits. Returns the KerasTensors of the member's functional graph.

    DVERGE distils at one of ResNet-20's 20 "layers" *before* their ReLU (DVERGE models/resnet.py,
    get_features with before_relu=True): the stem's BN output, each block's first BN output and its
    residual sum, and the logits. Here that is the input of every ReLU Activation layer, then the
    logits: 1 + 9 x 2 + 1 = 20 for ResNet-20. The Table 8 CNNs fuse the ReLU into their Conv2D and
    Dense layers, so their candidates are those layers' (post-ReLU) outputs: every convolution, every
    hidden dense layer, and the logits (7 for the MNIST and CIFAR10 columns, 10 for CIFAR100).
    """
    found = []
    for layer in member.layers:
        if isinstance(layer, layers.Activation):
            found.append(layer.input)
        elif isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.activation is keras.activations.relu:
            found.append(layer.output)
    return found + [member.output]


def feature_model(member: keras.Model, index: int | list[int] | None = None) -> keras.Model:
    """A keras.Model from the member's input to its candidate feature `index` (see feature_layers),
    a list of them, or all of them (None); it shares the member's weights."""
    candidates = feature_layers(member)
    if index is None:
        outputs = candidates
    elif isinstance(index, int):
        outputs = candidates[index]
    else:
        outputs = [candidates[i] for i in index]
    return keras.Model(member.input, outputs)
