"""`vqvc+_multi` (the original's code-editing notebook, VQVAE.ipynb): --config=configs/vqvc_plus_multi.py:n64_ch512."""

from skipvqvc_jax.configs import default

_MULTI = {'model.name': 'vqvc+_multi', 'trainer': 'simple_normalize_multi'}

PRESETS = {
  # VQVAE.ipynb's checkpoint: vqvc+_multi_n64_ch512_train_simple_normalize_multi.
  'n64_ch512': dict(_MULTI, **{'model.channel': 512, 'model.n_embed': 64}),
  'n64_ch64': dict(_MULTI, **{'model.channel': 64, 'model.n_embed': 64}),
  # The original's train_multi.py: VCTK per-band mean/std (here: the corpus's stats.npz).
  'n64_ch64_mean_std': dict(
    _MULTI, **{'model.channel': 64, 'model.n_embed': 64, 'trainer': 'multi'}
  ),
  # The budget study's pick (benchmarks/README.md, "The budget study", row 9): the multi-scale model
  # with 256 channels, 512 codes and 3x the original's latent-loss weight; 25 minutes of 2 CPU cores
  # reach about 95,000 steps (pauses sized by pause_fraction).
  'cpu_25min': dict(
    _MULTI,
    **{
      'model.channel': 256,
      'model.n_embed': 512,
      'latent_loss_weight': 0.3,
      'num_train_steps': 95_000,
    },
  ),
  # Its accelerator twin: the same model and recipe at 4x the batch for about an hour of one GPU.
  # Not measured on a GPU yet: benchmarks/accelerator.py times its step (steps in an hour = 3.6e6 /
  # its ms per step); set num_train_steps from that.
  'gpu_1h': dict(
    _MULTI,
    **{
      'model.channel': 256,
      'model.n_embed': 512,
      'latent_loss_weight': 0.3,
      'batch_size': 32,
      'num_train_steps': 400_000,
      'eval_every_steps': 2000,
      'checkpoint_every_steps': 2000,
    },
  ),
  # The bundled demo corpus in a few minutes on 2 CPU cores.
  'demo': dict(_MULTI, **default.DEMO_VQVC),
  # A few steps in seconds (the tests' config).
  'tiny': dict(_MULTI, **default.TINY_VQVC),
}


def get_config(preset: str = 'n64_ch512'):
  return default.from_table(PRESETS, preset)
