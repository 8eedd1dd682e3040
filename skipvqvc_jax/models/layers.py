"""Building blocks of the VQVC+ decoder, channel-last: activations are (batch, frames, channels).

Initialisers follow PyTorch's defaults so that a model trained from scratch here starts from the same
distribution as the original; weights ported from the original replace them exactly.
"""
from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU() default, used everywhere in the original.
NUM_GROUPS = 4  # GroupNorm groups and grouped-conv groups in every GBlock.

GruInit = Literal['normal', 'zeros']


def uniform_init(bound: float):
  """U(-bound, bound), the shape of PyTorch's default conv/GRU initialisers."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def leaky_relu(x):
  return jax.nn.leaky_relu(x, LEAKY_SLOPE)


class Conv1d(nnx.Conv):
  """A 1-D convolution with PyTorch's padding convention and default initialisation."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               padding: int = 0, groups: int = 1, rngs: nnx.Rngs):
    bound = 1.0 / math.sqrt(in_channels // groups * kernel_size)
    super().__init__(in_channels, out_channels, (kernel_size,), strides=(stride,),
                     padding=[(padding, padding)], feature_group_count=groups,
                     kernel_init=uniform_init(bound), bias_init=uniform_init(bound), rngs=rngs)


def group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  # Two-pass variance: the one-pass E[x^2]-E[x]^2 form drifts from PyTorch by more than 1e-5.
  return nnx.GroupNorm(channels, num_groups=NUM_GROUPS, epsilon=1e-5, use_fast_variance=False,
                       rngs=rngs)


class GRUDirection(nnx.Module):
  """The parameters of one direction of a PyTorch GRU layer, gates stacked (reset, update, new).

  Stored transposed to (in, 3 * hidden) so that x @ w_ih needs no transpose.
  """

  def __init__(self, features: int, rngs: nnx.Rngs):
    init = uniform_init(1.0 / math.sqrt(features))
    self.w_ih = nnx.Param(init(rngs.params(), (features, 3 * features)))
    self.w_hh = nnx.Param(init(rngs.params(), (features, 3 * features)))
    self.b_ih = nnx.Param(init(rngs.params(), (3 * features,)))
    self.b_hh = nnx.Param(init(rngs.params(), (3 * features,)))


def bidirectional_gru_sum(x, h0, forward: GRUDirection, backward: GRUDirection):
  """Runs a bidirectional single-layer GRU over time and returns the sum of its two directions.

  x: (batch, frames, features); h0: (2, batch, features), forward then backward.
  Both directions advance in one scan: the input projections of every frame are computed up front in
  one matmul, so each scan step is just the two small hidden-state matmuls and the gate arithmetic.
  """
  w_ih = jnp.stack([forward.w_ih[...], backward.w_ih[...]])  # (2, F, 3F)
  w_hh = jnp.stack([forward.w_hh[...], backward.w_hh[...]])
  b_ih = jnp.stack([forward.b_ih[...], backward.b_ih[...]])  # (2, 3F)
  b_hh = jnp.stack([forward.b_hh[...], backward.b_hh[...]])
  # Frames first, and the backward direction reads time reversed.
  xs = jnp.stack([x, x[:, ::-1]]).swapaxes(1, 2)  # (2, T, B, F)
  gates_x = jnp.einsum('dtbf,dfg->tdbg', xs, w_ih) + b_ih[None, :, None, :]  # (T, 2, B, 3F)

  def step(h, gx):
    gh = jnp.einsum('dbf,dfg->dbg', h, w_hh) + b_hh[:, None, :]
    xr, xz, xn = jnp.split(gx, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)  # PyTorch keeps b_hn inside the reset product.
    h = (1.0 - z) * n + z * h
    return h, h

  _, hs = jax.lax.scan(step, h0, gates_x)  # (T, 2, B, F)
  return (hs[:, 0] + hs[::-1, 1]).swapaxes(0, 1)  # back to (B, T, F), backward re-aligned in time


class RCBlock(nnx.Module):
  """x + r + leaky(GN(grouped_conv(r))), with r the summed bidirectional GRU output."""

  def __init__(self, features: int, *, gru_init: GruInit, rngs: nnx.Rngs):
    self.gru_forward = GRUDirection(features, rngs)
    self.gru_backward = GRUDirection(features, rngs)
    self.conv = Conv1d(features, features, 3, padding=1, groups=NUM_GROUPS, rngs=rngs)
    self.norm = group_norm(features, rngs)
    self.gru_init = gru_init

  def __call__(self, x, noise_key=None):
    batch, _, features = x.shape
    if self.gru_init == 'normal':
      # The original draws the initial hidden state from N(0, 1) at every call; it acts as noise.
      h0 = jax.random.normal(noise_key, (2, batch, features), x.dtype)
    else:
      h0 = jnp.zeros((2, batch, features), x.dtype)
    r = bidirectional_gru_sum(x, h0, self.gru_forward, self.gru_backward)
    c = leaky_relu(self.norm(self.conv(r)))
    return x + r + c


class GBlock(nnx.Module):
  """conv(C -> M) -> GroupNorm -> leaky -> RCBlock(M) -> conv(M -> C)."""

  def __init__(self, channels: int, middle: int, *, gru_init: GruInit, rngs: nnx.Rngs):
    self.conv_in = Conv1d(channels, middle, 3, padding=1, rngs=rngs)
    self.norm_in = group_norm(middle, rngs)
    self.rc = RCBlock(middle, gru_init=gru_init, rngs=rngs)
    self.conv_out = Conv1d(middle, channels, 3, padding=1, rngs=rngs)

  def __call__(self, x, noise_key=None):
    h = leaky_relu(self.norm_in(self.conv_in(x)))
    return self.conv_out(self.rc(h, noise_key))
