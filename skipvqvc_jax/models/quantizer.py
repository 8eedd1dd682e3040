"""The VQVC+ vector quantizer: nearest code on the unit sphere, value from the raw codebook."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class Quantized(NamedTuple):
  value: jax.Array  # same shape as the input; equals codebook[codes]
  codes: jax.Array  # int32 index per vector
  loss: jax.Array  # mean squared (codebook[codes] - input), trains both sides


class Quantizer(nnx.Module):
  """Codebook of `num_codes` vectors of size `dim` (PyTorch nn.Embedding layout and N(0, 1) init)."""

  def __init__(self, dim: int, num_codes: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (num_codes, dim)))

  @property
  def num_codes(self) -> int:
    return self.embedding.shape[0]

  def __call__(self, inputs) -> Quantized:
    """inputs: (..., dim). Returns the quantized vectors, their codes and the latent loss."""
    table = self.embedding[...]
    # Codes are chosen against the L2-normalised codebook, with no gradient through the choice.
    unit = jax.lax.stop_gradient(table / jnp.linalg.norm(table, axis=1, keepdims=True))
    flat = jax.lax.stop_gradient(inputs.reshape(-1, inputs.shape[-1]))
    dist = (jnp.sum(flat**2, axis=1, keepdims=True) - 2.0 * flat @ unit.T
            + jnp.sum(unit**2, axis=1)[None, :])
    codes = jnp.argmin(dist, axis=1).reshape(inputs.shape[:-1]).astype(jnp.int32)
    chosen = jnp.take(table, codes, axis=0)  # the raw, un-normalised rows
    loss = jnp.mean((chosen - inputs) ** 2)
    straight_through = inputs + jax.lax.stop_gradient(chosen - inputs)
    # Half the gradient trains the codebook row, half passes straight through to the encoder.
    return Quantized((chosen + straight_through) / 2, codes, loss)
