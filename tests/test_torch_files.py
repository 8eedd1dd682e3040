"""`.pt` files without torch: both of torch's containers, round trips, and what is refused. Where torch
is installed (the `.[torch]` extra), the files are also checked against torch itself."""

import collections
import io
import pickle
import zipfile

import numpy as np
import pytest

from skipvqvc_jax import torch_files
from skipvqvc_jax.errors import PortError


def _checkpoint():
  rng = np.random.default_rng(0)
  state_dict = collections.OrderedDict(
    weight=rng.normal(size=(4, 3, 5)).astype(np.float32),
    bias=rng.normal(size=(4,)).astype(np.float32),
    steps=np.arange(6, dtype=np.int64),
    scalar=np.float32(2.5),
    half=rng.normal(size=(2, 2)).astype(np.float16),
  )
  optimizer = {'state': {0: {'step': 3, 'exp_avg': state_dict['weight'] * 2}}, 'param_groups': []}
  return {'iteration': 12, 'state_dict': state_dict, 'optimizer': optimizer}


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_a_checkpoint_survives_the_round_trip(legacy):
  original = _checkpoint()
  back = torch_files.load(torch_files.dumps(original, legacy=legacy))
  assert back['iteration'] == 12 and back['optimizer']['state'][0]['step'] == 3
  for key, value in original['state_dict'].items():
    assert back['state_dict'][key].dtype == np.asarray(value).dtype
    np.testing.assert_array_equal(back['state_dict'][key], value)
  assert list(back['state_dict']) == list(original['state_dict'])  # order kept
  np.testing.assert_array_equal(
    back['optimizer']['state'][0]['exp_avg'], original['state_dict']['weight'] * 2
  )


def test_the_zip_container_is_torchs():
  """Records under one folder, data.pkl, version, one aligned record per storage."""
  data = torch_files.dumps(_checkpoint())
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    names = archive.namelist()
    assert 'archive/data.pkl' in names and 'archive/version' in names
    assert sorted(n for n in names if n.startswith('archive/data/')) == [
      f'archive/data/{i}' for i in sorted(map(str, range(6)))
    ]
    for info in archive.infolist():
      if info.filename.startswith('archive/data/'):
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        assert start % 64 == 0, info.filename


def test_strided_views_are_rebuilt():
  """A stored tensor may be a transposed view of its storage (torch saves `w.t()` that way)."""
  storage = np.arange(12, dtype=np.float32)
  view = torch_files._rebuild_tensor(storage, 0, (4, 3), (1, 4))  # pylint: disable=protected-access
  np.testing.assert_array_equal(view, storage.reshape(3, 4).T)


def test_a_pickle_with_code_is_refused():
  """A .pt whose pickle names any other global (os.system here) is refused before anything runs."""

  class Evil:
    def __reduce__(self):
      import os

      return os.system, ('echo pwned',)

  payload = io.BytesIO()
  with zipfile.ZipFile(payload, 'w') as archive:
    archive.writestr('archive/data.pkl', pickle.dumps({'x': Evil()}, protocol=2))
    archive.writestr('archive/version', '3\n')
  with pytest.raises(PortError, match=r'holds a (posix|os)\.system'):
    torch_files.load(payload.getvalue())


@pytest.mark.parametrize(
  'data, message',
  [
    (b'not a checkpoint at all', 'not a readable PyTorch file|neither a zip'),
    (torch_files.dumps(_checkpoint(), legacy=True)[:-100], 'cut short'),
    (torch_files.dumps(_checkpoint())[:300], 'not a readable PyTorch file'),
  ],
  ids=['garbage', 'cut legacy', 'cut zip'],
)
def test_damaged_files_are_one_line(data, message):
  with pytest.raises(PortError, match=message):
    torch_files.load(data)


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_torch_reads_ours_and_we_read_torchs(legacy, tmp_path):
  torch = pytest.importorskip('torch', reason='the cross-check against torch needs the torch extra')
  path = tmp_path / 'ours.pt'
  path.write_bytes(torch_files.dumps(_checkpoint(), legacy=legacy))
  theirs = torch.load(path, weights_only=True)
  for key, value in _checkpoint()['state_dict'].items():
    np.testing.assert_array_equal(theirs['state_dict'][key].numpy(), value)
  tensors = {
    'w': torch.randn(4, 6).t(),
    'p': torch.nn.Parameter(torch.randn(3)),
    'n': torch.tensor(5),
  }
  torch.save({'state_dict': tensors}, path, _use_new_zipfile_serialization=not legacy)
  ours = torch_files.load(str(path))['state_dict']
  for key, value in tensors.items():
    np.testing.assert_array_equal(ours[key], value.detach().numpy())
