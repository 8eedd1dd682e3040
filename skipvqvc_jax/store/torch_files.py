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
import math
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

from skipvqvc_jax.core.errors import PortError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ALIGNMENT = 64  # torch aligns each zip storage record to 64 bytes (what memory-mapped loads need)

# Bounds on what a file may make this process hold, each against what the file honestly contains:
MAX_DEPTH = 64  # containers inside containers (a checkpoint's state dict sits 2-4 levels down)
# torch stores its zip records uncompressed; a compressed record (a file zipped again by hand) may
# inflate at most this much (deflate reaches ~1000x on zeros: a small file asking for gigabytes).
MAX_INFLATION = 64
# Tensors are returned as arrays of their own, so views of one storage are copied: all arrays together
# may hold this multiple of their storages' bytes (tied weights view one storage twice), plus a MiB.
MAX_VIEW_COPIES = 4


class _Sealed:
  """An object a pickle's BUILD opcode cannot change (it sets attributes): set once, in __init__."""

  __slots__ = ()

  def __init__(self, **fields):
    for name, value in fields.items():
      object.__setattr__(self, name, value)

  def __setattr__(self, name, value):
    raise PortError(
      f'sets {name!r} on a {type(self).__name__.strip("_")}, which no state dict does'
    )


class _StorageType(_Sealed):
  """Stands for torch.FloatStorage & co. inside a pickle: only its element type matters here."""

  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype):
    super().__init__(name=name, dtype=np.dtype(dtype))


def _bfloat16():
  import ml_dtypes  # pylint: disable=import-outside-toplevel  (jax's own dependency)

  return ml_dtypes.bfloat16


STORAGE_DTYPES = {
  'FloatStorage': np.float32,
  'DoubleStorage': np.float64,
  'HalfStorage': np.float16,
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
}
DTYPE_STORAGE = {np.dtype(dtype): name for name, dtype in STORAGE_DTYPES.items()}


def _storage_type(name: str) -> _StorageType:
  """A new stand-in each time: nothing one file does can reach the next file's."""
  if name == 'BFloat16Storage':
    return _StorageType(name, _bfloat16())
  return _StorageType(name, STORAGE_DTYPES[name])


class _Storage(_Sealed):
  """A storage the pickle names: its key, element type and element count, as the pickle claims."""

  __slots__ = ('key', 'dtype', 'numel')

  def __init__(self, key, storage_type, numel):
    if not isinstance(key, str) or not isinstance(storage_type, _StorageType):
      raise PortError('names a storage by something other than a key and a storage type')
    if not isinstance(numel, int) or numel < 0:
      raise PortError(f'gives storage {key} an element count of {numel!r}')
    super().__init__(key=key, dtype=storage_type.dtype, numel=numel)

  @property
  def nbytes(self) -> int:
    return self.numel * self.dtype.itemsize


class _View(_Sealed):
  """A tensor the pickle asks for: a strided view of a storage, made into an array only once every
  view has been checked against its storage and the storages against the file."""

  __slots__ = ('storage', 'offset', 'size', 'stride')

  def __init__(self, storage, offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
      raise PortError(f'builds a tensor from a {type(storage).__name__} where a storage belongs')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if not isinstance(offset, int) or len(size) != len(stride):
      raise PortError(f'builds a tensor of size {size} from offset {offset!r}, strides {stride}')
    super().__init__(storage=storage, offset=offset, size=size, stride=stride)

  @property
  def nbytes(self) -> int:
    return math.prod(self.size) * self.storage.dtype.itemsize

  def check_bounds(self) -> None:
    """PortError unless every element this view reads lies inside its storage."""
    if self.offset < 0 or min(self.size + self.stride, default=0) < 0:
      raise PortError(
        f'has a tensor with a negative offset, size or stride ({self.offset}, {self.size}, '
        f'{self.stride}): torch writes none'
      )
    end = self.offset
    if 0 not in self.size:
      end += 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if end > self.storage.numel:
      raise PortError(
        f'has a tensor of size {self.size}, strides {self.stride} at offset {self.offset} that reads '
        f'past the end of its storage ({self.storage.numel} elements)'
      )

  def array(self, flat: np.ndarray) -> np.ndarray:
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      flat[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
    )
    return np.array(view)


def _ints(values, what: str) -> tuple[int, ...]:
  if not isinstance(values, tuple | list) or not all(isinstance(v, int) for v in values):
    raise PortError(f'gives a tensor a {what} that is not a tuple of integers')
  if len(values) > MAX_DEPTH:
    raise PortError(f'gives a tensor {len(values)} dimensions')
  return tuple(values)


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

  def __init__(self, file, storage):
    super().__init__(file)
    self._file, self._storage = file, storage
    self.tensors: list[_View] = []  # the tensors the pickle asked for, in order

  def _tensor(self, *args) -> _View:
    self.tensors.append(_View(*args))
    return self.tensors[-1]

  def find_class(self, module, name):
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return self._tensor
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

  def load(self):
    """The object, once the pickle's length fields were checked against the bytes there are and its
    memo indices against its length: the C reader allocates a counted string's declared size before
    reading it, and a memo as long as the largest index (a 30-byte pickle could ask for gigabytes)."""
    start = self._file.tell()
    for count, (op, arg, _) in enumerate(pickletools.genops(self._file)):  # reads what is there
      if op.name in ('PUT', 'BINPUT', 'LONG_BINPUT') and not 0 <= int(arg) <= count:
        raise PortError(f'has a pickle that stores at memo index {arg} after {count} operations')
    self._file.seek(start)
    return super().load()


def _storages(tensors: list[_View]) -> dict[str, _Storage]:
  """The storages the tensors view, by key, once every view is checked against its storage and the
  arrays they make are bounded by the storages' bytes."""
  for tensor in tensors:
    tensor.check_bounds()
  found = {tensor.storage.key: tensor.storage for tensor in tensors}
  stored = sum(storage.nbytes for storage in found.values())
  made = sum(tensor.nbytes for tensor in tensors)
  if made > MAX_VIEW_COPIES * stored + (1 << 20):
    raise PortError(
      f'asks for {made} bytes of arrays from {stored} bytes of storage (views repeating elements)'
    )
  return found


def _resolve(obj, arrays: dict[int, np.ndarray], memo: dict[int, object], depth: int = 0):
  """`obj` with every tensor made an array; each container once (a pickle may share one many times
  over, or hold itself); refused past MAX_DEPTH levels."""
  if isinstance(obj, _View):
    return arrays[id(obj)]
  if not isinstance(obj, dict | list | tuple | set | frozenset):
    return obj
  if id(obj) in memo:
    return memo[id(obj)]
  if depth >= MAX_DEPTH:
    raise PortError(f'nests containers more than {MAX_DEPTH} deep, which no state dict does')
  deeper = lambda value: _resolve(value, arrays, memo, depth + 1)
  if isinstance(obj, dict):
    made = type(obj)((k, deeper(v)) for k, v in obj.items())
  else:
    made = type(obj)(deeper(v) for v in obj)
  memo[id(obj)] = made
  return made


def _read_pickle(data, storage) -> tuple[object, list[_View]]:
  """The object a pickle holds and the tensors it asked for, in order."""
  reader = _Reader(data, storage)
  return reader.load(), reader.tensors


def _record(archive: zipfile.ZipFile, name: str, size: int | None, data_size: int) -> bytes:
  """Record `name`'s bytes, its declared size checked before a byte is inflated: `size` exactly when
  given, always within the file (stored) or MAX_INFLATION times its compressed bytes."""
  try:
    info = archive.getinfo(name)
  except KeyError:
    raise PortError(f'has no record {name}') from None
  if size is not None and info.file_size != size:
    raise PortError(f'has record {name} of {info.file_size} bytes where {size} belong')
  if info.compress_type == zipfile.ZIP_STORED:
    honest = (
      info.compress_size == info.file_size and info.header_offset + info.file_size < data_size
    )
  else:
    honest = info.file_size <= MAX_INFLATION * info.compress_size + (1 << 20)
  if not honest:
    raise PortError(
      f'has record {name} claiming {info.file_size} bytes from {info.compress_size} in the file'
    )
  with archive.open(info) as f:
    raw = f.read(info.file_size + 1)
  if len(raw) != info.file_size:
    raise PortError(f'is cut short (record {name})')
  return raw


def _load_zip(data: bytes):
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
    if not pickles:
      raise PortError('is a zip file without data.pkl: not a PyTorch checkpoint')
    prefix = pickles[0][: -len('data.pkl')]
    named: dict[str, _Storage] = {}

    def storage(pid):
      if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != 'storage':
        raise PortError(f'holds a {pid!r:.40} record, which a state dict of arrays does not')
      _, storage_type, key, _location, numel = pid[:5]
      return named.setdefault(key, _Storage(key, storage_type, numel))

    pickled = io.BytesIO(_record(archive, pickles[0], None, len(data)))
    obj, tensors = _read_pickle(pickled, storage)
    arrays = {}
    for key, stored in _storages(tensors).items():
      raw = _record(archive, f'{prefix}data/{key}', stored.nbytes, len(data))
      flat = np.frombuffer(raw, dtype=stored.dtype.newbyteorder('<'))
      arrays.update((id(t), t.array(flat)) for t in tensors if t.storage.key == key)
  return _resolve(obj, arrays, {})


def _load_legacy(data: bytes):
  f = io.BytesIO(data)
  plain = lambda: _Reader(f, lambda pid: pid).load()
  if plain() != LEGACY_MAGIC:
    raise PortError('is neither a zip nor a legacy PyTorch file')
  if plain() != LEGACY_PROTOCOL:
    raise PortError('is a legacy PyTorch file of an unknown protocol version')
  info = plain()
  if not isinstance(info, dict) or not info.get('little_endian', True):
    raise PortError('was written on a big-endian machine, or says nothing of its byte order')
  named: dict[str, _Storage] = {}

  def storage(pid):
    if not isinstance(pid, tuple) or not pid:
      raise PortError(f'holds a {pid!r:.40} record, which a state dict of arrays does not')
    if pid[0] == 'module':  # a pickled nn.Module's source: no state dict holds one
      raise PortError('holds a whole module, not a state dict: save model.state_dict()')
    if pid[0] != 'storage' or len(pid) != 6:
      raise PortError(f'holds a {pid[0]!r:.40} record, which a state dict of arrays does not')
    _, storage_type, key, _location, numel, view = pid
    if view is not None:
      raise PortError('holds a storage view, which state dicts of this age do not')
    return named.setdefault(key, _Storage(key, storage_type, numel))

  obj, tensors = _read_pickle(f, storage)
  used = _storages(tensors)
  keys = plain()
  if not isinstance(keys, list) or set(used) - set(keys):
    raise PortError('lists its storages wrongly (a tensor names one the list lacks)')
  arrays = {}
  for key in keys:
    (numel,) = struct.unpack('<q', f.read(8).ljust(8, b'\xff'))  # short: -1, refused below
    stored = named.get(key)
    if stored is None or numel != stored.numel:
      raise PortError(
        f'is cut short or has storage {key!r:.40} of another size than its tensors say'
      )
    if stored.nbytes > len(data) - f.tell():
      raise PortError(f'is cut short (storage {key} has fewer bytes than its header says)')
    flat = np.frombuffer(f.read(stored.nbytes), dtype=stored.dtype.newbyteorder('<'))
    arrays.update((id(t), t.array(flat)) for t in tensors if t.storage.key == key)
  return _resolve(obj, arrays, {})


def load(source: str | bytes):
  """The object a `.pt` file holds, tensors as numpy arrays; PortError for anything else.

  `source`: a local path or the file's bytes. The file is untrusted: no code runs, every tensor's view
  is checked against its storage and every storage against the file before an array is made, and the
  arrays made are bounded by the file's size (see the MAX_ constants)."""
  if isinstance(source, str):
    with open(source, 'rb') as f:
      source = f.read()
  try:
    if source[:4] == b'PK\x03\x04':
      return _load_zip(source)
    return _load_legacy(source)
  except PortError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any other fault of a crafted file)
    detail = ' '.join(str(e).split())[:160]
    raise PortError(f'is not a readable PyTorch file ({type(e).__name__}: {detail})') from None


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
    self.storage = _Global('torch', DTYPE_STORAGE[native])

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
