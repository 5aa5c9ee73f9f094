"""Image feature extractors, one registry: `get_extractor(name)` / `resolve_extractor(requested, fallback)`.

Every extractor maps uint8 images (N, C, H, W) to float features (N, D) and carries a `.name`
that every output names. Metrics computed with `inception` (the official weights, checked by
sha256) are called FID/KID; with any other extractor they are `fd_<name>` / `kd_<name>`.

- `inception`: clean-fid's TorchScript Inception-v3 (`InceptionV3W`, pool3 features, 2048-d),
  images resized to 299x299 by clean-fid's "clean" resizer (PIL bicubic on float channels).
  Needs `resources/weights/inception-2015-12-05.pt` (`ambient fetch-weights`).
- `dinov2` / `dinov2_vit{s,b,l,g}14`: DINOv2 features from the local torch hub cache only
  (`<hub>/facebookresearch_dinov2_main` and `<hub>/checkpoints/<model>_pretrain.pth`), with the
  input of the official ambient-diffusion `find_dataset_neighbors.py` (`dinov2_preprocess`):
  pixels in [0, 1] (uint8 / 255; the script maps its [-1, 1] images by (x + 1) / 2), NO
  ImageNet mean/std normalisation, no resize, reflect-padded to a multiple of 14 (floor(pad / 2)
  on top/left, the rest on bottom/right, as its `dnnlib.util.pad_image`); grayscale repeated
  to 3 channels. The output is the hub model's forward, i.e. the CLS token after the final
  LayerNorm (`x_norm_clstoken`), L2-normalised (the script's default `--normalize=True`).
  The paper used ViT-g/14 (`dinov2_vitg14`); the default here is the small ViT-S/14.
- `pixel`: per-image centred pixel vectors, L2-normalised (cosine = Pearson correlation), as
  `neighbors.pixel_features`. Needs nothing.
- `filterbank`: a fixed, analytic multi-scale filter bank (needs nothing, no random numbers).
  On the luminance in [0, 1]: Gabor quadrature pairs at wavelengths 2.5, 5 and 10 px and 4
  orientations (sigma = 0.56 * wavelength, one octave), whose local energy sqrt(even^2 + odd^2)
  gives 12 maps, |difference of Gaussians| at sigma 1, 2, 4 (ratio 1.6) gives 3 maps, and a
  Gaussian low-pass (sigma 2) 1 map; each map is average-pooled on a 2x2 grid (64 values) and
  its spatial standard deviation is added (16 values); RGB images add each colour channel's
  mean and std (6 values): 80 values for grayscale, 86 for RGB, of order 0.1-1 (the scale
  KID's polynomial kernel expects). Noise raises the high-frequency energies and blur lowers
  them, so its Frechet distance grows with either degradation. Its values depend on the image
  resolution: compare sets of the same size only. It is meant for FD/KD: its features are
  positive energies, so cosine similarities between any two faces are near 1 and it is no
  good for nearest neighbours (use `pixel` or `dinov2` there).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import image_files, load_images
from .weights import DEFAULT_WEIGHTS_DIR, weights_path

OFFLINE = ("pixel", "filterbank")
DINOV2_MODELS = ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")
DINOV2_DEFAULT = "dinov2_vits14"
DINOV2_PATCH = 14


class Extractor:
    """Base class: `extractor(images_uint8) -> (N, D) float32` in batches."""

    name: str = "base"
    is_inception: bool = False

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def batch(self, images: torch.Tensor) -> torch.Tensor:  # uint8 (B, C, H, W) on CPU -> (B, D)
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images_uint8: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] not in (1, 3):
            raise ValueError(
                f"{self.name}: expected uint8 images (N, 1|3, H, W), got {images_uint8.dtype} {images_uint8.shape}"
            )
        out = []
        for start in tqdm(
            range(0, len(images_uint8), batch_size), desc=f"features ({self.name})", unit="batch", disable=not progress
        ):
            x = torch.from_numpy(np.ascontiguousarray(images_uint8[start : start + batch_size]))
            out.append(self.batch(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def from_path(self, path: str | os.PathLike, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Features of every image in a zip or folder, in `load_images` order."""
        return self(load_images(path), batch_size=batch_size, progress=progress)

    def describe(self) -> dict:
        return {"extractor": self.name}


# ---------------------------------------------------------------- offline extractors


class PixelExtractor(Extractor):
    name = "pixel"

    def batch(self, images):
        from .neighbors import pixel_features

        return pixel_features(images.numpy())


def _gaussian(sigma: float, half: int) -> torch.Tensor:
    r = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    g = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return g / g.sum()


class FilterBankExtractor(Extractor):
    """Analytic multi-scale Gabor + DoG filter bank with 2x2 pooling (see the module docstring)."""

    name = "filterbank"
    wavelengths = (2.5, 5.0, 10.0)
    orientations = 4
    dog_sigmas = (1.0, 2.0, 4.0)
    lowpass_sigma = 2.0
    grid = 2

    def __init__(self, device="cpu"):
        super().__init__(device)
        # One conv per kernel size: (kernels (K, 1, k, k), kind tags).
        self.banks: list[tuple[int, torch.Tensor, int]] = []  # (half, weights, number of gabor pairs)
        for lam in self.wavelengths:
            sigma = 0.56 * lam
            half = math.ceil(3 * sigma)
            r = torch.arange(-half, half + 1, dtype=torch.float64)
            yy, xx = torch.meshgrid(r, r, indexing="ij")
            env = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
            ks = []
            for k in range(self.orientations):
                th = math.pi * k / self.orientations
                xr = xx * math.cos(th) + yy * math.sin(th)
                even = env * torch.cos(2 * math.pi * xr / lam)
                even = even - env * (even.sum() / env.sum())  # no response to a constant image
                odd = env * torch.sin(2 * math.pi * xr / lam)
                ks += [even / even.norm(), odd / odd.norm()]
            self.banks.append((half, torch.stack(ks)[:, None].float(), self.orientations))
        others = []
        half = math.ceil(3 * 1.6 * max(self.dog_sigmas))
        for s in self.dog_sigmas:
            dog = _gaussian(s, half) - _gaussian(1.6 * s, half)
            others.append(dog / dog.norm())
        others.append(_gaussian(self.lowpass_sigma, half))
        self.banks.append((half, torch.stack(others)[:, None].float(), 0))
        self.banks = [(h, w.to(self.device), n) for h, w, n in self.banks]

    def batch(self, images):
        x = images.to(self.device, torch.float32) / 255.0
        lum = x.mean(dim=1, keepdim=True)
        maps = []
        for half, w, pairs in self.banks:
            r = F.conv2d(F.pad(lum, (half,) * 4, mode="replicate"), w)
            if pairs:
                even, odd = r[:, 0::2], r[:, 1::2]
                maps.append(torch.sqrt(even**2 + odd**2 + 1e-12))
            else:
                maps.append(torch.cat([r[:, :-1].abs(), r[:, -1:]], dim=1))
        m = torch.cat(maps, dim=1)  # (B, 16, H, W)
        pooled = F.adaptive_avg_pool2d(m, self.grid).flatten(1)
        spread = m.flatten(2).std(dim=2, unbiased=False)
        feats = [pooled, spread]
        if x.shape[1] == 3:
            feats += [x.flatten(2).mean(dim=2), x.flatten(2).std(dim=2, unbiased=False)]
        return torch.cat(feats, dim=1)


# ---------------------------------------------------------------- Inception (clean-fid)


class InceptionExtractor(Extractor):
    """clean-fid's TorchScript Inception, loaded with `InceptionV3W(dir, download=False, resize_inside=False)`.

    The weights file is checked against its recorded sha256 before loading (`weights.verify_weights`),
    so a number labelled FID was computed with the official network.
    """

    name = "inception"
    is_inception = True

    def __init__(self, device="cpu", weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR):
        super().__init__(device)
        from cleanfid.inception_torchscript import InceptionV3W

        from .weights import file_sha256, verify_weights

        self.path = verify_weights("inception", weights_dir)
        self.sha256 = file_sha256(self.path)
        try:
            model = InceptionV3W(str(Path(weights_dir)), download=False, resize_inside=False)
        except Exception as e:  # noqa: BLE001 (torch.jit raises RuntimeError and friends)
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ValueError(
                f"{self.path}: cannot load the Inception weights ({e.__class__.__name__}: {msg}); "
                "delete the file and run `ambient fetch-weights --name inception`"
            ) from None
        self.model = model.to(self.device).eval()
        from cleanfid.resize import build_resizer

        self._resize = build_resizer("clean")

    def batch(self, images):
        # As clean-fid's ResizeDataset: RGB uint8 HWC -> clean resize (float32, [0, 255]) -> CHW.
        arrs = []
        for img in images.numpy():
            hwc = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
            arrs.append(torch.from_numpy(self._resize(hwc.transpose(1, 2, 0)).transpose(2, 0, 1).copy()))
        return self.model(torch.stack(arrs).to(self.device))

    @torch.no_grad()
    def from_path(self, path, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Features through clean-fid's own loader (`get_files_features`, mode 'clean', num_workers=0),
        files in sorted order (clean-fid's zip listing is unordered)."""
        from cleanfid.fid import get_files_features

        files, fdir = image_files(path)
        return get_files_features(
            files,
            model=self.model,
            num_workers=0,
            batch_size=batch_size,
            device=self.device,
            mode="clean",
            fdir=fdir,
            verbose=progress,
            description=f"inception {Path(path).name}: ",
        )

    def describe(self) -> dict:
        return {"extractor": self.name, "weights": str(self.path), "weights_sha256": self.sha256}


# ---------------------------------------------------------------- DINOv2 (local torch hub cache)


def dinov2_preprocess(images: torch.Tensor, patch: int = DINOV2_PATCH) -> torch.Tensor:
    """uint8 (N, C, H, W), C in (1, 3) -> float32 (N, 3, H', W'): the DINOv2 input of the official
    `find_dataset_neighbors.py`.

    Values in [0, 1] (x / 255, no ImageNet normalisation); H and W reflect-padded up to the next
    multiple of `patch` with floor(pad / 2) rows/columns on top/left and the rest on bottom/right.
    The official script pads its [-1, 1] images and then maps them by (x + 1) / 2; reflection
    commutes with that affine map, so the order does not matter.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"dinov2_preprocess: expected uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    ph, pw = (-h) % patch, (-w) % patch
    if ph or pw:
        if ph >= h or pw >= w:
            raise ValueError(f"dinov2_preprocess: {h}x{w} images are too small to reflect-pad to a multiple of {patch}")
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")
    return x


def dinov2_paths(model: str = DINOV2_DEFAULT, hub_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    hub = Path(hub_dir) if hub_dir else Path(torch.hub.get_dir())
    return hub / "facebookresearch_dinov2_main", hub / "checkpoints" / f"{model}_pretrain.pth"


class DinoV2Extractor(Extractor):
    def __init__(self, device="cpu", model: str = DINOV2_DEFAULT, hub_dir: str | os.PathLike | None = None):
        super().__init__(device)
        if model not in DINOV2_MODELS:
            raise ValueError(f"unknown DINOv2 model {model!r}: use one of {', '.join(DINOV2_MODELS)}")
        self.name = model
        repo, ckpt = dinov2_paths(model, hub_dir)
        for p, what in ((repo, "DINOv2 hub repository"), (ckpt, "DINOv2 weights")):
            if not p.exists():
                raise FileNotFoundError(
                    f"{p}: {what} not found in the local torch hub cache; fetch it once with "
                    f"torch.hub.load('facebookresearch/dinov2', '{model}') on a machine with internet"
                )
        old = torch.hub.get_dir()
        try:
            torch.hub.set_dir(str(repo.parent))  # the checkpoint is looked up in <hub>/checkpoints, never downloaded
            self.model = torch.hub.load(str(repo), model, source="local", pretrained=True)
        finally:
            torch.hub.set_dir(old)
        self.model = self.model.to(self.device).eval()
        self.weights = ckpt

    def batch(self, images):
        # the hub model's forward returns the normalised CLS token (x_norm_clstoken), as the official script uses
        return F.normalize(self.model(dinov2_preprocess(images.to(self.device))).float(), dim=1)

    def describe(self) -> dict:
        return {"extractor": self.name, "weights": str(self.weights)}


# ---------------------------------------------------------------- registry


def canonical_name(name: str) -> str:
    return DINOV2_DEFAULT if name == "dinov2" else name


def known_extractors() -> tuple[str, ...]:
    return ("inception", "dinov2", *DINOV2_MODELS, *OFFLINE)


def missing_file(name: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> Path | None:
    """The file an extractor needs that is absent, or None when it can be built."""
    name = canonical_name(name)
    if name == "inception":
        p = weights_path("inception", weights_dir)
        return None if p.is_file() else p
    if name in DINOV2_MODELS:
        for p in dinov2_paths(name):
            if not p.exists():
                return p
        return None
    if name in OFFLINE:
        return None
    raise ValueError(f"unknown feature extractor {name!r}: use one of {', '.join(known_extractors())}")


def get_extractor(
    name: str, device: str | torch.device = "cpu", weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR
) -> Extractor:
    """Build the extractor `name`; raises FileNotFoundError (naming the file) when its weights are missing."""
    name = canonical_name(name)
    if name == "pixel":
        return PixelExtractor(device)
    if name == "filterbank":
        return FilterBankExtractor(device)
    if name == "inception":
        return InceptionExtractor(device, weights_dir)
    if name in DINOV2_MODELS:
        return DinoV2Extractor(device, name)
    raise ValueError(f"unknown feature extractor {name!r}: use one of {', '.join(known_extractors())}")


_WARNED: set[tuple[str, str]] = set()


def resolve_extractor(
    requested: str,
    fallback: str | None = None,
    device: str | torch.device = "cpu",
    weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR,
) -> Extractor:
    """`requested` if its weights are present, else `fallback` (warned once per pair, on stderr).

    A weights file that is present but corrupt is an error, never a silent fallback.
    Without a fallback, a missing file raises FileNotFoundError.
    """
    missing = missing_file(requested, weights_dir)
    if missing is None:
        return get_extractor(requested, device, weights_dir)
    if not fallback or fallback == "none":
        raise FileNotFoundError(
            f"{missing}: needed by the {canonical_name(requested)} extractor and not found "
            + ("(run `ambient fetch-weights --name inception`)" if canonical_name(requested) == "inception" else "")
        )
    if missing_file(fallback, weights_dir) is not None:
        raise FileNotFoundError(
            f"{missing}: needed by {requested}, and the fallback {fallback} is missing "
            f"{missing_file(fallback, weights_dir)} too"
        )
    key = (canonical_name(requested), canonical_name(fallback))
    if key not in _WARNED:
        _WARNED.add(key)
        fb = canonical_name(fallback)
        print(
            f"ambient: warning: {missing} not found; the {key[0]} extractor is unavailable, using the "
            f"'{fb}' extractor instead: metrics are labelled fd_{fb} / kd_{fb}, not fid / kid",
            file=sys.stderr,
        )
    return get_extractor(fallback, device, weights_dir)


def metric_keys(extractor: Extractor | str) -> tuple[str, str]:
    """('fid', 'kid') for the official Inception, else ('fd_<name>', 'kd_<name>')."""
    if isinstance(extractor, Extractor):
        is_inc, name = extractor.is_inception, extractor.name
    else:
        is_inc, name = extractor == "inception", extractor
    return ("fid", "kid") if is_inc else (f"fd_{name}", f"kd_{name}")
