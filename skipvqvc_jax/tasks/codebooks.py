"""Codebook upkeep the original does not do, from VQ-VAE practice: options of the voice-conversion task,
off in every preset of the original (whose parity they leave alone).

- `restart_below` > 0: every step, each content code's usage is tracked as an exponential moving
  average of its share of the batch's frames; a code whose usage falls under `restart_below` x the
  uniform share (1/K) is dead, and restarts as one of this batch's encoder outputs (the quantizer's
  input), chosen at random, with its usage set back to the uniform share.
- `data_init`: at the first step every code restarts that way (a codebook that starts on the data,
  not on N(0, 1) draws that no encoder output is near).

The usage averages are part of the train state (`state['codebook']`), so a resume continues them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from skipvqvc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Upkeep:
  restart_below: float
  data_init: bool
  usage_decay: float

  @classmethod
  def of(cls, config, model) -> Upkeep | None:
    """The config's upkeep of `model`'s codebooks, or None when it asks for none (the original's
    codebooks); refused in one line for codebooks that are not plain (K, dim) tables."""
    options = config.get('codebook')
    if options is None or not (options.restart_below or options.data_init):
      return None
    tables = [getattr(q, 'embedding', None) for q in model.quantize]
    if not all(t is not None and t.ndim == 2 for t in tables):
      raise ConfigError(
        f'--config.codebook.restart_below / data_init: {model.name} makes its codebooks from the '
        f'speaker (no fixed table to restart); set both off for it'
      )
    return cls(options.restart_below, options.data_init, options.usage_decay)

  def initial(self, sizes: list[int]) -> dict:
    """Every code at the uniform share."""
    return dict(usage=[jnp.full((k,), 1.0 / k, jnp.float32) for k in sizes])

  def update(self, params: dict, upkeep: dict, codes: list, quantizer_in: list, step, rng):
    """(params with dead codes restarted, the new usage state, how many codes restarted)."""
    quantize = dict(params['quantize'])
    usage_out, restarted = [], jnp.zeros((), jnp.int32)
    for s, (scale_codes, inputs, usage) in enumerate(zip(codes, quantizer_in, upkeep['usage'])):
      k = usage.shape[0]
      table = quantize[s]['embedding']
      share = jnp.zeros(k, jnp.float32).at[scale_codes.reshape(-1)].add(1.0) / scale_codes.size
      usage = self.usage_decay * usage + (1.0 - self.usage_decay) * share
      dead = usage < self.restart_below / k
      if self.data_init:
        dead = dead | (step == 0)
      vectors = jax.lax.stop_gradient(inputs).reshape(-1, table.shape[-1]).astype(table.dtype)
      key = jax.random.fold_in(rng, s)
      if vectors.shape[0] >= k:  # distinct frames when the batch has enough
        chosen = vectors[jax.random.permutation(key, vectors.shape[0])[:k]]
      else:
        chosen = vectors[jax.random.randint(key, (k,), 0, vectors.shape[0])]
      quantize[s] = dict(quantize[s], embedding=jnp.where(dead[:, None], chosen, table))
      usage_out.append(jnp.where(dead, 1.0 / k, usage))
      restarted = restarted + jnp.sum(dead)
    return dict(params, quantize=quantize), dict(usage=usage_out), restarted
