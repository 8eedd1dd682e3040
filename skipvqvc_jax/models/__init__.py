"""Every network of the project and one registry: the VQVC+ family, the MelGAN generator, the
discriminators a vocoder trains against.

`build(name, **sizes)` builds any of them; each model's `spec()` is the `build` arguments that rebuild
it, so a saved model directory or a workdir needs nothing but the spec to be restored.
"""

from __future__ import annotations

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.models.base import (
  BUILD_OPTIONS,
  CODE_DIM_MODELS,
  OPTION_MODELS,
  SPEAKER_SCALE_MODELS,
  Encoding,
  VQVCModel,
)
from skipvqvc_jax.models.discriminator import Discriminators
from skipvqvc_jax.models.layers import GruInit
from skipvqvc_jax.models.melgan import MelGANGenerator
from skipvqvc_jax.models.multi import (
  VQVCPlusMulti,
  VQVCPlusMultiPS,
  VQVCPlusMultiRhythm,
  VQVCPlusMultiSimple,
)
from skipvqvc_jax.models.multi_speaker import VQVCPlusMultiCAV, VQVCPlusMultiCodebookGen
from skipvqvc_jax.models.pitch import VQVCPlusPitch
from skipvqvc_jax.models.quantizer import code_statistics
from skipvqvc_jax.models.single_speaker import VQVCPlusLJ3, VQVCPlusMultiCodebookLJ
from skipvqvc_jax.models.vqvc import (
  VQVCPlus,
  VQVCPlusCVAE,
  VQVCPlusResample,
  VQVCPlusRhythm,
  VQVCPlusSpeakerQuantize,
)

# kind -> {name: class}; the voice-conversion names are the original's `--model` spellings.
_REGISTRY: dict[str, dict[str, type]] = {
  'voice_conversion': {
    cls.name: cls
    for cls in (
      VQVCPlus,
      VQVCPlusRhythm,
      VQVCPlusResample,
      VQVCPlusSpeakerQuantize,
      VQVCPlusCVAE,
      VQVCPlusMulti,
      VQVCPlusMultiSimple,
      VQVCPlusMultiRhythm,
      VQVCPlusMultiPS,
      VQVCPlusMultiCAV,
      VQVCPlusMultiCodebookGen,
      VQVCPlusPitch,
      VQVCPlusMultiCodebookLJ,
      VQVCPlusLJ3,
    )
  },
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


def kind_of(name: str) -> str:
  """The kind of model `name`: voice_conversion, vocoder or discriminator."""
  get_class(name)  # a one-line error for an unknown name
  return next(kind for kind, family in _REGISTRY.items() if name in family)


def is_multi_scale(name: str) -> bool:
  """Whether model `name` decodes at every scale (the `vqvc+_multi*` family), as it declares."""
  return get_class(name).multi_scale


def final_mel(outputs: list):
  """The full mel of a model's decoder outputs (every model's list of scales ends with it)."""
  return outputs[-1]


def build(name: str, *, seed: int = 0, **sizes):
  """Builds model `name` with its constructor's sizes (for the VQVC+ family the original's:
  channel, n_embed, in_channel, gru_init) and a seeded initialisation."""
  return get_class(name)(**sizes, seed=seed)


__all__ = [
  'Discriminators',
  'Encoding',
  'code_statistics',
  'GruInit',
  'MelGANGenerator',
  'BUILD_OPTIONS',
  'CODE_DIM_MODELS',
  'OPTION_MODELS',
  'SPEAKER_SCALE_MODELS',
  'VQVCModel',
  'VQVCPlus',
  'build',
  'final_mel',
  'get_class',
  'is_multi_scale',
  'kind_of',
  'names',
]
