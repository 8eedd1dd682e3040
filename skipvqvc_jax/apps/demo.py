"""A web page that converts a voice (skipvqvc-demo): Gradio, served on this machine only unless told.

    skipvqvc-demo --model=models/vqvc+                   # then open http://127.0.0.1:7860
    skipvqvc-demo --model=runs/RUN --vocoder=griffin_lim,melgan --port=8080
    skipvqvc-demo --model=models/vqvc+ --server_name=0.0.0.0   # every interface: no login, mind who reaches it
    skipvqvc-demo --model=models/vqvc+ --share            # also a public gradio.live link (needs internet)

Upload or record a source (the words) and one or more references (the voice), pick the vocoder, and
get the converted audio with the mels of the source, the first reference and the result. A file that
cannot be used (corrupt, silent, longer than --max_seconds) is an error on the page; the server goes on.
Gradio because it is what voice-conversion demos use: upload and microphone widgets, audio players and
a queue come with it, in one Python file, and it needs the `.[demo]` extra only.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

from absl import app, flags, logging

from skipvqvc_jax.apps.usage import old_spelling, one_line_errors, run_program
from skipvqvc_jax.core import errors
from skipvqvc_jax.inference import page_conversions


def define_flags() -> None:
  """Defines this program's flags: called by run(), not at import, so that importing two programs
  in one process (a test, a notebook) does not define a flag twice."""
  flags.DEFINE_string('model', None, 'A model directory (skipvqvc-port) or a training workdir.')
  flags.DEFINE_list(
    'vocoder',
    ['griffin_lim', 'melgan'],
    'The vocoders offered on the page (the first is the default): griffin_lim, melgan (the '
    "original's, fetched on first use) or a vocoder directory.",
  )
  flags.DEFINE_integer('port', 7860, 'The port to serve on.')
  flags.DEFINE_string(
    'server_name',
    '127.0.0.1',
    'The address to serve on: 127.0.0.1 (this machine only); 0.0.0.0 for every network interface '
    '(the page has no login: anyone who reaches this machine can use it). From a laptop, an SSH '
    'tunnel keeps it private: ssh -L 7860:127.0.0.1:7860 USER@HOST.',
  )
  flags.DEFINE_bool(
    'share',
    False,
    "Also a public https link through Gradio's share servers (needs internet; anyone with the link "
    'can use the page while it runs). Gradio prints the link.',
  )
  flags.DEFINE_float(
    'max_seconds', 120.0, 'Longer uploads are refused on the page (use skipvqvc-convert).'
  )
  flags.DEFINE_integer(
    'keep_results', 20, 'Conversions kept for the page to play (older are removed).'
  )
  old_spelling('vocoders', 'vocoder')


FLAGS = flags.FLAGS

SOURCE_HELP = 'Source: the words and their timing'
REFERENCE_HELP = 'Target voice: a reference recording'


def build(demo: page_conversions.PageConversions):
  """The Gradio page of `demo`."""
  import gradio as gr  # pylint: disable=import-outside-toplevel  (the [demo] extra)

  def convert_clicked(source, reference, more, vocoder, f0_shift=0.0):
    """(audio, mels, message): a message that stays on the page until the next click (a raised
    gr.Error is a toast that fades, and leaves the result boxes saying a bare "Error")."""
    try:
      return *demo.run(source, reference, more, vocoder, f0_shift), ''
    except errors.UserError as e:
      message = str(e)
    except Exception as e:  # pylint: disable=broad-except  (any fault: a message, never a dead page)
      logging.exception('conversion failed')
      message = f'conversion failed ({type(e).__name__}: {e})'
    return None, None, f'**Error:** {message}'

  # Gradio's copies of uploads and results older than 10 minutes are deleted every minute.
  with gr.Blocks(title='skipvqvc_jax: one-shot voice conversion', delete_cache=(60, 600)) as page:
    voice = (
      'takes the one voice this model was trained on (any-to-one: a reference is not needed, '
      'and not used)'
      if demo.converter.model.speaker_free
      else 'takes the voice of the reference(s)'
    )
    gr.Markdown(
      f'## One-shot voice conversion\nModel: `{demo.model}`. The source keeps its words and '
      f'timing and {voice}.'
    )
    with gr.Row():
      source = gr.Audio(sources=['upload', 'microphone'], type='filepath', label=SOURCE_HELP)
      reference = gr.Audio(sources=['upload', 'microphone'], type='filepath', label=REFERENCE_HELP)
    more = gr.File(file_count='multiple', label='More references of the same voice (optional)')
    vocoder = gr.Radio(demo.vocoders, value=demo.vocoders[0], label='Vocoder')
    button = gr.Button('Convert', variant='primary', elem_id='convert')
    status = gr.Markdown(elem_id='status')
    result = gr.Audio(type='filepath', label='Converted', interactive=False, elem_id='result')
    mels = gr.Image(type='filepath', label='Mels: source, reference, converted', elem_id='mels')
    inputs = [source, reference, more, vocoder]
    if demo.converter.model.takes_f0:  # the one control an F0 model has (docs/conversion.md)
      inputs.append(gr.Slider(-12, 12, value=0, step=1, label='Melody shift (semitones)'))
    button.click(convert_clicked, inputs, [result, mels, status])
  return page


@one_line_errors
def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.model:
    raise errors.ConversionError('give --model: a model directory (skipvqvc-port) or a workdir')
  # Gradio keeps uploads and its copies of results in GRADIO_TEMP_DIR: one folder of this server's,
  # removed when it stops (a 2 GB upload was kept in /tmp/gradio after shutdown).
  # (set before gradio is imported: it reads the variable then).
  temp = os.environ['GRADIO_TEMP_DIR'] = tempfile.mkdtemp(prefix='skipvqvc-demo-uploads-')
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop as Ctrl-C does: cleaned up
  demo = None
  try:
    try:
      import gradio  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise errors.ConfigError('the web page needs Gradio: pip install -e ".[demo]"') from None
    demo = page_conversions.PageConversions(
      FLAGS.model, FLAGS.vocoder, FLAGS.max_seconds, FLAGS.keep_results
    )
    page = build(demo)
    print(
      f'serving {FLAGS.model} at http://{FLAGS.server_name}:{FLAGS.port} (Ctrl-C stops); uploads of up to '
      f'{page_conversions.max_upload_bytes(FLAGS.max_seconds)} bytes; uploads and results in {temp} and '
      f'{demo.out_dir}, removed when it stops',
      flush=True,
    )
    page.queue().launch(
      server_name=FLAGS.server_name,
      server_port=FLAGS.port,
      share=FLAGS.share,
      show_error=True,
      quiet=not FLAGS.share,  # Gradio's own lines, the share link among them
      max_file_size=page_conversions.max_upload_bytes(FLAGS.max_seconds),
    )
  finally:
    for folder in (temp, demo.out_dir if demo else None):
      if folder:
        shutil.rmtree(folder, ignore_errors=True)
  return 0


def run():
  """Console script `skipvqvc-demo`."""
  run_program(__name__, __doc__, main, define_flags)
