"""skipvqvc_jax: one-shot voice conversion with VQVC+ in JAX/Flax."""

__version__ = '0.2.0'
