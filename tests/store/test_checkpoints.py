"""store.checkpoints on real files: model directories written whole, read back exactly, refused where
they cannot be used; workdir paths stored so a workdir can move. (Training checkpoints: tests of the
loop and RELIABILITY.md's faults.)"""

import json
import os

import jax
import numpy as np
import pytest

from skipvqvc_jax import models
from skipvqvc_jax.core.errors import CheckpointError
from skipvqvc_jax.store import checkpoints

SMALL = dict(channel=16, n_embed=16)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """(a model directory of a seeded vqvc+, the model)."""
  model = models.build('vqvc+', **SMALL, seed=7)
  directory = tmp_path_factory.mktemp('models') / 'vqvc'
  checkpoints.save_model(str(directory), model, conversion=dict(trainer='normal'))
  return directory, model


def test_a_model_directory_reads_back_exactly_what_was_saved(model_dir):
  directory, model = model_dir
  info = checkpoints.read_model_info(str(directory))
  assert info.spec == model.spec() and info.conversion == dict(trainer='normal')
  assert info.kind == 'voice_conversion' and info.state_path == ('params',)
  assert checkpoints.is_model_dir(str(directory)) and not checkpoints.is_workdir(str(directory))
  loaded = checkpoints.params_of(checkpoints.load(str(directory)))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(checkpoints.params_of(model))):
    np.testing.assert_array_equal(a, b)
  # Nothing but the directory itself was written beside it (no staging folder left behind).
  assert os.listdir(directory.parent) == ['vqvc']


def test_a_model_directory_is_never_replaced_and_has_no_steps(model_dir):
  directory, model = model_dir
  before = (directory / checkpoints.MODEL_FILE).read_bytes()
  with pytest.raises(CheckpointError, match='already exists; choose a new directory'):
    checkpoints.save_model(str(directory), model)
  assert (directory / checkpoints.MODEL_FILE).read_bytes() == before
  with pytest.raises(CheckpointError, match='is a model directory: it has no steps'):
    checkpoints.load(str(directory), step=3)


@pytest.mark.parametrize(
  'text, said',
  [
    ('{"model": {"name": "vqvc+"', 'is not valid JSON'),
    ('{"model": {"name": "wavenet"}}', "unknown model 'wavenet'"),
    ('[1, 2]', 'is damaged'),
  ],
)
def test_a_damaged_model_json_is_named_with_what_to_do(model_dir, tmp_path, text, said):
  copy = tmp_path / 'copy'
  copy.mkdir()
  (copy / checkpoints.MODEL_FILE).write_text(text)
  with pytest.raises(CheckpointError) as error:
    checkpoints.read_model_info(str(copy))
  message = str(error.value)
  assert said in message and str(copy / checkpoints.MODEL_FILE) in message
  assert 'copy it again from where the model directory came from' in message


def test_a_folder_that_is_neither_is_said_so(tmp_path):
  with pytest.raises(CheckpointError, match='not a model directory or a training workdir'):
    checkpoints.read_model_info(str(tmp_path))
  (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps({'trainer': 'normal'}))
  with pytest.raises(CheckpointError, match='rerun its training command once'):
    checkpoints.read_model_info(str(tmp_path))


def test_data_paths_inside_a_workdir_are_stored_relative_to_it(tmp_path):
  workdir = tmp_path / 'run'
  inside, outside = workdir / 'features' / 'train', tmp_path / 'elsewhere'
  assert checkpoints.portable_path(str(inside), str(workdir)) == os.path.join('features', 'train')
  assert checkpoints.portable_path(str(outside), str(workdir)) == str(outside)


def test_a_config_missing_what_a_restore_needs_is_refused_naming_it(tmp_path):
  (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps({'trainer': 'normal', 'data': {}}))
  with pytest.raises(Exception, match='lacks model.name, features'):
    checkpoints.read_config(str(tmp_path))
