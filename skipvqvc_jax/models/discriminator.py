"""Waveform discriminators for training a vocoder: MelGAN's multi-scale and HiFi-GAN's multi-period.

Every discriminator maps waveforms (batch, samples) to a list with one entry per sub-discriminator; an
entry is the list of that sub-discriminator's activations, the last of which is its score map. The
losses (`tasks/vocoder.py`) read scores from the last entries and match features on the others.

- Multi-scale (MelGAN, Kumar et al. 2019): `scales` copies of one conv stack, on the waveform and on
  its 2x and 4x average-pooled versions. Strided grouped convolutions (kernel 10 s + 1, stride s,
  groups in / 4) widen the channels by s per layer up to 1024.
- Multi-period (HiFi-GAN, Kong et al. 2020): per period p, the waveform folded into p columns of
  length samples / p; convolutions with (k, 1) kernels run down each column, so each sees every p-th
  sample. Folding the columns into the batch makes these the same 1-D convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.melgan import SLOPE, WNConv


class ScaleDiscriminator(nnx.Module):
  """MelGAN's NLayerDiscriminator(ndf, n_layers, downsampling_factor) on channel-last waveforms."""

  def __init__(self, ndf: int, layers: int, downsampling: int, rngs: nnx.Rngs):
    convs = [WNConv(1, ndf, 15, padding=7, rngs=rngs)]
    channels = ndf
    for _ in range(layers):
      wider = min(channels * downsampling, 1024)
      convs.append(
        WNConv(
          channels,
          wider,
          downsampling * 10 + 1,
          stride=downsampling,
          padding=downsampling * 5,
          groups=channels // 4,
          rngs=rngs,
        )
      )
      channels = wider
    convs.append(WNConv(channels, min(channels * 2, 1024), 5, padding=2, rngs=rngs))
    self.convs = nnx.List(convs)
    self.score = WNConv(min(channels * 2, 1024), 1, 3, padding=1, rngs=rngs)

  def __call__(self, x) -> list:
    features = []
    for conv in self.convs:
      x = jax.nn.leaky_relu(conv(x), SLOPE)
      features.append(x)
    features.append(self.score(x))
    return features


def _avg_pool(x):
  """AvgPool1d(4, stride 2, padding 1, count_include_pad=False) over the time axis of (B, T, C)."""
  window = lambda v: jax.lax.reduce_window(
    v, 0.0, jax.lax.add, (1, 4, 1), (1, 2, 1), [(0, 0), (1, 1), (0, 0)]
  )
  return window(x) / window(jnp.ones_like(x[:1, :, :1]))


class MultiScaleDiscriminator(nnx.Module):
  def __init__(
    self, scales: int = 3, ndf: int = 16, layers: int = 4, downsampling: int = 4, *, rngs: nnx.Rngs
  ):
    if ndf % 4 or ndf < 4:
      raise ValueError(f'ndf={ndf}: the grouped convolutions need a multiple of 4')
    self.blocks = nnx.List(
      [ScaleDiscriminator(ndf, layers, downsampling, rngs) for _ in range(scales)]
    )

  def __call__(self, wave) -> list:
    x = wave[..., None]
    outputs = []
    for i, block in enumerate(self.blocks):
      outputs.append(block(x))
      if i + 1 < len(self.blocks):
        x = _avg_pool(x)
    return outputs


class PeriodDiscriminator(nnx.Module):
  """HiFi-GAN's DiscriminatorP: five (5, 1) convs, stride 3 but the last, 1 -> 32 -> ... -> 1024."""

  def __init__(self, period: int, channels: tuple = (32, 128, 512, 1024, 1024), *, rngs: nnx.Rngs):
    self.period = period
    widths = (1,) + tuple(channels)
    self.convs = nnx.List(
      [
        WNConv(
          widths[i],
          widths[i + 1],
          5,
          stride=3 if i < len(channels) - 1 else 1,
          padding=2,
          rngs=rngs,
        )
        for i in range(len(channels))
      ]
    )
    self.score = WNConv(widths[-1], 1, 3, padding=1, rngs=rngs)

  def __call__(self, wave) -> list:
    batch, length = wave.shape
    pad = -length % self.period
    if pad:
      wave = jnp.pad(wave, ((0, 0), (0, pad)), mode='reflect')
    # (B, T) -> (B, T / p, p) -> (B * p, T / p, 1): each column a sequence of its own.
    x = wave.reshape(batch, -1, self.period).transpose(0, 2, 1).reshape(batch * self.period, -1, 1)
    features = []
    for conv in self.convs:
      x = jax.nn.leaky_relu(conv(x), 0.1)
      features.append(x)
    features.append(self.score(x))
    return features


class MultiPeriodDiscriminator(nnx.Module):
  def __init__(
    self,
    periods: tuple = (2, 3, 5, 7, 11),
    channels: tuple = (32, 128, 512, 1024, 1024),
    *,
    rngs: nnx.Rngs,
  ):
    self.blocks = nnx.List([PeriodDiscriminator(p, tuple(channels), rngs=rngs) for p in periods])

  def __call__(self, wave) -> list:
    return [block(wave) for block in self.blocks]


class Discriminators(nnx.Module):
  """The configured discriminators side by side; their sub-discriminator outputs concatenated."""

  name = 'discriminators'

  def __init__(
    self,
    *,
    scales: int = 3,
    ndf: int = 16,
    layers: int = 4,
    downsampling: int = 4,
    periods: tuple = (),
    period_channels: tuple = (32, 128, 512, 1024, 1024),
    seed: int = 0,
  ):
    rngs = nnx.Rngs(params=seed)
    self.sizes = dict(
      scales=scales,
      ndf=ndf,
      layers=layers,
      downsampling=downsampling,
      periods=tuple(periods),
      period_channels=tuple(period_channels),
    )
    self.multi_scale = MultiScaleDiscriminator(scales, ndf, layers, downsampling, rngs=rngs)
    self.multi_period = (
      MultiPeriodDiscriminator(tuple(periods), tuple(period_channels), rngs=rngs)
      if periods
      else None
    )

  def spec(self) -> dict:
    """What rebuilds this model: `models.build(**spec)`."""
    return dict(name=self.name, **self.sizes)

  def __call__(self, wave) -> list:
    outputs = self.multi_scale(wave)
    if self.multi_period is not None:
      outputs = outputs + self.multi_period(wave)
    return outputs
