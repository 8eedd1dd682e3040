"""Train, evaluate or convert with VQVC+. See skipvqvc_jax/apps/main.py for the flags."""

from skipvqvc_jax.apps.main import run

if __name__ == '__main__':
  run()
