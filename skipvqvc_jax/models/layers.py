"""Building blocks of the VQVC+ encoder and decoder. Activations are channel-last: (batch, frames,
channels).

Initialisers follow PyTorch's defaults so that a model trained from scratch here starts from the same
distribution as the original; weights ported from the original replace them exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU() default, used everywhere in the original.
NUM_GROUPS = 4  # GroupNorm groups and grouped-conv groups in every GBlock.
NUM_SCALES = 3  # the U-Net's scales: the encoder halves time this many times

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

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    dilation: int = 1,
    rngs: nnx.Rngs,
  ):
    bound = 1.0 / math.sqrt(in_channels // groups * kernel_size)
    super().__init__(
      in_channels,
      out_channels,
      (kernel_size,),
      strides=(stride,),
      padding=[(padding, padding)],
      feature_group_count=groups,
      kernel_dilation=(dilation,),
      kernel_init=uniform_init(bound),
      bias_init=uniform_init(bound),
      rngs=rngs,
    )


def linear(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
  """nn.Linear with PyTorch's default initialisation."""
  init = uniform_init(1.0 / math.sqrt(in_features))
  return nnx.Linear(in_features, out_features, kernel_init=init, bias_init=init, rngs=rngs)


def _group_mean(per_channel, groups: int, count: int):
  """(B, C) per-channel sums -> (B, 1, C): every channel gets its group's mean."""
  b, c = per_channel.shape
  size = c // groups
  return jnp.repeat(jnp.sum(per_channel.reshape(b, groups, size), -1) / count, size, axis=1)[
    :, None
  ]


def _normalise_groups(x, groups: int, epsilon: float):
  """(x - group mean) / sqrt(group variance + epsilon) over (frames, group's channels); and 1/sqrt(.).

  Two-pass variance: the one-pass E[x^2]-E[x]^2 form drifts from PyTorch by more than 1e-5.
  """
  count = x.shape[1] * (x.shape[2] // groups)
  centred = x - _group_mean(jnp.sum(x, axis=1), groups, count)
  inv = jax.lax.rsqrt(_group_mean(jnp.sum(centred * centred, axis=1), groups, count) + epsilon)
  return centred * inv, inv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm_affine(x, scale, bias, groups: int, epsilon: float):
  """PyTorch's GroupNorm (affine) over channel-last (batch, frames, channels)."""
  return _normalise_groups(x, groups, epsilon)[0] * scale + bias


def _group_norm_fwd(x, scale, bias, groups, epsilon):
  xhat, inv = _normalise_groups(x, groups, epsilon)
  return xhat * scale + bias, (xhat, inv, scale)


def _group_norm_bwd(groups, epsilon, residuals, dy):
  """All four gradient terms from two sums over time of dy and dy * xhat, shared.

  Autodiff's gradient makes XLA's CPU backend reduce over (batch, frames) for the scale and the bias
  beside the input gradient's group reductions; in the `vqvc+_multi` n64_ch512 train step that came to
  28 ms against 17 ms with this (benchmarks/README.md).
  """
  xhat, inv, scale = residuals
  count = xhat.shape[1] * (xhat.shape[2] // groups)
  dy_sum = jnp.sum(dy, axis=1)  # (B, C)
  dy_xhat_sum = jnp.sum(dy * xhat, axis=1)
  dx = inv * (
    scale * dy
    - _group_mean(dy_sum * scale, groups, count)
    - xhat * _group_mean(dy_xhat_sum * scale, groups, count)
  )
  return dx, jnp.sum(dy_xhat_sum, axis=0), jnp.sum(dy_sum, axis=0)


group_norm_affine.defvjp(_group_norm_fwd, _group_norm_bwd)


class GroupNorm(nnx.GroupNorm):
  """flax's GroupNorm parameters (`scale`, `bias`), computed by `group_norm_affine`."""

  def __call__(self, x, *args, **kwargs):
    return group_norm_affine(
      x,
      self.scale[...].astype(x.dtype),
      self.bias[...].astype(x.dtype),
      self.num_groups,
      self.epsilon,
    )


def group_norm(channels: int, rngs: nnx.Rngs, groups: int = NUM_GROUPS) -> GroupNorm:
  return GroupNorm(channels, num_groups=groups, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


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
  The input projections of all frames are one matmul per direction, outside the recurrence. Each
  direction then runs in its own scan: measured (benchmarks/gru.py), two scans beat one scan over both
  directions by 10-20% at 512 channels in training and by 2x at batch 1, since each loop then keeps
  only its own weights hot in cache; at 64 channels the two are within 6%.
  """
  outputs = []
  for direction, h, sequence in ((forward, h0[0], x), (backward, h0[1], x[:, ::-1])):
    gates_x = jnp.einsum('btf,fg->tbg', sequence, direction.w_ih[...]) + direction.b_ih[...]
    outputs.append(gru_scan(gates_x, h, direction.w_hh[...], direction.b_hh[...]))  # (T, B, F)
  return (outputs[0] + outputs[1][::-1]).swapaxes(0, 1)  # backward re-aligned in time; (B, T, F)


def _gru_step(h, gates_x, w_hh, b_hh):
  """One step; returns the new state and what the backward pass needs."""
  gh = h @ w_hh + b_hh
  xr, xz, xn = jnp.split(gates_x, 3, axis=-1)
  hr, hz, hn = jnp.split(gh, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)  # PyTorch keeps b_hn inside the reset product.
  return (1.0 - z) * n + z * h, (r, z, n, hn)


@jax.custom_vjp
def gru_scan(gates_x, h0, w_hh, b_hh):
  """Hidden states (T, B, F) of one GRU direction, given input gates (T, B, 3F) and h0 (B, F).

  A custom gradient: the backward scan carries only dh and emits each step's gate gradients; the
  hidden-weight gradient is then one matmul over all steps, instead of autodiff's (F, 3F)
  accumulation per step, which re-reads and re-writes a weight-sized buffer every frame (1.5x slower
  for the whole GRU at 512 channels, benchmarks/gru.py).
  """

  def step(h, gx):
    h, _ = _gru_step(h, gx, w_hh, b_hh)
    return h, h

  return jax.lax.scan(step, h0, gates_x)[1]


def _gru_scan_fwd(gates_x, h0, w_hh, b_hh):
  def step(h, gx):
    h_new, saved = _gru_step(h, gx, w_hh, b_hh)
    return h_new, (h_new, h, saved)

  _, (hs, h_prev, saved) = jax.lax.scan(step, h0, gates_x)
  return hs, (h_prev, saved, w_hh)


def _gru_scan_bwd(residuals, d_hs):
  h_prev, (r, z, n, hn), w_hh = residuals

  def step(dh_next, inputs):
    d_out, h, r, z, n, hn = inputs
    dh = dh_next + d_out
    d_pre_n = dh * (1.0 - z) * (1.0 - n * n)
    d_pre_z = dh * (h - n) * z * (1.0 - z)
    d_pre_r = d_pre_n * hn * r * (1.0 - r)
    d_gates_x = jnp.concatenate([d_pre_r, d_pre_z, d_pre_n], axis=-1)
    d_gates_h = jnp.concatenate([d_pre_r, d_pre_z, d_pre_n * r], axis=-1)
    return dh * z + d_gates_h @ w_hh.T, (d_gates_x, d_gates_h)

  dh0, (d_gates_x, d_gates_h) = jax.lax.scan(
    step, jnp.zeros_like(h_prev[0]), (d_hs, h_prev, r, z, n, hn), reverse=True
  )
  d_w_hh = jnp.einsum('tbf,tbg->fg', h_prev, d_gates_h)
  d_b_hh = jnp.sum(d_gates_h, axis=(0, 1))
  return d_gates_x, dh0, d_w_hh, d_b_hh


gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)


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
  """conv(C -> M) -> GroupNorm -> leaky -> RCBlock(M) -> conv(M -> out_channels, default C)."""

  def __init__(
    self,
    channels: int,
    middle: int,
    *,
    gru_init: GruInit,
    rngs: nnx.Rngs,
    out_channels: int | None = None,
  ):
    self.conv_in = Conv1d(channels, middle, 3, padding=1, rngs=rngs)
    self.norm_in = group_norm(middle, rngs)
    self.rc = RCBlock(middle, gru_init=gru_init, rngs=rngs)
    self.conv_out = Conv1d(middle, out_channels or channels, 3, padding=1, rngs=rngs)

  def __call__(self, x, noise_key=None):
    h = leaky_relu(self.norm_in(self.conv_in(x)))
    return self.conv_out(self.rc(h, noise_key))


class EncoderStage(nnx.Module):
  """Conv1d(k4, stride 2) -> leaky -> Conv1d(k3): halves time and maps to the scale's channels."""

  def __init__(self, in_channels: int, middle: int, out_channels: int, rngs: nnx.Rngs):
    self.conv_in = Conv1d(in_channels, middle, 4, stride=2, padding=1, rngs=rngs)
    self.conv_out = Conv1d(middle, out_channels, 3, padding=1, rngs=rngs)

  def __call__(self, x):
    return self.conv_out(leaky_relu(self.conv_in(x)))


class Decoder(nnx.Module):
  """The U-Net decoder: per scale, coarse to fine, add the scale's input, upsample x2, refine.

  Lists are indexed j = 0, 1, 2 from the coarsest scale (in_channel/8 channels) to the finest, as in the
  original's `dec.resblock.{j}` / `dec.blocks.{j}` / `dec.blocks_refine.{j}`.
  """

  def __init__(self, in_channel: int, middle: int, *, gru_init: GruInit, rngs: nnx.Rngs):
    channels = [in_channel // 2 ** (NUM_SCALES - j) for j in range(NUM_SCALES)]  # 10, 20, 40
    make = lambda: nnx.List([GBlock(c, middle, gru_init=gru_init, rngs=rngs) for c in channels])
    self.resblock = make()
    self.blocks = make()
    self.blocks_refine = make()

  def __call__(self, stage_inputs: Sequence[jax.Array], noise_key=None) -> list:
    """stage_inputs: coarse to fine, (B, T_j, C_j) channel-last. Returns [(B, 8 * T_0, 8 * C_0)]: a
    list of one output, as every model's decoder answers with a list of scales."""
    keys = (
      jax.random.split(noise_key, 3 * NUM_SCALES).reshape(NUM_SCALES, 3)
      if noise_key is not None
      else [[None] * 3] * NUM_SCALES
    )
    x = 0.0
    for j, z in enumerate(stage_inputs):
      x = x + self.resblock[j](z, keys[j][0])
      x = jnp.repeat(x, 2, axis=1)  # nearest-neighbour upsampling in time
      x = x + self.blocks[j](x, keys[j][1])
      x = jnp.concatenate([x, x + self.blocks_refine[j](x, keys[j][2])], axis=-1)
    return [x]

  def torch_names(self, table: dict) -> None:
    for group in ('resblock', 'blocks', 'blocks_refine'):
      for j, block in enumerate(getattr(self, group)):
        torch_gblock(table, f'dec.{group}.{j}', block)


# ---- the original's state-dict names --------------------------------------------------------------
# Each adds `prefix.weight` / `prefix.bias` -> (our variable, layout) to a model's torch_table.


def torch_conv(table: dict, prefix: str, module: nnx.Conv) -> None:
  table[f'{prefix}.weight'] = (module.kernel, 'conv')
  table[f'{prefix}.bias'] = (module.bias, 'same')


def torch_linear(table: dict, prefix: str, module: nnx.Linear) -> None:
  table[f'{prefix}.weight'] = (module.kernel, 'linear')
  table[f'{prefix}.bias'] = (module.bias, 'same')


def torch_norm(table: dict, prefix: str, module: nnx.GroupNorm) -> None:
  table[f'{prefix}.weight'] = (module.scale, 'same')
  table[f'{prefix}.bias'] = (module.bias, 'same')


def torch_gblock(table: dict, prefix: str, block: GBlock) -> None:
  """A recurrent GBlock: `block.0` conv, `block.1` norm, `block.3` RCBlock, `block.4` conv."""
  torch_conv(table, f'{prefix}.block.0', block.conv_in)
  torch_norm(table, f'{prefix}.block.1', block.norm_in)
  for suffix, direction in (('', block.rc.gru_forward), ('_reverse', block.rc.gru_backward)):
    for torch_name, ours in (
      ('weight_ih', direction.w_ih),
      ('weight_hh', direction.w_hh),
      ('bias_ih', direction.b_ih),
      ('bias_hh', direction.b_hh),
    ):
      table[f'{prefix}.block.3.rec.{torch_name}_l0{suffix}'] = (ours, 'gru')
  torch_conv(table, f'{prefix}.block.3.conv', block.rc.conv)
  torch_norm(table, f'{prefix}.block.3.gn', block.rc.norm)
  torch_conv(table, f'{prefix}.block.4', block.conv_out)
