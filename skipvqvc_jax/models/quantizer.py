"""The VQVC+ vector quantizers.

`Quantizer` is the original's standard one: nearest code on the unit sphere, value from the raw codebook
(optionally with `nn.Embedding(max_norm=1)`'s renormalisation of the rows it looks up). The multi-scale
family adds `UnitQuantizer` (`vqvc+_multi_cav`: the value is the unit row, plus a spread term),
`RawQuantizer` (raw Euclidean distances) and `SpeakerCodebookQuantizer` (`vqvc+_multi_codebook_gen`: one
codebook per item, generated from its speaker embedding). `ProjectedQuantizer` is the standard one in a
space of its own width (the `model.code_dim` recipe option).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from skipvqvc_jax.models.layers import linear


class Quantized(NamedTuple):
  value: jax.Array  # same shape as the input; equals the chosen rows
  codes: jax.Array  # int32 index per vector
  loss: jax.Array  # mean squared (chosen rows - input), trains both sides
  table: jax.Array | None = None  # max_norm: the codebook after this lookup's renormalisation
  extras: dict | None = None  # quantizer-specific parts of the loss


@jax.custom_vjp
def _value_with_identity_grad(x, value):
  """`value`, differentiated as if it were `x`: PyTorch's in-place renorm is invisible to autograd."""
  return value


_value_with_identity_grad.defvjp(lambda x, value: (value, None), lambda _, g: (g, None))


def _nearest(flat, table):
  """argmin_k |flat - table_k|^2 (first index on ties), in the original's expanded form."""
  dist = (
    jnp.sum(flat**2, axis=-1, keepdims=True)
    - 2.0 * flat @ jnp.swapaxes(table, -1, -2)
    + jnp.sum(table**2, axis=-1)[..., None, :]
  )
  return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def _unit_rows(table):
  return table / jnp.linalg.norm(table, axis=-1, keepdims=True)


def _straight_through(chosen, inputs):
  """Half the gradient trains the chosen rows, half passes straight through to the encoder."""
  return (chosen + (inputs + jax.lax.stop_gradient(chosen - inputs))) / 2


def max_norm_renorm(table, codes):
  """nn.Embedding(max_norm=1): rows looked up with a norm above 1 are scaled to norm 1 / (1 + 1e-7)."""
  used = jnp.zeros(table.shape[0], bool).at[codes.reshape(-1)].set(True)
  norms = jnp.linalg.norm(table, axis=1, keepdims=True)
  return jnp.where(used[:, None] & (norms > 1), table * (1.0 / (norms + 1e-7)), table)


def code_statistics(codes, num_codes: int) -> dict:
  """Of a codebook of `num_codes` over `codes` (any shape, jitted or not): the perplexity (exp of
  the entropy of the code frequencies), the number of codes used, and their share."""
  counts = jnp.zeros(num_codes, jnp.float32).at[jnp.ravel(jnp.asarray(codes))].add(1.0)
  p = counts / counts.sum()
  used = jnp.sum(counts > 0)
  return dict(
    perplexity=jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0))),
    used=used,
    usage=used / num_codes,
  )


class Quantizer(nnx.Module):
  """Codebook of `num_codes` vectors of size `dim` (PyTorch nn.Embedding layout and N(0, 1) init).

  With max_norm, every lookup first renormalises the rows it uses (as the original's embedding does in
  place); `Quantized.table` is the codebook after that, which training writes back before its update.
  """

  def __init__(self, dim: int, num_codes: int, *, max_norm: bool = False, rngs: nnx.Rngs):
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (num_codes, dim)))
    self.max_norm = max_norm

  @property
  def num_codes(self) -> int:
    return self.embedding.shape[0]

  def lookup(self, codes):
    """The rows of `codes` as a lookup returns them (renormalised with max_norm)."""
    table = self.embedding[...]
    if self.max_norm:
      table = max_norm_renorm(table, codes)
    return jnp.take(table, codes, axis=0)

  def code_space(self, inputs):
    """The vectors the codebook is matched against (what codebook upkeep restarts codes from)."""
    return inputs

  def __call__(self, inputs) -> Quantized:
    """inputs: (..., dim). Returns the quantized vectors, their codes and the latent loss."""
    table = self.embedding[...]
    # Codes are chosen against the L2-normalised codebook, with no gradient through the choice.
    flat = jax.lax.stop_gradient(inputs.reshape(-1, inputs.shape[-1]))
    codes = _nearest(flat, jax.lax.stop_gradient(_unit_rows(table))).reshape(inputs.shape[:-1])
    renormed = None
    if self.max_norm:
      renormed = jax.lax.stop_gradient(max_norm_renorm(table, codes))
      table = _value_with_identity_grad(table, renormed)
    chosen = jnp.take(table, codes, axis=0)
    loss = jnp.mean((chosen - inputs) ** 2)
    return Quantized(_straight_through(chosen, inputs), codes, loss, renormed)


class ProjectedQuantizer(Quantizer):
  """`Quantizer` with codes of their own width: the input (..., dim) is mapped to (..., code_dim), matched
  and committed there (loss, renormalisation and upkeep all in code space), and the chosen rows are
  mapped back to dim; the value (and so the speaker's residual x - value) lives in the input's space."""

  def __init__(self, dim: int, code_dim: int, num_codes: int, *, max_norm: bool, rngs: nnx.Rngs):
    super().__init__(code_dim, num_codes, max_norm=max_norm, rngs=rngs)
    self.project_in = linear(dim, code_dim, rngs)
    self.project_out = linear(code_dim, dim, rngs)

  def code_space(self, inputs):
    return self.project_in(inputs)

  def lookup(self, codes):
    return self.project_out(super().lookup(codes))

  def __call__(self, inputs) -> Quantized:
    quantized = super().__call__(self.project_in(inputs))
    return quantized._replace(value=self.project_out(quantized.value))


class UnitQuantizer(nnx.Module):
  """`vqvc+_multi_cav`'s quantizer: a raw (K, dim) parameter whose unit-normalised rows are the values.

  The loss is the commitment term minus (1/K)^2 times the sum of squared distances between all pairs of
  unit rows, which pushes the codes apart (= mse - 2 + 2 |mean unit row|^2).
  """

  def __init__(self, dim: int, num_codes: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (num_codes, dim)))

  @property
  def num_codes(self) -> int:
    return self.embedding.shape[0]

  def lookup(self, codes):
    return jnp.take(_unit_rows(self.embedding[...]), codes, axis=0)

  def __call__(self, inputs) -> Quantized:
    unit = _unit_rows(self.embedding[...])
    squared = jnp.sum(unit**2, axis=1)
    spread = jnp.sum(squared[:, None] - 2.0 * unit @ unit.T + squared[None, :])
    flat = jax.lax.stop_gradient(inputs.reshape(-1, inputs.shape[-1]))
    codes = _nearest(flat, jax.lax.stop_gradient(unit)).reshape(inputs.shape[:-1])
    chosen = jnp.take(unit, codes, axis=0)
    mse = jnp.mean((chosen - inputs) ** 2)
    loss = mse - (1.0 / self.num_codes) ** 2 * spread
    return Quantized(
      _straight_through(chosen, inputs), codes, loss, extras=dict(mse=mse, spread=spread)
    )


class RawQuantizer(Quantizer):
  """Nearest code by raw Euclidean distance (`vqvc+_multi_codebook_gen`'s `quantize_simple`)."""

  def lookup(self, codes):
    return jnp.take(self.embedding[...], codes, axis=0)

  def __call__(self, inputs) -> Quantized:
    table = self.embedding[...]
    flat = jax.lax.stop_gradient(inputs.reshape(-1, inputs.shape[-1]))
    codes = _nearest(flat, jax.lax.stop_gradient(table)).reshape(inputs.shape[:-1])
    chosen = jnp.take(table, codes, axis=0)
    return Quantized(_straight_through(chosen, inputs), codes, jnp.mean((chosen - inputs) ** 2))


class SpeakerCodebookQuantizer(nnx.Module):
  """`vqvc+_multi_codebook_gen`: code k of item b is unitnorm(E_k @ mul_b) + add_b.

  E is (K, dim, dim), one matrix per code; mul and add are the item's speaker vectors (B, dim).
  """

  def __init__(self, dim: int, num_codes: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (num_codes, dim, dim)))

  @property
  def num_codes(self) -> int:
    return self.embedding.shape[0]

  def codebooks(self, add, mul):
    """Each item's codebook (B, K, dim)."""
    rows = jnp.einsum('kij,bj->bki', self.embedding[...], mul)
    return _unit_rows(rows) + add[:, None, :]

  def lookup(self, codes, add, mul):
    """Rows of each item's own codebook: codes (B, T) -> (B, T, dim)."""
    return jnp.take_along_axis(self.codebooks(add, mul), codes[..., None], axis=1)

  def __call__(self, inputs, add, mul) -> Quantized:
    """inputs (B, T, dim), each item quantized against its own codebook."""
    codebooks = self.codebooks(add, mul)
    codes = jax.vmap(_nearest)(jax.lax.stop_gradient(inputs), jax.lax.stop_gradient(codebooks))
    chosen = jnp.take_along_axis(codebooks, codes[..., None], axis=1)
    loss = jnp.mean((chosen - inputs) ** 2)
    return Quantized(
      _straight_through(chosen, inputs), codes, loss, extras=dict(codebooks=codebooks)
    )
