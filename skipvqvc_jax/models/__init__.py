"""The VQVC+ model family and its name registry."""
from __future__ import annotations

from skipvqvc_jax.models.layers import GruInit
from skipvqvc_jax.models.vqvc import (Encoding, VQVCPlus, VQVCPlusCVAE, VQVCPlusResample,
                                      VQVCPlusRhythm, VQVCPlusSpeakerQuantize)

_REGISTRY: dict[str, type[VQVCPlus]] = {
    cls.name: cls for cls in (VQVCPlus, VQVCPlusRhythm, VQVCPlusResample,
                              VQVCPlusSpeakerQuantize, VQVCPlusCVAE)
}


def names() -> list[str]:
  """The registered model names, as the original's `--model` flag spells them."""
  return list(_REGISTRY)


def get_class(name: str) -> type[VQVCPlus]:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f'unknown model {name!r}; valid models: {", ".join(_REGISTRY)}') from None


def build(name: str, *, channel: int, n_embed: int, in_channel: int = 80,
          gru_init: GruInit = 'normal', seed: int = 0) -> VQVCPlus:
  """Builds model `name` with the original's constructor arguments and a seeded initialisation."""
  return get_class(name)(in_channel, channel, n_embed, gru_init=gru_init, seed=seed)


__all__ = ['Encoding', 'VQVCPlus', 'build', 'get_class', 'names']
