"""The user's mistakes: one base class, so every command catches one type and exits 1 with one line.

Each subclass names where the problem was found. Messages are one line that names the file, flag or
setting at fault and what to do about it. `UserError` is a ValueError, so code that caught the older
ValueErrors keeps working.
"""

import errno
import os


class UserError(ValueError):
  """A problem the user can fix (bad input, flag, config or workdir); the message is one line."""


class AudioError(UserError):
  """A file cannot be used as speech audio."""


class CorpusError(UserError):
  """A corpus or feature folder is missing, empty or inconsistent."""


class ConfigError(UserError):
  """A config field or preset is invalid."""


class TrainingError(UserError):
  """A run cannot go on (diverged, bad workdir); the message says why and what is kept."""


class ConversionError(UserError):
  """Conversion cannot run (missing file, bad audio, wrong checkpoint)."""


class PortError(UserError):
  """A state dict does not fit the model; the message names the offending keys."""


class CheckpointError(UserError):
  """A checkpoint, workdir or model directory is missing or does not hold what was asked for."""


class StorageError(UserError):
  """Storage (a bucket, its server, a disk) cannot be reached, read or written, or not in time."""


# The faults of a file system the user can fix, with what to do: a full disk, a folder this user
# cannot write. Any other OSError is left to propagate (it may be a bug).
_FILE_SYSTEM_ADVICE = {
  errno.ENOSPC: 'free some space and rerun (what was written before is kept)',
  errno.EDQUOT: 'free some space and rerun (what was written before is kept)',
  errno.EROFS: 'choose a folder this user can write',
  errno.EACCES: 'choose a folder this user can write, or change its permissions',
  errno.EPERM: 'choose a folder this user can write, or change its permissions',
}


def file_system_fault(e: OSError) -> str | None:
  """One line for a full disk or a folder that cannot be written, naming the file; None otherwise."""
  advice = _FILE_SYSTEM_ADVICE.get(e.errno)
  if advice is None:
    return None
  where = f'{e.filename}: ' if e.filename else ''
  return f'{where}{e.strerror or e}; {advice}'


# The client libraries of object storage: an error of theirs that reaches a program's main is a
# storage fault (a server gone, a bucket missing, credentials refused), not a bug of ours.
_STORAGE_LIBRARIES = ('aiohttp', 'gcsfs', 'fsspec', 'google', 'tensorstore', 's3fs', 'botocore')


def storage_fault(e: BaseException) -> str | None:
  """One line for an error raised by a storage client (after its own retries); None otherwise. (A
  bucket that is not there is found before, by `storage.check_reachable`.)"""
  if type(e).__module__.split('.')[0] not in _STORAGE_LIBRARIES:
    return None
  text = ' '.join(str(e).split())[:300] or type(e).__name__
  return (
    f'storage failed ({type(e).__name__}: {text}); what was written before is kept: rerun the same '
    f'command once the storage answers'
  )


def printable(text: str) -> str:
  """Text with file names in it as any terminal prints it: name bytes that are not UTF-8 (kept by
  Python as surrogate escapes) as \\x escapes."""
  return os.fsencode(text).decode('utf-8', 'backslashreplace')
