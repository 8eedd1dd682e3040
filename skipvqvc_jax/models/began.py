"""The discriminator of the original's BEGAN trainer (`train_ljvae.py`'s `NetD`): an autoencoder-like
critic that maps a mel (batch, bands, frames) to a mel of the same shape; BEGAN scores |D(x) - x|.

Three 2-D blocks (spectral-normed 3x3 convolutions striding by 2 over bands, dilated 2, 4, 8 in time,
then BatchNorm and a leaky ReLU) take 80 bands to 64 channels of 10, folded into 640 channels; five 1-D
blocks of the same kind (512 channels, dilations 1, 16, 32, 64, 128) and a spectral-normed head map them
back to the bands. Arrays and weights keep PyTorch's channel-first layouts, so its state dict ports as it
is. As the original trains it, it is always in training mode: BatchNorm normalises with the batch's own
statistics (the running ones are kept up to date but never read), and every call runs one power
iteration of each spectral norm, whose vector `u` is state (`SpectralVector`), as PyTorch's buffer is.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

SLOPE = 0.01  # nn.LeakyReLU()
_EPS = 1e-12  # torch.nn.functional.normalize's, in the power iteration
_BN_EPS, _BN_MOMENTUM = 1e-5, 0.1


class SpectralVector(nnx.Variable):
  """A spectral norm's left singular vector estimate (PyTorch's `weight_u` buffer): state, not a
  parameter; each call moves it one power iteration on."""


class BatchStat(nnx.Variable):
  """BatchNorm's running mean and variance (kept as PyTorch keeps them; training never reads them)."""


def _normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x), _EPS)


class SNConv(nnx.Module):
  """A spectral-normed convolution over the last `nd` axes, channel-first, PyTorch's layout."""

  def __init__(self, nd, cin, cout, kernel, *, stride=1, padding=0, dilation=1, rngs: nnx.Rngs):
    shape = (cout, cin) + (kernel,) * nd
    bound = 1.0 / math.sqrt(cin * kernel**nd)
    key_w, key_b, key_u = jax.random.split(rngs.params(), 3)
    self.weight_orig = nnx.Param(jax.random.uniform(key_w, shape, jnp.float32, -bound, bound))
    self.bias = nnx.Param(jax.random.uniform(key_b, (cout,), jnp.float32, -bound, bound))
    self.weight_u = SpectralVector(_normalize(jax.random.normal(key_u, (cout,))))
    as_tuple = lambda v: v if isinstance(v, tuple) else (v,) * nd
    self.stride, self.padding, self.dilation = (
      as_tuple(stride),
      as_tuple(padding),
      as_tuple(dilation),
    )
    self.nd = nd

  def weight(self):
    """W / sigma, after one power iteration of u (stored), as PyTorch's spectral_norm in training."""
    w = self.weight_orig[...]
    matrix = w.reshape(w.shape[0], -1)
    u = jax.lax.stop_gradient(self.weight_u[...])
    v = jax.lax.stop_gradient(_normalize(matrix.T @ u))
    u = jax.lax.stop_gradient(_normalize(matrix @ v))
    self.weight_u[...] = u
    return w / jnp.dot(u, matrix @ v)

  def __call__(self, x):
    spatial = 'HW'[: self.nd] if self.nd == 2 else 'H'
    numbers = (f'NC{spatial}', f'OI{spatial}', f'NC{spatial}')
    y = jax.lax.conv_general_dilated(
      x,
      self.weight(),
      window_strides=self.stride,
      padding=[(p, p) for p in self.padding],
      rhs_dilation=self.dilation,
      dimension_numbers=numbers,
    )
    return y + self.bias[...].reshape((1, -1) + (1,) * self.nd)


class BatchNorm(nnx.Module):
  """PyTorch's BatchNorm1d/2d in training mode over channel-first arrays."""

  def __init__(self, channels: int):
    self.weight = nnx.Param(jnp.ones((channels,)))
    self.bias = nnx.Param(jnp.zeros((channels,)))
    self.running_mean = BatchStat(jnp.zeros((channels,)))
    self.running_var = BatchStat(jnp.ones((channels,)))

  def __call__(self, x):
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
    count = x.size // x.shape[1]
    unbiased = var * count / max(count - 1, 1)
    m = _BN_MOMENTUM
    self.running_mean[...] = (1 - m) * self.running_mean[...] + m * jax.lax.stop_gradient(mean)
    self.running_var[...] = (1 - m) * self.running_var[...] + m * jax.lax.stop_gradient(unbiased)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + _BN_EPS)
    return xhat * self.weight[...].reshape(shape) + self.bias[...].reshape(shape)


class Block(nnx.Module):
  """BNSNConv{1,2}dDBlock: spectral-normed conv, BatchNorm, leaky ReLU."""

  def __init__(self, nd, cin, cout, *, stride=1, padding, dilation, rngs: nnx.Rngs):
    self.conv = SNConv(
      nd, cin, cout, 3, stride=stride, padding=padding, dilation=dilation, rngs=rngs
    )
    self.norm = BatchNorm(cout)

  def __call__(self, x):
    return jax.nn.leaky_relu(self.norm(self.conv(x)), SLOPE)


class BeganDiscriminator(nnx.Module):
  """`NetD(input_size)`: (batch, input_size, frames) -> the same shape. `width`: the channels of its
  1-D body, 512 in the original (hard-coded there; narrower only for small golden files)."""

  name = 'began_netd'
  # PyTorch's copy of v (recomputed from u at every call) and BatchNorm's counter: read by nothing.
  torch_unused = (r'.*\.weight_v$', r'.*\.num_batches_tracked$')

  def __init__(self, input_size: int = 80, *, width: int = 512, seed: int = 0):
    if input_size % 8:
      raise ValueError(f'input_size must be a multiple of 8 (three halvings); got {input_size}')
    rngs = nnx.Rngs(params=seed)
    self.input_size = input_size
    self.body2d = nnx.List(
      [
        Block(2, cin, cout, stride=(2, 1), padding=(1, d), dilation=(1, d), rngs=rngs)
        for cin, cout, d in ((1, 4, 2), (4, 16, 4), (16, 64, 8))
      ]
    )
    widths = [64 * input_size // 8] + [width] * 4
    self.body1d = nnx.List(
      [
        Block(1, cin, width, padding=d, dilation=d, rngs=rngs)
        for cin, d in zip(widths, (1, 16, 32, 64, 128))
      ]
    )
    self.head = SNConv(1, width, input_size, 3, padding=1, rngs=rngs)

  def spec(self) -> dict:
    return dict(name=self.name, input_size=self.input_size)

  def describe(self) -> str:
    return f'{self.name} (input_size={self.input_size})'

  def __call__(self, mel):
    batch, _, frames = mel.shape
    x = mel[:, None]  # (B, 1, bands, frames)
    for block in self.body2d:
      x = block(x)
    x = x.reshape(batch, -1, frames)  # (B, 64 * bands / 8, frames)
    for block in self.body1d:
      x = block(x)
    return self.head(x)

  def torch_table(self) -> dict:
    """PyTorch state-dict names of NetD -> (our variable, 'same'): every layout is PyTorch's."""
    table = {}

    def conv(prefix, module: SNConv):
      for name in ('weight_orig', 'bias', 'weight_u'):
        table[f'{prefix}.{name}'] = (getattr(module, name), 'same')

    for group, blocks in (('body2d', self.body2d), ('body1d', self.body1d)):
      for i, block in enumerate(blocks):
        conv(f'{group}.{i}.block.0', block.conv)
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
          table[f'{group}.{i}.block.1.{name}'] = (getattr(block.norm, name), 'same')
    conv('head', self.head)
    return table
