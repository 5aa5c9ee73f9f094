"""A compact U-Net and EDM preconditioning (kept apart, as in NVlabs/edm).

The U-Net maps (input image channels, c_noise) to an output of `out_channels`; the
preconditioning wraps it into a denoiser D(x, sigma[, mask]). Ambient models get the
mask as extra input channels and never see a pixel outside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .settings import check_settings, setting


@dataclass
class UNetConfig:
    """The U-Net's settings (the workflow schema's `network` section is generated from them)."""

    base_channels: int = setting(32, minimum=1, help="channels of the U-Net's first level")
    channel_mult: list[int] = setting(
        factory=lambda: [1, 2, 2], min_items=1, item_minimum=1, help="channel multiplier per level (one level each)"
    )
    num_blocks: int = setting(1, minimum=1, help="residual blocks per level")
    attn_resolutions: list[int] = setting(
        factory=lambda: [6], item_minimum=1, help="feature-map sizes with self-attention"
    )
    dropout: float = setting(0.0, minimum=0, exclusive_maximum=1, help="dropout probability")

    def __post_init__(self):
        check_settings(self, "network: ")

    def resolutions(self, resolution: int) -> list[int]:
        """The feature-map sizes of the encoder levels for a `resolution`-pixel image."""
        out = [resolution]
        for _ in self.channel_mult[1:]:
            out.append((out[-1] + 1) // 2)
        return out

    def check_resolution(self, resolution: int) -> None:
        """Attention at a size the network never has would silently do nothing: refuse it."""
        if resolution < 1:
            raise ValueError(f"network: image resolution {resolution} must be >= 1")
        have = self.resolutions(resolution)
        bad = [r for r in self.attn_resolutions if r not in have]
        if bad:
            raise ValueError(
                f"network: attn_resolutions={bad} are not among this network's feature-map sizes "
                f"{have} (image {resolution} px, channel_mult {self.channel_mult}); use some of {have} or []"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(channels: int) -> int:
    return min(32, max(1, channels // 4))


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SinusoidalEmbedding(nn.Module):
    def __init__(self, channels: int, max_positions: int = 10000):
        super().__init__()
        half = channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = t.float()[:, None] * self.freqs[None]
        return torch.cat([x.cos(), x.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the noise embedding scales and shifts the second norm."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class Attention(nn.Module):
    def __init__(self, channels: int, head_channels: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, resolution: int, config: UNetConfig | None = None):
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        base, emb_ch = cfg.base_channels, cfg.base_channels * 4
        self.embed = SinusoidalEmbedding(base)
        self.emb_mlp = nn.Sequential(nn.Linear(base, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, res = [base], base, resolution
        for level, mult in enumerate(cfg.channel_mult):
            if level > 0:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                res = (res + 1) // 2
                skips.append(ch)
            for _ in range(cfg.num_blocks):
                out = base * mult
                self.down.append(ResBlock(ch, out, emb_ch, cfg.dropout))
                ch = out
                if res in cfg.attn_resolutions:
                    self.down.append(Attention(ch))
                skips.append(ch)

        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_ch, cfg.dropout), Attention(ch), ResBlock(ch, ch, emb_ch, cfg.dropout)]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_blocks + 1):
                out = base * mult
                self.up.append(ResBlock(ch + skips.pop(), out, emb_ch, cfg.dropout))
                ch = out
                if res in cfg.attn_resolutions:
                    self.up.append(Attention(ch))
            if level > 0:
                res = res * 2
                self.up.append(_Upsample(ch))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.emb_mlp(self.embed(c_noise))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            if not isinstance(layer, Attention):
                hs.append(h)
            else:
                hs[-1] = h
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                skip = hs.pop()
                if skip.shape[-1] != h.shape[-1]:  # odd resolutions: crop the upsampled map
                    h = h[..., : skip.shape[-2], : skip.shape[-1]]
                h = layer(torch.cat([h, skip], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


FORMULATIONS = ("official", "split")


class EDMPrecond(nn.Module):
    """EDM preconditioning (Karras et al. 2022), optionally with a mask input.

    Clean models: D = c_skip x + c_out F(c_in x, c_noise).
    Masked (ambient) models see x only through A~ (the mask repeated over the image channels):
      official: F = F(c_in concat(A~ x, A~), c_noise),  D = c_skip A~ x + c_out F
      split:    F = F(concat(c_in A~ x, A~), c_noise),  D = A~ (c_skip x + c_out F) + (1 - A~) sigma_data F

    `official` is the official code exactly: its loss and sampler concatenate (A~ x, A~) into one
    2C-channel image and hand it to the unchanged EDMPrecond, which multiplies the whole input
    by c_in, so the mask channels reach the network as c_in A~ = A~ / sqrt(sigma^2 + sigma_data^2)
    (and it keeps the first C of its 2C output channels; ours has C outputs). `split` feeds the
    mask unscaled: a 0/1 indicator whose size does not depend on sigma is the plainer input, the
    noise level already comes in through c_noise, and existing split checkpoints were trained so.
    The split output keeps unobserved pixels at the data scale as sigma -> 0, where the official
    one shrinks them with c_out ~ sigma (grey holes at the end of sampling).
    """

    def __init__(
        self,
        net: nn.Module,
        img_channels: int,
        masked: bool = False,
        formulation: str = "split",
        sigma_data: float = 0.5,
    ):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation {formulation!r} is unknown: use one of {FORMULATIONS}")
        self.net, self.img_channels, self.masked = net, img_channels, masked
        self.formulation, self.sigma_data = formulation, sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log().flatten() / 4
        if not self.masked:
            return c_skip * x + c_out * self.net(c_in * x, c_noise).float()
        if mask is None:
            raise ValueError("this ambient model needs a mask: pass mask=A~ (N, 1, H, W)")
        x = x * mask  # the model never receives a pixel outside A~
        mask_c = mask.expand(-1, self.img_channels, -1, -1).to(x.dtype)
        if self.formulation == "official":
            f = self.net(c_in * torch.cat([x, mask_c], dim=1), c_noise).float()
            return c_skip * x + c_out * f
        f = self.net(torch.cat([c_in * x, mask_c], dim=1), c_noise).float()
        return mask * (c_skip * x + c_out * f) + (1 - mask) * (sd * f)


def build_model(
    img_channels: int, resolution: int, masked: bool, formulation: str = "split", config: UNetConfig | None = None
) -> EDMPrecond:
    (config or UNetConfig()).check_resolution(resolution)
    in_ch = 2 * img_channels if masked else img_channels
    net = UNet(in_ch, img_channels, resolution, config)
    return EDMPrecond(net, img_channels, masked=masked, formulation=formulation)
