"""`.pt` files without torch: both of torch's containers, round trips, and what is refused. Where torch
is installed (the `.[torch]` extra), the files are also checked against torch itself."""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np
import pytest

from skipvqvc_jax.core.errors import PortError
from skipvqvc_jax.store import torch_files


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
  for legacy in (False, True):
    view = torch_files.load(_crafted(storage, 0, (4, 3), (1, 4), legacy=legacy))['w']
    np.testing.assert_array_equal(view, storage.reshape(3, 4).T)
  expanded = torch_files.load(_crafted(storage, 5, (2, 3), (0, 1)))['w']  # torch's expand()
  np.testing.assert_array_equal(expanded, [[5, 6, 7], [5, 6, 7]])


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


# ---- hostile files: each crafted as an attacker would, each refused in one line -------------------


class _StorageRef:
  """A storage in a crafted pickle: pickled as torch's persistent id for it."""

  def __init__(self, key: str, numel: int, kind: str = 'FloatStorage'):
    self.key, self.numel, self.kind = key, numel, kind


class _ViewRef:
  """A tensor in a crafted pickle: any offset, size and stride over a storage."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride, False, collections.OrderedDict())

  def __reduce__(self):
    return torch_files._Global('torch._utils', '_rebuild_tensor_v2'), self.args


class _CraftWriter(torch_files._Writer):
  def __init__(self, file, legacy):
    super().__init__(file, storage_id=None)
    self._legacy = legacy

  def persistent_id(self, obj):
    if isinstance(obj, _StorageRef):
      pid = ('storage', torch_files._Global('torch', obj.kind), obj.key, 'cpu', obj.numel)
      return pid + (None,) if self._legacy else pid
    return None


def _crafted_pickle(obj, legacy=False) -> bytes:
  out = io.BytesIO()
  _CraftWriter(out, legacy).dump(obj)
  return out.getvalue()


def _container(body: bytes, storages: dict[str, bytes], legacy=False, compress=False) -> bytes:
  """A `.pt` file of pickle `body` and raw `storages` (key -> bytes) in either container."""
  if legacy:
    header = lambda value: pickle.dumps(value, protocol=2)
    parts = [header(torch_files.LEGACY_MAGIC), header(torch_files.LEGACY_PROTOCOL)]
    parts += [header({'little_endian': True}), body, header(list(storages))]
    for raw in storages.values():
      parts += [struct.pack('<q', len(raw) // 4), raw]
    return b''.join(parts)
  out = io.BytesIO()
  method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
  with zipfile.ZipFile(out, 'w', method) as archive:
    archive.writestr('archive/data.pkl', body)
    for key, raw in storages.items():
      archive.writestr(f'archive/data/{key}', raw)
  return out.getvalue()


def _crafted(flat, offset, size, stride, legacy=False, numel=None) -> bytes:
  """A file whose tensor 'w' is the given view of float32 storage `flat` (its count in the pickle
  `numel`, default its true length)."""
  flat = np.asarray(flat, np.float32)
  ref = _StorageRef('0', flat.size if numel is None else numel)
  body = _crafted_pickle({'w': _ViewRef(ref, offset, size, stride)}, legacy)
  return _container(body, {'0': flat.tobytes()}, legacy)


_HOSTILE_VIEWS = {
  # The segfault of the 413-byte file: size x stride run far past the storage's 4 elements.
  'past the end': ((4, 1 << 20), (1 << 20, 1), 0, 'reads past the end of its storage'),
  'negative stride': ((4,), (-1 << 30,), 3, 'negative offset, size or stride'),
  'negative offset': ((2,), (1,), -(1 << 40), 'negative offset, size or stride'),
  # The stride-0 view of one element that asked for 11 GiB.
  'stride 0, 11 GiB': ((1 << 20, 2816), (0, 0), 0, 'bytes of arrays from 16 bytes of storage'),
}


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
@pytest.mark.parametrize('case', _HOSTILE_VIEWS)
def test_views_outside_their_storage_are_refused_before_any_array_is_made(case, legacy):
  size, stride, offset, message = _HOSTILE_VIEWS[case]
  with pytest.raises(PortError, match=message):
    torch_files.load(_crafted(np.arange(4), offset, size, stride, legacy=legacy))


def test_a_storage_larger_than_the_file_is_refused():
  """The pickle claims 2**28 elements of a 16-byte record; in the legacy format, of a short stream."""
  with pytest.raises(PortError, match=r'record archive/data/0 of 16 bytes where 1073741824 belong'):
    torch_files.load(_crafted(np.arange(4), 0, (4,), (1,), numel=1 << 28))
  with pytest.raises(PortError, match='of another size than its tensors say'):
    torch_files.load(_crafted(np.arange(4), 0, (4,), (1,), legacy=True, numel=1 << 28))


def test_a_record_that_inflates_far_beyond_the_file_is_refused_before_inflating():
  """The zip bomb: 64 MiB of zeros deflated to 64 KiB; whether the pickle claims 1 element or all
  of them, nothing is inflated (peak memory stays near the file's size)."""
  import tracemalloc

  zeros = bytes(64 << 20)
  for numel, message in ((1, 'of 67108864 bytes where 4 belong'), (16 << 20, 'claiming 67108864')):
    ref = _StorageRef('0', numel)
    body = _crafted_pickle({'w': _ViewRef(ref, 0, (1,), (1,))})
    data = _container(body, {'0': zeros}, compress=True)
    assert len(data) < 1 << 20
    tracemalloc.start()
    with pytest.raises(PortError, match=message):
      torch_files.load(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * len(data) + (1 << 20), peak


def _legacy_with(body: bytes) -> bytes:
  return _container(body, {}, legacy=True)


def _build_sets_class() -> bytes:
  """An OrderedDict whose BUILD sets __class__ (and a storage type whose BUILD sets its dtype)."""
  ordered = b'ccollections\nOrderedDict\n)R'
  set_class = b'N(X\t\x00\x00\x00__class__cbuiltins\nset\nd\x86b'  # (None, {'__class__': set})
  return b'\x80\x02' + ordered + set_class + b'.'


_HOSTILE_PICKLES = {
  'an int where a storage belongs': (
    _crafted_pickle({'w': _ViewRef(7, 0, (1,), (1,))}, legacy=True),
    'builds a tensor from a int where a storage belongs',
  ),
  'a BUILD that sets __class__': (_build_sets_class(), 'not a readable PyTorch file'),
  'a BUILD on a storage type': (
    b'\x80\x02ctorch\nFloatStorage\nN(X\x05\x00\x00\x00dtypeK\x01d\x86b.',
    "sets 'dtype' on a StorageType",
  ),
  '100,000 nested lists': (b']' * 100_000 + b'a' * 99_999 + b'.', 'nests containers more than 64'),
  'a list that holds itself': (b']q\x00h\x00a.', 'nests containers more than 64'),
  'a storage id that is an int': (b'\x80\x02K\x05Q.', 'holds a 5 record'),
}


@pytest.mark.parametrize('case', _HOSTILE_PICKLES)
def test_hostile_pickles_are_one_line(case):
  body, message = _HOSTILE_PICKLES[case]
  with pytest.raises(PortError, match=message) as raised:
    torch_files.load(_legacy_with(body))
  assert '\n' not in str(raised.value)


def test_a_container_shared_many_times_over_is_built_once():
  """A pickle can name one list twice at every level (2**40 paths through 40 lists): each is built
  once, and the sharing is kept."""
  body = b'\x80\x02]q\x00' + b'h\x00h\x00\x86q\x00' * 40 + b'.'
  shared = torch_files.load(_legacy_with(body))
  assert shared[0] is shared[1]


def _mutations(data: bytes, rng: np.random.Generator, count: int):
  """`count` variants of `data`: bytes overwritten, a run removed or repeated, the file cut."""
  size = len(data)
  for _ in range(count):
    mutated = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # a few bytes overwritten, most often with the edge values of their fields
      for at in rng.integers(0, size, rng.integers(1, 5)):
        mutated[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.integers(256)]))
    elif kind == 1:
      start = rng.integers(size)
      del mutated[start : start + rng.integers(1, 64)]
    elif kind == 2:
      start = rng.integers(size)
      mutated[start:start] = mutated[start : start + rng.integers(1, 64)]
    else:
      del mutated[rng.integers(size) :]
    yield bytes(mutated)


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_fuzzed_files_load_or_are_refused_in_one_line_within_bounded_memory(legacy):
  """2,000 mutations of a valid file (and of a transposed view's): each loads or is one PortError
  line, and no load holds more than a small multiple of the file's size."""
  import tracemalloc

  rng = np.random.default_rng(1234)
  seeds = [
    torch_files.dumps(_checkpoint(), legacy=legacy),
    _crafted(np.arange(12), 0, (4, 3), (1, 4), legacy=legacy),
  ]
  outcomes = collections.Counter()
  tracemalloc.start()
  try:
    for seed in seeds:
      for data in _mutations(seed, rng, 1000):
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        try:
          torch_files.load(data)
          outcomes['loaded'] += 1
        except PortError as e:
          assert '\n' not in str(e), str(e)
          outcomes['refused'] += 1
        peak = tracemalloc.get_traced_memory()[1] - start
        assert peak <= 8 * len(data) + (2 << 20), (peak, len(data))
  finally:
    tracemalloc.stop()
  assert outcomes['refused'] > 500 and sum(outcomes.values()) == 2000, outcomes
