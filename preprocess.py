"""Audio corpus -> MelGAN-compatible log-mel features. See skipvqvc_jax/preprocess_cli.py."""

from skipvqvc_jax.preprocess_cli import run

if __name__ == '__main__':
  run()
