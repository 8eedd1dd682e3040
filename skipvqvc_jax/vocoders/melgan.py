"""The MelGAN generator that SkipVQVC's original scripts use (descriptinc/melgan-neurips), in Flax.

Input: raw log10 mels (batch, 80, frames) as `audio.log_mel` makes them (no normalisation); output:
waveforms (batch, 256 * frames) in [-1, 1]. Layers, all with weight normalisation (w = g v / |v|, the norm
over every axis but the first of PyTorch's layout):

    reflect-pad 3, conv k7 (80 -> 512), then per upsampling ratio r in (8, 8, 2, 2): leaky 0.2,
    transposed conv (k 2r, stride r, padding r/2) halving the channels, and three residual blocks with
    dilations 1, 3, 9; then leaky 0.2, reflect-pad 3, conv k7 (32 -> 1), tanh.

A residual block is shortcut(x) + conv1x1(leaky(conv3_dilated(reflect_pad(leaky(x))))), where the
shortcut is a learned 1x1 conv. Weights are kept in PyTorch's layouts, so porting is a copy.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

RATIOS = (8, 8, 2, 2)
SLOPE = 0.2


def _uniform(key, shape, bound):
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class WNConv(nnx.Module):
  """A weight-normalised 1-D convolution or transposed convolution, channel-last activations.

  v has PyTorch's layout: (out, in / groups, k) for a convolution, (in, out, k) for a transposed one; g
  has one entry per row of v's first axis. `padding` zero-pads a convolution on both sides.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel: int, *, dilation: int = 1,
               stride: int = 1, padding: int = 0, groups: int = 1, transposed: bool = False,
               rngs: nnx.Rngs):
    if transposed:
      shape = (in_channels, out_channels, kernel)
    else:
      shape = (out_channels, in_channels // groups, kernel)
    fan_in = shape[1] * kernel  # PyTorch's fan-in for either layout
    bound = 1.0 / math.sqrt(fan_in)
    v = _uniform(rngs.params(), shape, bound)
    self.v = nnx.Param(v)
    self.g = nnx.Param(jnp.sqrt(jnp.sum(v**2, axis=(1, 2))))
    self.bias = nnx.Param(_uniform(rngs.params(), (out_channels,), bound))
    self.dilation, self.stride, self.transposed = dilation, stride, transposed
    self.padding, self.groups = padding, groups

  def weight(self):
    v = self.v[...]
    return self.g[...][:, None, None] * v / jnp.sqrt(jnp.sum(v**2, axis=(1, 2), keepdims=True))

  def __call__(self, x):
    w = self.weight()
    if self.transposed:
      # A transposed conv is a conv of the stride-dilated input with the flipped kernel.
      k, s = w.shape[2], self.stride
      p = s // 2 + s % 2
      y = jax.lax.conv_general_dilated(
          x, jnp.flip(w, 2).transpose(1, 0, 2), window_strides=(1,),
          padding=[(k - 1 - p, k - 1 - p + s % 2)], lhs_dilation=(s,),
          dimension_numbers=('NWC', 'OIW', 'NWC'), precision=jax.lax.Precision.HIGHEST)
    else:
      y = jax.lax.conv_general_dilated(
          x, w, window_strides=(self.stride,), padding=[(self.padding, self.padding)],
          rhs_dilation=(self.dilation,), feature_group_count=self.groups,
          dimension_numbers=('NWC', 'OIW', 'NWC'), precision=jax.lax.Precision.HIGHEST)
    return y + self.bias[...]


def _reflect(x, pad: int):
  return jnp.pad(x, ((0, 0), (pad, pad), (0, 0)), mode='reflect')


class ResnetBlock(nnx.Module):
  def __init__(self, channels: int, dilation: int, rngs: nnx.Rngs):
    self.conv_dilated = WNConv(channels, channels, 3, dilation=dilation, rngs=rngs)
    self.conv_1x1 = WNConv(channels, channels, 1, rngs=rngs)
    self.shortcut = WNConv(channels, channels, 1, rngs=rngs)
    self.dilation = dilation

  def __call__(self, x):
    h = self.conv_dilated(_reflect(jax.nn.leaky_relu(x, SLOPE), self.dilation))
    return self.shortcut(x) + self.conv_1x1(jax.nn.leaky_relu(h, SLOPE))


class Upsample(nnx.Module):
  def __init__(self, channels: int, ratio: int, residual_layers: int, rngs: nnx.Rngs):
    self.up = WNConv(channels, channels // 2, 2 * ratio, stride=ratio, transposed=True, rngs=rngs)
    self.blocks = nnx.List([ResnetBlock(channels // 2, 3**j, rngs)
                            for j in range(residual_layers)])

  def __call__(self, x):
    x = self.up(jax.nn.leaky_relu(x, SLOPE))
    for block in self.blocks:
      x = block(x)
    return x


class MelGANGenerator(nnx.Module):
  """Generator(input_size, ngf, n_residual_layers) of melgan-neurips; (80, 32, 3) is SkipVQVC's."""

  hop_length = math.prod(RATIOS)

  def __init__(self, n_mels: int = 80, ngf: int = 32, residual_layers: int = 3, *, seed: int = 0):
    rngs = nnx.Rngs(params=seed)
    self.n_mels, self.ngf, self.residual_layers = n_mels, ngf, residual_layers
    channels = ngf * 2 ** len(RATIOS)
    self.conv_in = WNConv(n_mels, channels, 7, rngs=rngs)
    self.ups = nnx.List([Upsample(channels // 2**i, r, residual_layers, rngs)
                         for i, r in enumerate(RATIOS)])
    self.conv_out = WNConv(ngf, 1, 7, rngs=rngs)

  def __call__(self, mel, *, pre_tanh: bool = False):
    """(batch, n_mels, frames) log10 mels -> (batch, 256 * frames) waveforms."""
    x = self.conv_in(_reflect(jnp.swapaxes(jnp.asarray(mel, jnp.float32), 1, 2), 3))
    for up in self.ups:
      x = up(x)
    x = self.conv_out(_reflect(jax.nn.leaky_relu(x, SLOPE), 3))[..., 0]
    return x if pre_tanh else jnp.tanh(x)


def torch_table(model: MelGANGenerator) -> dict[str, nnx.Variable]:
  """The original's state-dict names (`model.<i>.weight_g`, ...) -> our parameters (same layouts).

  nn.Sequential indices: 1 conv in; per upsampling stage k: 2 + 5k leaky, 3 + 5k transposed conv,
  4 + 5k ... residual blocks; conv out at 2 + 5 * stages + 2.
  """
  table = {}

  def conv(prefix, layer: WNConv):
    table[f'{prefix}.weight_g'] = layer.g
    table[f'{prefix}.weight_v'] = layer.v
    table[f'{prefix}.bias'] = layer.bias

  conv('model.1', model.conv_in)
  index = 2
  for up in model.ups:
    conv(f'model.{index + 1}', up.up)
    for j, block in enumerate(up.blocks):
      prefix = f'model.{index + 2 + j}'
      conv(f'{prefix}.block.2', block.conv_dilated)
      conv(f'{prefix}.block.4', block.conv_1x1)
      conv(f'{prefix}.shortcut', block.shortcut)
    index += 2 + len(up.blocks)
  conv(f'model.{index + 2}', model.conv_out)
  return table
