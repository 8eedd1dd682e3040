"""Every network of the project and one registry: the VQVC+ family, the MelGAN generator, the
discriminators a vocoder trains against.

`build(name, **sizes)` builds any of them; each model's `spec()` is the `build` arguments that rebuild
it, so a saved model directory or a workdir needs nothing but the spec to be restored.
"""
from __future__ import annotations

from skipvqvc_jax.errors import ConfigError
from skipvqvc_jax.models.discriminator import Discriminators
from skipvqvc_jax.models.layers import GruInit
from skipvqvc_jax.models.melgan import MelGANGenerator
from skipvqvc_jax.models.vqvc import (Encoding, VQVCPlus, VQVCPlusCVAE, VQVCPlusResample,
                                      VQVCPlusRhythm, VQVCPlusSpeakerQuantize)

# kind -> {name: class}; the voice-conversion names are the original's `--model` spellings.
_REGISTRY: dict[str, dict[str, type]] = {
    'voice_conversion': {cls.name: cls for cls in (
        VQVCPlus, VQVCPlusRhythm, VQVCPlusResample, VQVCPlusSpeakerQuantize, VQVCPlusCVAE)},
    'vocoder': {MelGANGenerator.name: MelGANGenerator},
    'discriminator': {Discriminators.name: Discriminators},
}
_ALL = {name: cls for family in _REGISTRY.values() for name, cls in family.items()}


def names(kind: str = 'voice_conversion') -> list[str]:
  """The registered model names of one kind: voice_conversion, vocoder or discriminator."""
  return list(_REGISTRY[kind])


def get_class(name: str) -> type:
  try:
    return _ALL[name]
  except KeyError:
    raise ConfigError(f'unknown model {name!r}; valid models: {", ".join(_ALL)}') from None


def build(name: str, *, seed: int = 0, **sizes):
  """Builds model `name` with its constructor's sizes (for the VQVC+ family the original's:
  channel, n_embed, in_channel, gru_init) and a seeded initialisation."""
  return get_class(name)(**sizes, seed=seed)


__all__ = ['Discriminators', 'Encoding', 'GruInit', 'MelGANGenerator', 'VQVCPlus', 'build',
           'get_class', 'names']
