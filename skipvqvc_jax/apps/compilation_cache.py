"""JAX's persistent compilation cache as the programs use it: where it lives, its size cap, and the
repair of entries that would stop a capped cache from growing."""

from __future__ import annotations

import os


def folder(flag: str | None = None) -> str:
  """The user's cache folder for compiled programs: --compilation_cache_dir (`flag`), else
  $SKIPVQVC_CACHE_DIR, else $XDG_CACHE_HOME/skipvqvc_jax/xla (~/.cache/skipvqvc_jax/xla)."""
  if flag:
    return flag
  if os.environ.get('SKIPVQVC_CACHE_DIR'):
    return os.environ['SKIPVQVC_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'skipvqvc_jax', 'xla')


def use(jax, enabled: bool, folder_flag: str | None, max_gb: float) -> None:
  """JAX's persistent compilation cache, on unless `enabled` is False (--nocompilation_cache), in
  `folder(folder_flag)` unless JAX's own environment variable already names one, at most `max_gb`
  (-1: no bound): a second conversion or a resumed run loads its programs instead of compiling them
  (on 2 CPU cores, tens of seconds per command)."""
  if not enabled:
    jax.config.update('jax_enable_compilation_cache', False)
    return
  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR')
  if not cache:
    cache = folder(folder_flag)
    jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_compilation_cache_max_size', -1 if max_gb < 0 else int(max_gb * 1e9))
  if max_gb >= 0:
    _give_entries_access_times(cache)
  # Conversion's programs compile in well under JAX's default threshold of 1 s each, but together
  # they are most of a short command's time.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def _give_entries_access_times(folder: str) -> None:
  """A cache entry without its `-atime` file (written by a run without a size cap, or cut short
  between the two files) makes JAX's size-capped cache fail every later write with a warning, so the
  cache stops growing for good: such entries get their file's time as their last use, under JAX's
  own lock of the folder. A cache that cannot be read or locked is left to JAX."""
  import filelock  # pylint: disable=import-outside-toplevel

  try:
    names = set(os.listdir(folder))
  except OSError:
    return
  missing = [
    name[: -len('-cache')]
    for name in names
    if name.endswith('-cache') and name[: -len('-cache')] + '-atime' not in names
  ]
  if not missing:
    return
  try:
    with filelock.FileLock(os.path.join(folder, '.lockfile'), timeout=10):
      for key in missing:
        entry = os.path.join(folder, key + '-cache')
        if os.path.exists(entry) and not os.path.exists(os.path.join(folder, key + '-atime')):
          used = int(os.stat(entry).st_mtime_ns).to_bytes(8, 'little')
          with open(os.path.join(folder, key + '-atime'), 'wb') as f:
            f.write(used)
  except (OSError, filelock.Timeout):
    pass
