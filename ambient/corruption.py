"""Corruptions of the training data, each fixed per image.

Every random draw for image i comes from a generator seeded by (seed, i, stream), so a
dataset's masks and noise are identical across epochs, runs, processes and machines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .layout import AUTO_LOSS, LEVELLESS_KINDS, MASKED_KINDS, NAIVE_SUFFIX, NOISY_KINDS, corruption_name, parse_run_name
from .utils import generator

KINDS = tuple(AUTO_LOSS)
# Independent random streams per image: observation mask A, further corruption B, noise.
_STREAM_A, _STREAM_B, _STREAM_NOISE = 0, 1, 2
# Sampling masks draw from streams of their own: whatever the seeds, sample j's mask is never
# training image j's mask (which would be a key that cues recall of image j).
_STREAM_SAMPLE_A, _STREAM_SAMPLE_B = 3, 4
# A second box that overlaps the first is redrawn (see further_mask); past this many tries the
# remaining disjoint positions are enumerated.
_BOX_TRIES = 64


@dataclass(frozen=True)
class Corruption:
    """What a model's training data went through.

    kind: clean | dust (pixels erased with probability p) | box (a square of side ceil(p*H)
    erased) | noise (additive Gaussian noise of std sigma_n on [-1, 1] images) | gauss (the clean
    images, which that kind's model, the Gaussian baseline of ambient.gaussian, fits by their mean and
    covariance: a kind of model rather than of corruption, kept here so that its run name, `ambient
    train --corruption gauss` and its summary row take the one path every model takes).
    delta: further corruption of dust, each observed pixel erased again with probability delta
    (the official code's default is 0.1). A box's further corruption is a second box of the
    same size (official training/dataset.py), so delta must be 0 for box.
    """

    kind: str = "clean"
    p: float = 0.0
    delta: float = 0.0
    sigma_n: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"corruption kind {self.kind!r} is unknown: use one of {', '.join(KINDS)}")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"corruption p={self.p} must lie in [0, 1)")
        if not 0.0 <= self.delta < 1.0:
            raise ValueError(f"corruption delta={self.delta} must lie in [0, 1)")
        if self.sigma_n < 0:
            raise ValueError(f"corruption sigma_n={self.sigma_n} must be >= 0")
        if self.kind in MASKED_KINDS and self.p <= 0:
            raise ValueError(f"corruption {self.kind} needs p > 0 (p={self.p}); use kind=clean for clean data")
        if self.kind == "noise" and self.sigma_n <= 0:
            raise ValueError("corruption noise needs sigma_n > 0")
        if self.kind == "gauss" and (self.p or self.delta or self.sigma_n):
            raise ValueError("corruption gauss (the Gaussian baseline, clean images) takes no p, delta or sigma_n")
        if self.kind == "box" and self.delta != 0:
            raise ValueError(
                f"corruption box: delta={self.delta} does not apply (a box's further corruption is "
                "a second box of the same size, as in the official code); set delta to 0"
            )

    @property
    def masked(self) -> bool:
        """Whether models trained on this data see masks (ambient inpainting models)."""
        return self.kind in MASKED_KINDS

    @property
    def name(self) -> str:
        return corruption_name(self.kind, self.p, self.sigma_n)

    @property
    def level(self) -> float:
        return self.p if self.kind in MASKED_KINDS else self.sigma_n if self.kind == "noise" else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_name(cls, name: str, delta: float = 0.0, seed: int = 0) -> Corruption:
        try:
            kind, level, naive = parse_run_name(name)
        except ValueError:
            naive = True
        if naive:  # a run name, but a naive baseline's: its corruption is the name without the suffix
            raise ValueError(f"corruption name {name!r} is not one of clean, gauss, dust-pP, box-pP, noise-sS")
        if delta and kind not in MASKED_KINDS:  # else dropped without a word
            masked = ", ".join(MASKED_KINDS)
            raise ValueError(f"delta={delta}: {name} takes no further corruption (delta is for {masked})")
        if kind in LEVELLESS_KINDS:
            return cls(kind, seed=seed)
        if kind in NOISY_KINDS:
            return cls(kind, sigma_n=level, seed=seed)
        return cls(kind, p=level, delta=delta, seed=seed)

    @classmethod
    def of_run(cls, run: str, delta: float = 0.0, seed: int = 0) -> tuple[Corruption, str]:
        """(corruption, loss) a run name was trained with; loss is the `ambient train --loss` value
        (auto | edm). A naive baseline (dust-p0.50-naive, noise-s0.20-naive) is its corruption with
        loss edm, and no further corruption whatever `delta` says (the plain EDM loss draws none), as
        is an unmasked kind."""
        kind, _, naive = parse_run_name(run)
        if not naive:
            return cls.from_name(run, delta=delta if kind in MASKED_KINDS else 0.0, seed=seed), "auto"
        return cls.from_name(run.removesuffix(NAIVE_SUFFIX), seed=seed), "edm"

    # ------------------------------------------------------------ per-image draws

    def _box(self, g: torch.Generator, resolution: int) -> tuple[int, int, int]:
        """(top, left, side) of a box: side ceil(p*H), its corner uniform over the whole image and the
        box clipped at the border (as official torch_utils/ambient_diffusion.get_box_mask)."""
        side = min(resolution, math.ceil(self.p * resolution))
        top, left = (int(v) for v in torch.randint(0, resolution, (2,), generator=g))
        return top, left, side

    @staticmethod
    def _box_mask(resolution: int, top: int, left: int, side: int) -> torch.Tensor:
        mask = torch.ones(1, resolution, resolution)
        mask[:, top : top + side, left : left + side] = 0
        return mask

    def _draw_a(self, g: torch.Generator, resolution: int) -> torch.Tensor:
        if self.kind == "dust":
            return (torch.rand(1, resolution, resolution, generator=g) >= self.p).float()
        if self.kind == "box":
            return self._box_mask(resolution, *self._box(g, resolution))
        return torch.ones(1, resolution, resolution)

    def _draw_b(self, g: torch.Generator, resolution: int, a: torch.Tensor) -> torch.Tensor:
        if self.kind == "dust" and self.delta > 0:
            return (torch.rand(1, resolution, resolution, generator=g) >= self.delta).float()
        if self.kind != "box":
            return torch.ones(1, resolution, resolution)
        # A second box of the same size and position law. The official code lets it overlap the
        # first; the overlap is then hidden in A and A~ alike, P(A_i = 1 | A~) = 0 there and those
        # pixels are never supervised (E[A^T A | A~] not full rank). A disjoint second box keeps
        # every hidden pixel learnable: given A~, either hole may be the real one.
        for _ in range(_BOX_TRIES):
            b = self._box_mask(resolution, *self._box(g, resolution))
            if not torch.any((a == 0) & (b == 0)):
                return b
        side = min(resolution, math.ceil(self.p * resolution))
        free = [
            (top, left)
            for top in range(resolution)
            for left in range(resolution)
            if not torch.any(a[:, top : top + side, left : left + side] == 0)
        ]
        if not free:  # the first box hides the whole image: nothing left to hide
            return torch.ones(1, resolution, resolution)
        top, left = free[int(torch.randint(0, len(free), (1,), generator=g))]
        return self._box_mask(resolution, top, left, side)

    def observation_mask(self, index: int, resolution: int, seed: int | None = None) -> torch.Tensor:
        """A of training image `index`, shape (1, H, W), 1 = observed; shared across channels."""
        seed = self.seed if seed is None else seed
        return self._draw_a(generator(seed, index, _STREAM_A), resolution)

    def further_mask(self, index: int, resolution: int, seed: int | None = None) -> torch.Tensor:
        """B of training image `index`: dust keeps each pixel with probability 1 - delta; box hides a second box."""
        seed = self.seed if seed is None else seed
        a = self.observation_mask(index, resolution, seed) if self.kind == "box" else None
        return self._draw_b(generator(seed, index, _STREAM_B), resolution, a)

    def noise(self, index: int, shape: tuple[int, ...], seed: int | None = None) -> torch.Tensor:
        seed = self.seed if seed is None else seed
        return torch.randn(shape, generator=generator(seed, index, _STREAM_NOISE))

    def dataset_masks(self, num_images: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, A~) for every training image, each (N, 1, H, W); A~ = A * B."""
        a = torch.stack([self.observation_mask(i, resolution) for i in range(num_images)])
        b = torch.stack([self.further_mask(i, resolution) for i in range(num_images)])
        return a, a * b

    def training_masks(self, indices, resolution: int) -> torch.Tensor:
        """A~ = A * B of training images `indices` (N, 1, H, W): exactly training's masks when B is drawn
        once per image (further_draw="image"); with B drawn at every step, image i's A with one such B."""
        return torch.stack(
            [self.observation_mask(int(i), resolution) * self.further_mask(int(i), resolution) for i in indices]
        )

    def redraw_further(self, a: torch.Tensor, generators) -> torch.Tensor:
        """A~ = A * B for observation masks `a` (N, 1, H, W), B drawn from `generators` (one per mask):
        training's further corruption when it is drawn anew at every step (TrainConfig.further_draw)."""
        a_cpu = a.cpu()
        b = torch.stack([self._draw_b(g, a.shape[-1], ai) for g, ai in zip(generators, a_cpu, strict=True)])
        return (a_cpu * b).to(a.device)

    def sampling_masks(self, indices, resolution: int, seed: int) -> torch.Tensor:
        """A~ = A * B for samples `indices`: the training distribution of A~, drawn fresh from the sampling
        streams (never a training image's mask, whatever `seed` is)."""
        out = []
        for j in indices:
            a = self._draw_a(generator(seed, int(j), _STREAM_SAMPLE_A), resolution)
            out.append(a * self._draw_b(generator(seed, int(j), _STREAM_SAMPLE_B), resolution, a))
        return torch.stack(out)

    def apply(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Corrupt a dataset in [-1, 1]: returns (observed images, A, A~).

        Masked kinds zero the erased pixels; noise adds its fixed realisation; clean and gauss are unchanged.
        """
        n, c, h, _ = images.shape
        if self.masked:
            a, a_tilde = self.dataset_masks(n, h)
            return images * a, a, a_tilde
        ones = torch.ones(n, 1, h, h)
        if self.kind == "noise":
            eps = torch.stack([self.noise(i, (c, h, h)) for i in range(n)])
            return images + self.sigma_n * eps, ones, ones
        return images.clone(), ones, ones
