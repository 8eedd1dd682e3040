"""train_ljvae.py's adversarial half (the `ljvae` trainer): BEGAN on top of the reconstruction step.

Every step, after the autoencoder's own update (L1 at every scale + 0.1 x latent, clipped to 3, Adam):
- fakes: each scale's codes of the batch, shuffled across the batch (one permutation per scale), looked
  up and decoded; the critic `BeganDiscriminator` scores a mel by how well it reconstructs it;
- the decoder alone takes 0.2 x mean |D(fake) - fake| through its own Adam (clipped to 3);
- the critic takes mean |D(real) - real| - k mean |D(fake) - fake| (fakes detached; clipped to 3, Adam);
- k moves by 0.01 (gamma real - fake), kept in [0, 1] (gamma = 1); convergence = real + |gamma real -
  fake| is logged.
All three gradients are taken at the step's parameters, from one forward pass. That is the trainer's
intent; as published it stops on PyTorch 1.5 and later (its decoder loss is back-propagated after the
first update changed the decoder in place), and up to PyTorch 1.4 ran it on that partly stale graph.
The critic is called three times a step (fake, real, detached fake), each moving its spectral norms'
vectors and BatchNorm statistics on, as the original's does. Its parameters, statistics, both optimizer
states and k are the train state's `adversary`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.models.began import BatchStat, BeganDiscriminator, SpectralVector
from skipvqvc_jax.training.tasks.base import laid_out

GAMMA, LAMBDA_K, GAN_WEIGHT, CLIP = 1.0, 0.01, 0.2, 3.0
_STREAM = 2  # folded into the step's key for the shuffles and the fakes' GRU noise


def shuffles(rng, batch: int, scales: int) -> tuple[list, jax.Array]:
  """A step's permutation of the batch per scale (the fakes' codes) and the fakes' noise key."""
  shuffle_key, noise_key = jax.random.split(jax.random.fold_in(rng, _STREAM))
  perms = [jax.random.permutation(jax.random.fold_in(shuffle_key, s), batch) for s in range(scales)]
  return perms, noise_key


def _adam(config):
  return laid_out(
    config,
    optax.chain(
      optax.clip_by_global_norm(CLIP),
      optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
    ),
  )


class Began:
  """The critic, its optimizer and the decoder's own optimizer of the `ljvae` trainer."""

  def __init__(self, config, model):
    if not model.speaker_free:
      raise ConfigError(
        f'--config.trainer={config.trainer}: its fakes are decoded without speaker terms; '
        f'{model.name} has them (train_ljvae.py trains the speaker-free LJ models)'
      )
    critic = BeganDiscriminator(model.in_channel, seed=config.seed + 3)
    self.graphdef, self.critic_params, self.critic_stats = nnx.split(
      critic, nnx.Param, (SpectralVector, BatchStat)
    )
    self.tx = _adam(config)

  def initial(self, params: dict) -> dict:
    critic = nnx.to_pure_dict(self.critic_params)
    return dict(
      critic=critic,
      critic_stats=nnx.to_pure_dict(self.critic_stats),
      critic_opt=self.tx.init(critic),
      decoder_opt=self.tx.init(params['dec']),
      k=jnp.zeros((), jnp.float32),
    )

  def _critic(self, params, stats, mel):
    critic = nnx.merge(self.graphdef, params, stats)
    out = critic(mel)
    return out, nnx.to_pure_dict(nnx.state(critic, (SpectralVector, BatchStat)))

  def update(self, model_of, params, updated, adversary, codes, real, rng):
    """(`updated` with the decoder's adversarial update added, the new adversary state, metrics).
    params: the step's parameters (where every gradient is taken); updated: after the autoencoder's
    update; codes: the step's codes per scale; real: the normalised target mel (B, bands, T)."""
    batch = real.shape[0]
    perms, noise_key = shuffles(rng, batch, len(codes))
    shuffled = [c[perm] for c, perm in zip(codes, perms)]
    none = [jnp.zeros((batch, 1, 1), real.dtype)] * len(codes)  # no speaker terms to decode with

    def fake_of(decoder):
      model = model_of(dict(params, dec=decoder))
      return model.decode(model.lookup(shuffled), none, none, rng=noise_key)[-1]

    def gan_loss(decoder):
      fake = fake_of(decoder)
      scored, stats = self._critic(adversary['critic'], adversary['critic_stats'], fake)
      loss = jnp.mean(jnp.abs(scored - fake))
      return GAN_WEIGHT * loss, (loss, fake, stats)

    (_, (loss_gan, fake, stats)), decoder_grads = jax.value_and_grad(gan_loss, has_aux=True)(
      params['dec']
    )
    fake, k = jax.lax.stop_gradient(fake), adversary['k']

    def critic_loss(critic):
      scored_real, after_real = self._critic(critic, stats, real)
      scored_fake, after_fake = self._critic(critic, after_real, fake)
      real_loss, fake_loss = (
        jnp.mean(jnp.abs(scored_real - real)),
        jnp.mean(jnp.abs(scored_fake - fake)),
      )
      return real_loss - k * fake_loss, (after_fake, real_loss, fake_loss)

    (loss_dis, (stats, real_loss, fake_loss)), critic_grads = jax.value_and_grad(
      critic_loss, has_aux=True
    )(adversary['critic'])
    decoder_updates, decoder_opt = self.tx.update(
      decoder_grads, adversary['decoder_opt'], updated['dec']
    )
    critic_updates, critic_opt = self.tx.update(
      critic_grads, adversary['critic_opt'], adversary['critic']
    )
    balance = GAMMA * real_loss - fake_loss
    new = dict(
      critic=optax.apply_updates(adversary['critic'], critic_updates),
      critic_stats=stats,
      critic_opt=critic_opt,
      decoder_opt=decoder_opt,
      k=jnp.clip(k + LAMBDA_K * balance, 0.0, 1.0),
    )
    metrics = dict(
      loss_gan=loss_gan, loss_dis=loss_dis, k=new['k'], convergence=real_loss + jnp.abs(balance)
    )
    updated = dict(updated, dec=optax.apply_updates(updated['dec'], decoder_updates))
    return updated, new, metrics
