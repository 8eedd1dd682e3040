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

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.core.errors import PortError

RATIOS = (8, 8, 2, 2)
SLOPE = 0.2


def _uniform(key, shape, bound):
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class WNConv(nnx.Module):
  """A weight-normalised 1-D convolution or transposed convolution, channel-last activations.

  v has PyTorch's layout: (out, in / groups, k) for a convolution, (in, out, k) for a transposed one; g
  has one entry per row of v's first axis. `padding` zero-pads a convolution on both sides.
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    dilation: int = 1,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    transposed: bool = False,
    rngs: nnx.Rngs,
  ):
    if dilation > 1 and (transposed or stride > 1 or groups > 1):
      raise ValueError('dilation combines only with an ungrouped, unit-stride convolution')
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
      y = _transposed_conv(x, w, self.stride)
    elif self.stride > 1 or self.groups > 1:
      y = _strided_grouped_conv(x, w, self.stride, self.padding, self.groups)
    else:
      y = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,),
        padding=[(self.padding, self.padding)],
        rhs_dilation=(self.dilation,),
        dimension_numbers=('NWC', 'OIW', 'NWC'),
        precision=_precision(),
      )
    return y + self.bias[...]


def _precision():
  """Full float32 products on the CPU (parity with the original is tested there, and the CPU has no
  faster mode); elsewhere the backend's default (TF32 on recent NVIDIA GPUs, bfloat16 passes on TPU),
  as every other model here uses."""
  return jax.lax.Precision.HIGHEST if jax.default_backend() == 'cpu' else None


# XLA on CPU computes the gradients of strided, grouped and transposed convolutions 10-50x slower than
# their forward pass (benchmarks/README.md); written as shifted slices and one einsum, they become
# matmuls whose gradients are matmuls too. The sums are the same.


def _taps(kernel: int, stride: int) -> int:
  return -(-kernel // stride)


def _transposed_conv(x, w, stride: int):
  """PyTorch's ConvTranspose1d(k, stride s, padding s // 2 + s % 2, output_padding s % 2), polyphase.

  y[n] = sum_m x[m] w[n + p - m s]; with n + p = q s + r the taps of phase r are w[j s + r], so phase
  r is an ordinary convolution of x, and y interleaves the phases. x (B, T, in), w (in, out, k).
  """
  batch, length, _ = x.shape
  k, s = w.shape[2], stride
  p, extra = s // 2 + s % 2, s % 2
  taps = _taps(k, s)
  w = jnp.pad(w, ((0, 0), (0, 0), (0, taps * s - k))).reshape(w.shape[0], w.shape[1], taps, s)
  padded = jnp.pad(x, ((0, 0), (taps - 1, taps - 1), (0, 0)))
  q = length + taps - 1
  shifted = jnp.stack([padded[:, taps - 1 - j : taps - 1 - j + q] for j in range(taps)], axis=2)
  phases = jnp.einsum('bqji,iojr->bqro', shifted, w, precision=_precision())
  out_length = (length - 1) * s + k - 2 * p + extra
  return phases.reshape(batch, q * s, -1)[:, p : p + out_length]


def _conv_as_matmuls(x, w, stride: int, padding: int, groups: int):
  """Conv1d(k, stride, zero padding, groups) of x (B, T, in) with w (out, in / groups, k), as matmuls.

  y[t] = sum_k x[t s + k] w[k]; with k = j s + r, x[(t + j) s + r] is frame t + j, phase r of x cut
  into frames of s samples, so the taps become `ceil(k / s)` shifted frame sequences.
  """
  batch, length, _ = x.shape
  out_channels, per_group, k = w.shape
  s, taps = stride, _taps(k, stride)
  out_length = (length + 2 * padding - k) // s + 1
  frames = out_length + taps - 1
  padded = jnp.pad(x, ((0, 0), (padding, max(0, frames * s - length - padding)), (0, 0)))
  # Groups lead, so the contraction is a batch of plain matmuls over (tap, phase, channel).
  cut = (
    padded[:, : frames * s].reshape(batch, frames, s, groups, per_group).transpose(3, 0, 1, 2, 4)
  )
  shifted = jnp.stack([cut[:, :, j : j + out_length] for j in range(taps)], axis=3)
  shifted = shifted.reshape(groups, batch * out_length, taps * s * per_group)
  w = jnp.pad(w, ((0, 0), (0, 0), (0, taps * s - k)))
  w = w.reshape(groups, out_channels // groups, per_group, taps, s).transpose(0, 3, 4, 2, 1)
  y = jnp.einsum(
    'gmk,gko->gmo',
    shifted,
    w.reshape(groups, taps * s * per_group, -1),
    precision=_precision(),
  )
  return (
    y.reshape(groups, batch, out_length, -1)
    .transpose(1, 2, 0, 3)
    .reshape(batch, out_length, out_channels)
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _strided_grouped_conv(x, w, stride: int, padding: int, groups: int):
  """A strided or grouped Conv1d: XLA's convolution forward, the matmul form's gradients."""
  return jax.lax.conv_general_dilated(
    x,
    w,
    window_strides=(stride,),
    padding=[(padding, padding)],
    feature_group_count=groups,
    dimension_numbers=('NWC', 'OIW', 'NWC'),
    precision=_precision(),
  )


def _strided_grouped_conv_fwd(x, w, stride, padding, groups):
  return _strided_grouped_conv(x, w, stride, padding, groups), (x, w)


def _strided_grouped_conv_bwd(stride, padding, groups, saved, grad):
  _, pull_back = jax.vjp(lambda x, w: _conv_as_matmuls(x, w, stride, padding, groups), *saved)
  return pull_back(grad)


_strided_grouped_conv.defvjp(_strided_grouped_conv_fwd, _strided_grouped_conv_bwd)


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
    self.blocks = nnx.List([ResnetBlock(channels // 2, 3**j, rngs) for j in range(residual_layers)])

  def __call__(self, x):
    x = self.up(jax.nn.leaky_relu(x, SLOPE))
    for block in self.blocks:
      x = block(x)
    return x


class MelGANGenerator(nnx.Module):
  """Generator(input_size, ngf, n_residual_layers) of melgan-neurips; (80, 32, 3) is SkipVQVC's."""

  name = 'melgan'
  hop_length = math.prod(RATIOS)

  def __init__(self, n_mels: int = 80, ngf: int = 32, residual_layers: int = 3, *, seed: int = 0):
    rngs = nnx.Rngs(params=seed)
    self.n_mels, self.ngf, self.residual_layers = n_mels, ngf, residual_layers
    channels = ngf * 2 ** len(RATIOS)
    self.conv_in = WNConv(n_mels, channels, 7, rngs=rngs)
    self.ups = nnx.List(
      [Upsample(channels // 2**i, r, residual_layers, rngs) for i, r in enumerate(RATIOS)]
    )
    self.conv_out = WNConv(ngf, 1, 7, rngs=rngs)

  def spec(self) -> dict:
    """What rebuilds this model: `models.build(**spec)`."""
    return dict(
      name=self.name, n_mels=self.n_mels, ngf=self.ngf, residual_layers=self.residual_layers
    )

  def describe(self) -> str:
    return f'the MelGAN generator (ngf={self.ngf}, residual_layers={self.residual_layers})'

  def torch_table(self) -> dict[str, tuple[nnx.Variable, str]]:
    """The original's state-dict names (`model.<i>.weight_g`, ...) -> (our parameter, layout).

    Layouts are PyTorch's but for g, kept as (C,) here and (C, 1, 1) there ('weight_g').
    nn.Sequential indices: 1 conv in; per upsampling stage k: 2 + 5k leaky, 3 + 5k transposed conv,
    4 + 5k ... residual blocks; conv out at 2 + 5 * stages + 2.
    """
    table = {}

    def conv(prefix, layer: WNConv):
      table[f'{prefix}.weight_g'] = (layer.g, 'weight_g')
      table[f'{prefix}.weight_v'] = (layer.v, 'same')
      table[f'{prefix}.bias'] = (layer.bias, 'same')

    conv('model.1', self.conv_in)
    index = 2
    for up in self.ups:
      conv(f'model.{index + 1}', up.up)
      for j, block in enumerate(up.blocks):
        prefix = f'model.{index + 2 + j}'
        conv(f'{prefix}.block.2', block.conv_dilated)
        conv(f'{prefix}.block.4', block.conv_1x1)
        conv(f'{prefix}.shortcut', block.shortcut)
      index += 2 + len(up.blocks)
    conv(f'model.{index + 2}', self.conv_out)
    return table

  torch_unused: tuple[str, ...] = ()  # every original module takes part

  @staticmethod
  def sizes_from_torch(state_dict) -> dict:
    """n_mels, ngf and residual_layers of a melgan-neurips generator state dict."""
    if 'model.1.weight_v' not in state_dict:
      raise PortError('not a MelGAN generator state dict: no model.1.weight_v')
    out_channels, n_mels, _ = state_dict['model.1.weight_v'].shape
    residual = len({k.split('.')[1] for k in state_dict if '.shortcut.' in k}) // len(RATIOS)
    return dict(n_mels=n_mels, ngf=out_channels // 2 ** len(RATIOS), residual_layers=residual)

  def __call__(self, mel, *, pre_tanh: bool = False):
    """(batch, n_mels, frames) log10 mels -> (batch, 256 * frames) waveforms."""
    x = self.conv_in(_reflect(jnp.swapaxes(jnp.asarray(mel, jnp.float32), 1, 2), 3))
    for up in self.ups:
      x = up(x)
    x = self.conv_out(_reflect(jax.nn.leaky_relu(x, SLOPE), 3))[..., 0]
    return x if pre_tanh else jnp.tanh(x)
