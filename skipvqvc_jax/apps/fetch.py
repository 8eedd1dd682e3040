"""Fetch published weights into the user's cache (skipvqvc-fetch).

    skipvqvc-fetch melgan                      # the original's pretrained MelGAN, then --vocoder=melgan
    skipvqvc-fetch melgan --file=multi_speaker.pt   # a copy downloaded by hand (checked the same way)

Each file is checked against its git blob id in its repository and ported once; later runs reuse it.
"""

from absl import app, flags

from skipvqvc_jax.apps.usage import one_line_errors, run_program
from skipvqvc_jax.store import published


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  flags.DEFINE_string('file', None, 'A copy of the file already on this machine (no download).')


FLAGS = flags.FLAGS


@one_line_errors
def main(argv) -> int:
  names = argv[1:]
  if len(names) != 1:
    raise app.UsageError(
      f'usage: skipvqvc-fetch NAME [--file=PATH]; NAME: {", ".join(published.PUBLISHED)}'
    )
  print(published.fetch(names[0], FLAGS.file))
  return 0


def run():
  """Console script `skipvqvc-fetch`."""
  run_program(__name__, __doc__, main, define_flags)
