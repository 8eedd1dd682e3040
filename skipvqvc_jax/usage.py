"""What the programs print for --help (their own usage text and flags) and for a bad flag (one line)."""

import re
import sys

from absl import flags


def own_help(module_name: str, doc: str) -> None:
  """--help lists the flags defined in `module_name` under the usage text `doc`. (absl shows only the
  flags of the main module, and a console script's main module is a generated wrapper.)"""
  sys.modules['__main__'].__doc__ = doc
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override (an unknown preset, a misspelt field) as
  one line and exit 1, not a traceback; --help exits 0."""
  try:
    return flags.FLAGS(argv)
  except SystemExit:
    # absl exits with 1 after printing the help a user asked for.
    if any(a in ('--help', '-h', '-?', '--helpshort', '--helpfull') for a in argv[1:]):
      sys.exit(0)
    raise
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # config_flags wraps the config file's own error in its traceback: its last line is the message.
    message = lines[-1].split('Error: ', 1)[-1] if lines else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    sys.exit(1)
  except (AttributeError, KeyError) as e:  # config_flags: --config.FIELD names no field
    text = str(e).replace('\\n', '\n').replace("\\'", "'")
    field = re.search(r"'([\w.]+)'", text)
    hint = re.search(r'Did you mean "([\w.]+)"', text)
    name = field.group(1) if field else '?'
    print(
      f'error: --config.{name}: the config has no field {name}'
      + (f'; did you mean {hint.group(1)}?' if hint else ''),
      file=sys.stderr,
    )
    sys.exit(1)
