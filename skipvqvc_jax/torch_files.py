"""PyTorch `.pt` files read and written without torch: state dicts of arrays, nothing executable.

A `.pt` file is a pickle whose tensors point at raw storages kept outside it. Two containers exist:
- the zip format (torch >= 1.6): `<name>/data.pkl` and one `<name>/data/<key>` record per storage;
- the legacy format (torch < 1.6, e.g. the original's MelGAN weights of 2019): four pickles in a
  row (a magic number, a protocol number, system info, the object), the list of storage keys, then
  each storage as an int64 element count and its bytes.

`load` rebuilds tensors as numpy arrays through a pickle reader that accepts only what a state dict
holds (tensors, ordered dicts, numbers, strings): like `torch.load(weights_only=True)`, a file cannot
run code. `save` writes the zip format, which torch >= 1.6 (and the original's scripts under it) load.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

from skipvqvc_jax.errors import PortError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ALIGNMENT = 64  # torch aligns each zip storage record to 64 bytes (what memory-mapped loads need)


class _StorageType:
  """Stands for torch.FloatStorage & co. inside a pickle: only its element type matters here."""

  def __init__(self, name: str, dtype):
    self.name, self.dtype = name, np.dtype(dtype)


def _bfloat16():
  import ml_dtypes  # pylint: disable=import-outside-toplevel  (jax's own dependency)

  return ml_dtypes.bfloat16


STORAGE_TYPES = {
  name: _StorageType(name, dtype)
  for name, dtype in (
    ('FloatStorage', np.float32),
    ('DoubleStorage', np.float64),
    ('HalfStorage', np.float16),
    ('LongStorage', np.int64),
    ('IntStorage', np.int32),
    ('ShortStorage', np.int16),
    ('CharStorage', np.int8),
    ('ByteStorage', np.uint8),
    ('BoolStorage', np.bool_),
  )
}
DTYPE_STORAGE = {t.dtype: t for t in STORAGE_TYPES.values()}


def _storage_type(name: str) -> _StorageType:
  if name == 'BFloat16Storage':
    return _StorageType(name, _bfloat16())
  return STORAGE_TYPES[name]


class _Storage:
  """A storage being read: its element type and, once read, its elements as a flat array."""

  def __init__(self, storage_type: _StorageType, numel: int):
    self.dtype, self.numel, self.array = storage_type.dtype, numel, None


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2: a (strided) view of a storage, as its own numpy array."""
  flat = storage.array if isinstance(storage, _Storage) else storage
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
    flat[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
  )
  return np.array(view)


class _Pending:
  """A tensor of a legacy file whose storage is read after the pickle: rebuilt once it is."""

  def __init__(self, args):
    self.args = args


def _rebuild_pending(*args):
  return _Pending(args)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  return data


GLOBALS = {
  ('collections', 'OrderedDict'): collections.OrderedDict,
  ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  ('builtins', 'set'): set,
  ('builtins', 'frozenset'): frozenset,
}


class _Reader(pickle.Unpickler):
  """A pickle reader that builds tensors from storages and refuses every other global."""

  def __init__(self, file, storage, rebuild):
    super().__init__(file)
    self._storage, self._rebuild = storage, rebuild

  def find_class(self, module, name):
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return self._rebuild
    if module == 'torch' and name.endswith('Storage'):
      try:
        return _storage_type(name)
      except KeyError:
        pass
    if (module, name) in GLOBALS:
      return GLOBALS[(module, name)]
    raise PortError(f'holds a {module}.{name}, which a state dict of arrays does not')

  def persistent_load(self, pid):
    return self._storage(pid)


def _resolve(obj):
  """`obj` with every _Pending tensor rebuilt (legacy files)."""
  if isinstance(obj, _Pending):
    return _rebuild_tensor(*obj.args)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v)) for k, v in obj.items())
  if isinstance(obj, list | tuple):
    return type(obj)(_resolve(v) for v in obj)
  return obj


def _load_zip(data: bytes):
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if not pickles:
      raise PortError('is a zip file without data.pkl: not a PyTorch checkpoint')
    prefix = pickles[0][: -len('data.pkl')]

    def storage(pid):
      kind, storage_type, key, _location, numel = pid[:5]
      if kind != 'storage' or not isinstance(storage_type, _StorageType):
        raise PortError(f'holds a {kind} record, which a state dict of arrays does not')
      raw = archive.read(f'{prefix}data/{key}')
      return np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder('<'))

    return _Reader(io.BytesIO(archive.read(pickles[0])), storage, _rebuild_tensor).load()


def _load_legacy(data: bytes):
  f = io.BytesIO(data)
  plain = lambda: _Reader(f, lambda pid: pid, None).load()
  if plain() != LEGACY_MAGIC:
    raise PortError('is neither a zip nor a legacy PyTorch file')
  if plain() != LEGACY_PROTOCOL:
    raise PortError('is a legacy PyTorch file of an unknown protocol version')
  info = plain()
  if not info.get('little_endian', True):
    raise PortError('was written on a big-endian machine')
  storages: dict[str, _Storage] = {}

  def storage(pid):
    kind, *rest = pid
    if kind == 'module':  # a pickled nn.Module's source: no state dict holds one
      raise PortError('holds a whole module, not a state dict: save model.state_dict()')
    storage_type, key, _location, numel, view = rest
    if view is not None:
      raise PortError('holds a storage view, which state dicts of this age do not')
    return storages.setdefault(key, _Storage(storage_type, numel))

  obj = _Reader(f, storage, _rebuild_pending).load()
  for key in plain():
    stored = storages[key]
    header = f.read(8)
    if len(header) != 8:
      raise PortError('is cut short (a storage is missing)')
    (numel,) = struct.unpack('<q', header)
    raw = f.read(numel * stored.dtype.itemsize)
    if numel != stored.numel or len(raw) != numel * stored.dtype.itemsize:
      raise PortError('is cut short (a storage has fewer bytes than its header says)')
    stored.array = np.frombuffer(raw, dtype=stored.dtype.newbyteorder('<'))
  return _resolve(obj)


def load(source: str | bytes):
  """The object a `.pt` file holds, tensors as numpy arrays; PortError for anything else.

  `source`: a local path or the file's bytes."""
  if isinstance(source, str):
    with open(source, 'rb') as f:
      source = f.read()
  try:
    if source[:4] == b'PK\x03\x04':
      return _load_zip(source)
    return _load_legacy(source)
  except PortError:
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    struct.error,
  ) as e:
    raise PortError(f'is not a readable PyTorch file ({type(e).__name__}: {e})') from None


# ---- writing --------------------------------------------------------------------------------------


class _Global:
  """A global of torch's (a function or a storage class), pickled by name: torch need not be here."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle asks that a reduce's function be callable
    raise NotImplementedError


class _Tensor:
  """An array being written: pickled as torch pickles a tensor, its storage kept apart."""

  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, np.array(array, order='C')  # (ascontiguousarray makes 0-d 1-d)
    native = self.array.dtype.newbyteorder('=')
    if native not in DTYPE_STORAGE:
      raise PortError(f'cannot write arrays of {self.array.dtype} as PyTorch tensors')
    self.storage = _Global('torch', DTYPE_STORAGE[native].name)

  def __reduce__(self):
    shape = self.array.shape
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    args = (self, 0, shape, strides, False, collections.OrderedDict())
    return _Global('torch._utils', '_rebuild_tensor_v2'), args


class _Writer(pickle._Pickler):  # pylint: disable=protected-access  (the Python pickler's dispatch)
  """Protocol 2, as torch writes: tensors' storages as persistent ids, torch's globals by name."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file, storage_id):
    super().__init__(file, protocol=2)
    self._storage_id = storage_id
    self._reducing: set[int] = set()

  def _save_global(self, obj: _Global):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  dispatch[_Global] = _save_global

  def persistent_id(self, obj):
    # A tensor is its own storage's stand-in in its reduce arguments: the first time it is met it is
    # reduced (to _rebuild_tensor_v2), the second time, inside those arguments, it is the storage.
    if isinstance(obj, _Tensor):
      if id(obj) in self._reducing:
        return self._storage_id(obj)
      self._reducing.add(id(obj))
    return None


def _tensors_of(obj) -> tuple[object, list[_Tensor]]:
  """`obj` with every array replaced by a _Tensor (keys 0, 1, ...), and those tensors."""
  tensors: list[_Tensor] = []

  def convert(value):
    if isinstance(value, np.ndarray | np.generic):
      tensors.append(_Tensor(str(len(tensors)), np.asarray(value)))
      return tensors[-1]
    if isinstance(value, Mapping):
      return collections.OrderedDict((k, convert(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
      return type(value)(convert(v) for v in value)
    return value

  return convert(obj), tensors


def _pickled(obj, storage_id) -> bytes:
  out = io.BytesIO()
  _Writer(out, storage_id).dump(obj)
  return out.getvalue()


def _raw(tensor: _Tensor) -> bytes:
  return tensor.array.astype(tensor.array.dtype.newbyteorder('<'), copy=False).tobytes()


def dumps(obj, legacy: bool = False) -> bytes:
  """The bytes of a `.pt` file holding `obj` (dicts, lists, numbers, strings and numpy arrays);
  legacy: torch < 1.6's format instead of the zip format."""
  obj, tensors = _tensors_of(obj)
  if legacy:
    header = lambda value: pickle.dumps(value, protocol=2)
    info = dict(
      protocol_version=LEGACY_PROTOCOL, little_endian=True, type_sizes=dict(short=2, int=4, long=4)
    )
    body = _pickled(obj, lambda t: ('storage', t.storage, t.key, 'cpu', t.array.size, None))
    parts = [header(LEGACY_MAGIC), header(LEGACY_PROTOCOL), header(info), body]
    parts.append(header([t.key for t in tensors]))
    for t in tensors:
      parts += [struct.pack('<q', t.array.size), _raw(t)]
    return b''.join(parts)
  records = [
    ('data.pkl', _pickled(obj, lambda t: ('storage', t.storage, t.key, 'cpu', t.array.size)))
  ]
  records += [(f'data/{t.key}', _raw(t)) for t in tensors]
  records += [('version', b'3\n'), ('byteorder', b'little')]
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as archive:
    for name, data in records:
      info = zipfile.ZipInfo(f'archive/{name}', date_time=(1980, 1, 1, 0, 0, 0))
      # Pad the local header's extra field so that the record's data starts on ALIGNMENT.
      start = out.tell() + 30 + len(info.filename)
      pad = -(start + 4) % ALIGNMENT
      info.extra = struct.pack('<HH', 0xF55A, pad) + b'Z' * pad
      archive.writestr(info, data)
  return out.getvalue()
