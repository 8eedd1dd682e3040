"""The data wing's shared fixtures: a small tree of real audio files (good and bad) and its features."""

import pytest

from skipvqvc_jax.data import preprocessing
from tests import audio_fixtures


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp('corpus')
  return str(root), audio_fixtures.write_tree(str(root))


@pytest.fixture(scope='module')
def processed(tree, tmp_path_factory):
  root, files = tree
  out = str(tmp_path_factory.mktemp('features'))
  logs = []
  manifest = preprocessing.preprocess(
    root, out, test_speakers=['bob'], workers=2, progress=False, log=logs.append
  )
  return out, manifest, logs
