"""Codebook upkeep the original does not do, from VQ-VAE practice: options of the voice-conversion task,
off in every preset of the original (whose parity they leave alone).

- `restart_below` > 0: every step, each content code's usage is tracked as an exponential moving
  average of its share of the batch's frames; a code whose usage falls under `restart_below` x the
  uniform share (1/K) is dead, and restarts as one of this batch's encoder outputs (the quantizer's
  input), chosen at random, with its usage set back to the uniform share.
- `data_init`: at the first step every code restarts that way (a codebook that starts on the data,
  not on N(0, 1) draws that no encoder output is near).
- `ema_decay` > 0: the codebooks are not trained by the gradient (its update of the tables is
  discarded) but set every step to moving averages, as VQ-VAE's EMA variant does: each code becomes the
  mean of the encoder outputs it was chosen for (a moving sum over a moving count, the counts smoothed
  so that an unused code keeps its vector instead of dividing by zero). The encoder still trains on
  the commitment part of the latent loss.

The moving averages are part of the train state (`state['codebook']`), so a resume continues them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from skipvqvc_jax.core.errors import ConfigError

_EPSILON = 1e-5  # the EMA counts' additive smoothing


@dataclasses.dataclass(frozen=True)
class Upkeep:
  restart_below: float
  data_init: bool
  usage_decay: float
  ema_decay: float = 0.0

  @classmethod
  def of(cls, config, model) -> Upkeep | None:
    """The config's upkeep of `model`'s codebooks, or None when it asks for none (the original's
    codebooks); refused in one line for codebooks that are not plain (K, dim) tables."""
    options = config.get('codebook')
    ema_decay = options.get('ema_decay', 0.0) if options is not None else 0.0
    if options is None or not (options.restart_below or options.data_init or ema_decay):
      return None
    tables = [getattr(q, 'embedding', None) for q in model.quantize]
    if not all(t is not None and t.ndim == 2 for t in tables):
      raise ConfigError(
        f'--config.codebook.restart_below / data_init / ema_decay: {model.name} makes its '
        f'codebooks from the speaker (no fixed table to restart or average); set them off for it'
      )
    return cls(options.restart_below, options.data_init, options.usage_decay, ema_decay)

  def initial(self, tables: list) -> dict:
    """Every code at the uniform share; with EMA updates, each code's moving count at 1 and its
    moving sum at its own vector (so the average starts as the table)."""
    state = dict(usage=[jnp.full((t.shape[0],), 1.0 / t.shape[0], jnp.float32) for t in tables])
    if self.ema_decay:
      state['count'] = [jnp.ones((t.shape[0],), jnp.float32) for t in tables]
      state['sum'] = [jnp.array(t, jnp.float32, copy=True) for t in tables]  # own buffers
    return state

  def _averaged(self, count, total, codes, vectors):
    """The EMA step: (new count, new sum, the table they make)."""
    k, d = count.shape[0], self.ema_decay
    count = d * count + (1.0 - d) * jnp.zeros(k, jnp.float32).at[codes].add(1.0)
    total = d * total + (1.0 - d) * jnp.zeros_like(total).at[codes].add(vectors)
    n = jnp.sum(count)
    smoothed = (count + _EPSILON) / (n + k * _EPSILON) * n  # Laplace: no code divides by ~0
    return count, total, total / smoothed[:, None]

  def update(self, params: dict, upkeep: dict, codes: list, quantizer_in: list, step, rng):
    """(params with the codebooks averaged and dead codes restarted, the new upkeep state, how many
    codes restarted)."""
    quantize = dict(params['quantize'])
    out = {key: [] for key in upkeep}
    restarted = jnp.zeros((), jnp.int32)
    for s, (scale_codes, inputs, usage) in enumerate(zip(codes, quantizer_in, upkeep['usage'])):
      k = usage.shape[0]
      table = quantize[s]['embedding']
      flat_codes = scale_codes.reshape(-1)
      vectors = jax.lax.stop_gradient(inputs).reshape(-1, table.shape[-1]).astype(jnp.float32)
      if self.ema_decay:
        count, total, averaged = self._averaged(
          upkeep['count'][s], upkeep['sum'][s], flat_codes, vectors
        )
        table = averaged.astype(table.dtype)
      share = jnp.zeros(k, jnp.float32).at[flat_codes].add(1.0) / scale_codes.size
      usage = self.usage_decay * usage + (1.0 - self.usage_decay) * share
      dead = usage < self.restart_below / k
      if self.data_init:
        dead = dead | (step == 0)
      key = jax.random.fold_in(rng, s)
      if vectors.shape[0] >= k:  # distinct frames when the batch has enough
        chosen = vectors[jax.random.permutation(key, vectors.shape[0])[:k]]
      else:
        chosen = vectors[jax.random.randint(key, (k,), 0, vectors.shape[0])]
      quantize[s] = dict(quantize[s], embedding=jnp.where(dead[:, None], chosen, table))
      out['usage'].append(jnp.where(dead, 1.0 / k, usage))
      if self.ema_decay:
        # a restarted code's average starts over on its new vector, at the mean count
        mean_count = jnp.mean(count)
        out['count'].append(jnp.where(dead, mean_count, count))
        out['sum'].append(jnp.where(dead[:, None], chosen * mean_count, total))
      restarted = restarted + jnp.sum(dead)
    return dict(params, quantize=quantize), out, restarted
