"""Audio corpus -> MelGAN-compatible log-mel features. See skipvqvc_jax/apps/preprocess.py."""

from skipvqvc_jax.apps.preprocess import run

if __name__ == '__main__':
  run()
