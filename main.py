"""Train, evaluate or convert with VQVC+. See skipvqvc_jax/cli.py for the flags."""

from skipvqvc_jax.cli import run

if __name__ == '__main__':
  run()
