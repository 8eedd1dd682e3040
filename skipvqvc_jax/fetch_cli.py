"""Fetch published weights into the user's cache (skipvqvc-fetch).

    skipvqvc-fetch melgan                      # the original's pretrained MelGAN, then --vocoder=melgan
    skipvqvc-fetch melgan --file=multi_speaker.pt   # a copy downloaded by hand (checked the same way)

Each file is checked against its git blob id in its repository and ported once; later runs reuse it.
"""

import sys

from absl import app, flags

from skipvqvc_jax import errors, fetch
from skipvqvc_jax.usage import own_help, parse_flags

flags.DEFINE_string('file', None, 'A copy of the file already on this machine (no download).')
FLAGS = flags.FLAGS


def main(argv) -> int:
  names = argv[1:]
  if len(names) != 1:
    raise app.UsageError(
      f'usage: skipvqvc-fetch NAME [--file=PATH]; NAME: {", ".join(fetch.PUBLISHED)}'
    )
  try:
    directory = fetch.fetch(names[0], FLAGS.file)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(directory)
  return 0


def run():
  """Console script `skipvqvc-fetch`."""
  own_help(__name__, __doc__)
  app.run(main, flags_parser=parse_flags)
