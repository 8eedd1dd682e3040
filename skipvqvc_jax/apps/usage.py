"""What the programs print for --help (their own usage text and flags) and for a bad flag (one line)."""

import functools
import importlib.util
import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging

from skipvqvc_jax.core import deadlines, errors

flags.DEFINE_bool('version', False, 'Print the version and exit.')


def run_program(module_name, doc, main, define_flags, flag_names=None, argv=None) -> None:
  """What every program's run() does: defines its flags, starts (`start`), notes old spellings of
  flags, then runs `main` under absl with one-line flag errors (`parse_flags`)."""
  define_flags()
  start(module_name, doc, flag_names)
  note_old_spellings(argv or sys.argv)
  app.run(main, argv=argv, flags_parser=parse_flags)


# Flags renamed so that every program says one thing one way (docs/conversion.md, "One vocabulary"):
# {old spelling: new}. The old one stays an absl alias of the new until 0.3, hidden from --help.
_OLD_SPELLINGS: dict[str, str] = {}


def old_spelling(old: str, new: str) -> None:
  """Accepts --OLD for the flag --NEW (renamed), with a note naming the new spelling."""
  flags.DEFINE_alias(old, new)
  _OLD_SPELLINGS[old] = new


def note_old_spellings(argv: list[str]) -> None:
  """One `note:` line per old spelling of a flag on the command line, naming the new one."""
  for arg in argv[1:]:
    name = arg[2:].split('=', 1)[0] if arg.startswith('--') else ''
    if name in _OLD_SPELLINGS:
      print(
        f'note: --{name} is now --{_OLD_SPELLINGS[name]}; the old spelling works until 0.3',
        file=sys.stderr,
        flush=True,
      )


def start(module_name: str, doc: str, flag_names: list[str] | None = None) -> None:
  """What every program does first: file names in UTF-8 whatever the locale, --version, and its own
  --help (the flags of `module_name`, or only `flag_names` of them)."""
  utf8_file_names()
  handler = logging.get_absl_handler().python_handler
  handler.addFilter(quiet_libraries)
  handler.setFormatter(PlainLines(handler))
  sys.excepthook = _quiet_closed_loops(sys.excepthook)
  sys.unraisablehook = _quiet_closed_loops_unraisable(sys.unraisablehook)
  if '--version' in sys.argv[1:]:
    from skipvqvc_jax import __version__  # pylint: disable=import-outside-toplevel

    print(f'{os.path.basename(sys.argv[0])} (skipvqvc_jax) {__version__}')
    sys.exit(0)
  own_help(module_name, doc, flag_names)


# Libraries whose console lines are noise to a user: orbax logs every save at INFO, and it, tensorstore,
# gcsfs and asyncio log a failed write as screens of tracebacks from background threads. Their
# failures reach the user anyway, as the one `error:` line of the exception they raise; the web page's
# HTTP client (httpx) logs each request Gradio makes to itself. --verbosity=1 shows every line.
_QUIET_PATHS = (
  '/orbax/',
  '/tensorstore/',
  '/gcsfs/',
  '/fsspec/',
  '/aiohttp/',
  '/asyncio/',
  '/httpx/',
)


# JAX's probe of every backend it knows ("Unable to initialize backend 'tpu'": on any machine without
# one) starts every command; it says nothing about this run.
_BACKEND_PROBE = "Unable to initialize backend '"


def quiet_libraries(record) -> bool:
  """A logging filter: drops the lines of _QUIET_PATHS' libraries, and JAX's backend probe, unless
  --verbosity >= 1."""
  if logging.get_verbosity() >= 1:
    return True
  if str(record.msg).startswith(_BACKEND_PROBE):
    return False
  return not any(part in record.pathname for part in _QUIET_PATHS)


class PlainLines(std_logging.Formatter):
  """What a person at a terminal reads: a line as it was written (a warning says `warning:`), without
  absl's prefix of level, time, thread and source line. With --verbosity >= 1, or when absl writes to
  a log file (--log_dir), absl's own format."""

  def __init__(self, handler):
    super().__init__()
    self._handler, self._absl = handler, handler.formatter

  def format(self, record) -> str:
    if logging.get_verbosity() >= 1 or self._handler.stream not in (sys.stderr, sys.__stderr__):
      return self._absl.format(record)
    message = record.getMessage()
    if record.levelno >= std_logging.WARNING:
      return f'{std_logging.getLevelName(record.levelno).lower()}: {message}'
    return message


def _closed_loop_noise(value) -> bool:
  """Whether `value` is the `Event loop is closed` error that tensorstore's callbacks raise when they
  arrive after orbax closed its loop on a failed write (the failure itself is the program's one
  `error:` line), and --verbosity is below 1."""
  closed = isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'
  return closed and logging.get_verbosity() < 1


def _quiet_closed_loops(previous):
  """sys.excepthook without the closed-loop noise; everything else goes to `previous`."""

  def hook(kind, value, traceback):
    if not _closed_loop_noise(value):
      previous(kind, value, traceback)

  return hook


def _quiet_closed_loops_unraisable(previous):
  """sys.unraisablehook without the closed-loop noise: tensorstore reports a callback that raised
  as an unraisable exception (a bare traceback per pending write, screens of them)."""

  def hook(unraisable):
    if not _closed_loop_noise(unraisable.exc_value):
      previous(unraisable)

  return hook


def utf8_file_names() -> None:
  """Re-executes this program in Python's UTF-8 mode when the locale's encoding is not UTF-8.

  Under a Latin-1 or C locale, Python decodes a file name's bytes with that encoding, while orbax's
  tensorstore encodes every path it is given as UTF-8: a non-ASCII workdir then names another folder,
  or none (a surrogate-escaped byte cannot be encoded). In UTF-8 mode both agree on the bytes.
  """
  if os.name != 'posix' or sys.flags.utf8_mode or os.environ.get('PYTHONUTF8') == '1':
    return
  if sys.getfilesystemencoding().lower().replace('-', '') == 'utf8':
    return
  os.environ['PYTHONUTF8'] = '1'
  # The original bytes of every argument: os.fsencode undoes the locale's decoding.
  os.execv(sys.executable, [os.fsencode(a) for a in [sys.executable, *sys.orig_argv[1:]]])


def own_help(module_name: str, doc: str, flag_names: list[str] | None = None) -> None:
  """--help lists the flags defined in `module_name` (or only `flag_names` of them) under the usage
  text `doc`. (absl shows only the flags of the main module, and a console script's main module is a
  generated wrapper.)"""
  sys.modules['__main__'].__doc__ = doc
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    if flag.name in _OLD_SPELLINGS:
      continue
    if flag_names is None or flag.name in flag_names:
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS['version'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override (an unknown preset, a misspelt field) as
  one line and exit 1, not a traceback; --help exits 0."""
  _check_config_file(argv)
  try:
    return flags.FLAGS(argv)
  except SystemExit:
    # absl exits with 1 after printing the help a user asked for.
    if any(a in ('--help', '-h', '-?', '--helpshort', '--helpfull') for a in argv[1:]):
      sys.exit(0)
    raise
  except flags.UnrecognizedFlagError as e:
    if not e.flagname.startswith('config.'):
      fail(str(e).splitlines()[0])
    fail(
      f'--{e.flagname}: a --config override needs --config=FILE:PRESET, which only training '
      f"takes (evaluation and conversion read the run's own config.json)"
    )
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # config_flags wraps the config file's own error in its traceback: its last line is the message.
    fail(lines[-1].split('Error: ', 1)[-1] if lines else type(e).__name__)
  except (AttributeError, KeyError) as e:  # config_flags: --config.FIELD names no field
    text = str(e).replace('\\n', '\n').replace("\\'", "'")
    field = re.search(r"'([\w.]+)'", text)
    hint = re.search(r'Did you mean "([\w.]+)"', text)
    name = field.group(1) if field else '?'
    # The error names the last part of the path only: the override that holds it gives the rest.
    path = next(
      (
        arg[len('--config.') :].split('=', 1)[0]
        for arg in argv
        if arg.startswith('--config.') and arg.split('=', 1)[0].rsplit('.', 1)[-1] == name
      ),
      name,
    )
    parent = path[: -len(name)]  # 'model.' for --config.model.chanel
    fail(
      f'--config.{path}: the config has no field {path}'
      + (f'; did you mean {parent}{hint.group(1)}?' if hint else '')
    )


def fail(message: str) -> None:
  """A user's mistake before a program's main runs: one `error:` line, exit 1."""
  print(f'error: {errors.printable(message)}', file=sys.stderr)
  sys.exit(1)


def one_line_errors(main):
  """A program's main that prints a user's mistake (an `errors.UserError`, a full disk, a folder it
  cannot write) as one `error:` line and returns 1, instead of a traceback. File names that are not
  UTF-8 print with \\x escapes."""

  @functools.wraps(main)
  def wrapped(argv):
    abandoned = len(deadlines.abandoned)
    try:
      return main(argv)
    except errors.UserError as e:
      message = str(e)
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a known fault)
      message = errors.storage_fault(e)
      if message is None and isinstance(e, OSError):
        message = errors.file_system_fault(e)
      if message is None:
        raise
    print(f'error: {errors.printable(message)}', file=sys.stderr, flush=True)
    if len(deadlines.abandoned) > abandoned:  # a thread blocked on storage would keep it alive
      sys.stdout.flush()
      os._exit(1)  # pylint: disable=protected-access
    return 1

  return wrapped


def _check_config_file(argv: list[str]) -> None:
  """--config=FILE.py:PRESET loaded once here, so that a missing file, a syntax error or an error of
  its get_config is one line naming the file (config_flags defers the first and lets the others
  escape as tracebacks, or reports a KeyError as a misspelt field)."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith('--config='):
      value = arg[len('--config=') :]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    path, colon, preset = value.partition(':')
    try:
      if not os.path.isfile(path):
        raise errors.ConfigError(
          f'--config={value}: {path} is not a file; give FILE.py:PRESET, e.g. '
          f'configs/vqvc_plus.py:demo (docs/training.md lists the presets)'
        )
      spec = importlib.util.spec_from_file_location('_skipvqvc_config_check', path)
      module = importlib.util.module_from_spec(spec)
      try:
        spec.loader.exec_module(module)
        module.get_config(*([preset] if colon else []))
      except errors.UserError as e:
        raise errors.ConfigError(f'--config={value}: {e}') from None
      except Exception as e:  # noqa: BLE001  (whatever the file's own code raises)
        raise errors.ConfigError(
          f'--config={value}: loading {path} failed: {type(e).__name__}: {e}'
        ) from None
    except errors.UserError as e:
      fail(str(e))
