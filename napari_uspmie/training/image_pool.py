"""History of generated images for discriminator updates (Shrivastava et al. 2017).

CycleGAN, and LaMEGAN after it, show each discriminator a mix of the newest fakes and
older ones, which damps oscillation between generator and discriminator.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["ImagePool"]


class ImagePool:
    """Buffer of up to ``pool_size`` generated images.

    :meth:`query` returns, for every image of the batch: the image itself while the pool
    is filling; afterwards, with probability ``swap_prob``, a stored image (which the new
    one replaces), otherwise the new image.

    Args:
        pool_size: capacity (paper: 100); 0 disables the pool (``query`` returns its input).
        swap_prob: probability of returning a stored image once the pool is full (paper: 0.5).
        seed: seed of the pool's own random generator, for reproducible runs.
    """

    def __init__(self, pool_size: int = 100, swap_prob: float = 0.5, seed: int | None = None) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}.")
        if not 0.0 <= swap_prob <= 1.0:
            raise ValueError(f"swap_prob must be in [0, 1], got {swap_prob}.")
        self.pool_size = int(pool_size)
        self.swap_prob = float(swap_prob)
        self.images: list[torch.Tensor] = []
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Mix a batch ``(B, ...)`` of new fakes with stored ones.

        Returns:
            A detached batch of the same shape; stored images are detached clones.
        """
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif self._rng.random() < self.swap_prob:
                index = self._rng.randrange(self.pool_size)
                out.append(self.images[index].to(image.device, copy=True))
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (on CPU) and the random generator's state, for checkpoints."""
        return {"images": [image.cpu() for image in self.images], "rng": self._rng.getstate()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (stored images move to the fakes' device when returned)."""
        images = list(state["images"])
        if len(images) > self.pool_size:
            raise ValueError(f"checkpoint pool holds {len(images)} images, more than pool_size={self.pool_size}.")
        self.images = images
        rng = state["rng"]
        self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))
