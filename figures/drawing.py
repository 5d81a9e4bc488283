"""How a figure looks and where it goes: the Agg backend, RUN/figures/NAME.png and .pdf, class
names, the members' and the ensemble's symbols, an image without ticks.

Usage::

    from figures import drawing
    fig, ax = drawing.plt.subplots()
    paths = drawing.save(fig, run_dir, "roc_attacks")      # RUN/figures/roc_attacks.png and .pdf
    names = drawing.class_names("fashion_mnist")           # ["T-shirt/top", ...]
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eval.output import save_figure  # noqa: E402

__all__ = ["plt", "save", "figure_path", "class_names", "member_symbol", "ensemble_symbol", "show_image"]

_CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}


def class_names(dataset: str, num_classes: int = 100) -> list[str]:
    """Readable class names (CIFAR-100: the class ids)."""
    return _CLASS_NAMES.get(dataset, [str(i) for i in range(num_classes)])


def member_symbol(i: int) -> str:
    """$f^{i+1}$ for the 0-based member i."""
    return f"$f^{{{i + 1}}}$"


def ensemble_symbol() -> str:
    return "$f^{en}$"


def figure_path(run_dir: str, name: str) -> str:
    """RUN/figures/NAME (without extension)."""
    return os.path.join(run_dir, "figures", name)


def save(fig, run_dir: str, name: str) -> list[str]:
    """Saves fig as RUN/figures/NAME.png and .pdf, closes it, returns the two paths."""
    return save_figure(fig, figure_path(run_dir, name))


def show_image(ax, image: np.ndarray) -> None:
    """An HWC image in [0, 1] (gray when it has one channel), without ticks."""
    image = np.clip(np.asarray(image), 0, 1)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
