"""The README's main job: the demo preset on the bundled corpus learns, and TensorBoard shows it."""

import os

import pytest

from skipvqvc_jax.configs import vqvc_plus
from skipvqvc_jax.training import loop
from tests.conftest import REPO, read_events

STEPS = 80


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('demo')
  config = vqvc_plus.get_config('demo')
  config.num_train_steps = STEPS
  config.eval_every_steps = STEPS
  config.checkpoint_every_steps = STEPS
  previous = os.getcwd()
  os.chdir(REPO)  # data.train_dir is relative to the repository root, as in the README
  try:
    return str(workdir), loop.train_and_evaluate(config, str(workdir))
  finally:
    os.chdir(previous)


def test_demo_preprocesses_the_bundled_audio(demo_run):
  workdir, _ = demo_run
  assert len(os.listdir(os.path.join(workdir, 'features', 'train'))) == 8 * 24
  assert len(os.listdir(os.path.join(workdir, 'features', 'test'))) == 2 * 24


def test_held_out_reconstruction_falls(demo_run):
  _, summary = demo_run
  before, after = summary['evals'][0]['recon_loss'], summary['evals'][STEPS]['recon_loss']
  assert after < 0.5 * before, (before, after)


def test_tensorboard_holds_scalars_images_and_audio(demo_run):
  workdir, _ = demo_run
  values = read_events(workdir)
  for tag in (
    'train/loss',
    'train/recon_loss',
    'train/latent_loss',
    'train/grad_norm',
    'train/steps_per_sec',
    'train/perplexity_s0',
    'train/usage_s2',
    'test/loss',
    'test/recon_loss',
  ):
    assert tag in values, tag
    assert all(v.HasField('simple_value') for _, v in values[tag])
  assert [s for s, _ in values['train/loss']] == list(range(10, STEPS + 1, 10))
  for name in ('source', 'target', 'reconstruction', 'conversion'):
    images = values[f'mel/{name}']
    # The source and target do not change between evaluations: written once a run.
    assert [s for s, _ in images] == ([0] if name in ('source', 'target') else [0, STEPS])
    assert images[0][1].image.encoded_image_string.startswith(b'\x89PNG')
    sounds = values[f'audio/{name}']
    assert sounds[-1][1].audio.sample_rate == 22050
    assert sounds[-1][1].audio.length_frames == 128 * 256
