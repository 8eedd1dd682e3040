"""Builds the bundled demo corpus: ten synthetic speakers reading the same sentences.

Needs Debian's flite, espeak-ng and sox (`apt-get install flite espeak-ng sox`); the output is committed
under data/demo_corpus/, so nobody else has to run this. Every speaker reads every sentence, so the corpus
is parallel: a conversion can be compared with the target speaker's own reading of the same sentence.

    python scripts/make_demo_corpus.py [--out data/demo_corpus]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

# Sentences written for this project (public domain). Each takes two to three seconds to say.
SENTENCES = [
  'The little boat drifted slowly toward the harbour lights.',
  'Please bring the blue folder back to my office by noon.',
  'A cold wind swept across the empty market square.',
  'She painted the kitchen door a bright shade of yellow.',
  'Every morning the baker opens his shop before sunrise.',
  'We counted seven geese flying over the frozen lake.',
  'The old clock in the hallway stopped at midnight.',
  'He forgot his umbrella on the crowded evening train.',
  'Fresh bread and warm soup were waiting on the table.',
  'The children laughed as the puppy chased its tail.',
  'Our train leaves the station at a quarter past nine.',
  'A quiet river winds between the green hills.',
  'The museum will close early on the first of June.',
  'Turn left at the bridge and follow the narrow road.',
  'My grandmother keeps her letters in a wooden box.',
  'The storm knocked down three trees in the park.',
  'Heavy rain is expected along the coast tonight.',
  'The band played one more song before the lights went out.',
  'Could you pass the salt and the pepper, please?',
  'Thick fog rolled in from the sea after dinner.',
  'The garden was full of roses and tall sunflowers.',
  'He read the whole book in a single afternoon.',
  'Nobody noticed the cat sleeping under the piano.',
  'The new library opens its doors next Monday.',
]

# speaker name -> command that reads TEXT into WAV (speaker names avoid '_', the feature-name separator)
VOICES = {
  'awb': ['flite', '-voice', 'awb', '-t', '{text}', '-o', '{wav}'],
  'rms': ['flite', '-voice', 'rms', '-t', '{text}', '-o', '{wav}'],
  'slt': ['flite', '-voice', 'slt', '-t', '{text}', '-o', '{wav}'],
  'kal': ['flite', '-voice', 'kal16', '-t', '{text}', '-o', '{wav}'],
  'esm1': ['espeak-ng', '-v', 'en-us+m1', '-p', '40', '-s', '150', '-w', '{wav}', '{text}'],
  'esm3': ['espeak-ng', '-v', 'en-gb+m3', '-p', '30', '-s', '140', '-w', '{wav}', '{text}'],
  'esm7': ['espeak-ng', '-v', 'en-us+m7', '-p', '55', '-s', '160', '-w', '{wav}', '{text}'],
  'esf2': ['espeak-ng', '-v', 'en-us+f2', '-p', '60', '-s', '150', '-w', '{wav}', '{text}'],
  'esf4': ['espeak-ng', '-v', 'en-gb+f4', '-p', '70', '-s', '145', '-w', '{wav}', '{text}'],
  'esf5': ['espeak-ng', '-v', 'en-us+f5', '-p', '50', '-s', '155', '-w', '{wav}', '{text}'],
}
SAMPLE_RATE = (
  22050  # Ogg Vorbis (quality 5) keeps the corpus near 6 MB; the features' rate, so no resampling
)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--out', default=os.path.join(os.path.dirname(__file__), '..', 'data', 'demo_corpus')
  )
  args = parser.parse_args()
  for tool in ('flite', 'espeak-ng', 'sox'):
    if shutil.which(tool) is None:
      sys.exit(f'error: {tool} not found; apt-get install flite espeak-ng sox')
  with tempfile.TemporaryDirectory() as tmp:
    for speaker, command in VOICES.items():
      folder = os.path.join(args.out, speaker)
      os.makedirs(folder, exist_ok=True)
      for i, text in enumerate(SENTENCES, 1):
        wav = os.path.join(tmp, 'tts.wav')
        subprocess.run(
          [a.format(text=text, wav=wav) for a in command], check=True, capture_output=True
        )
        out = os.path.join(folder, f'{speaker}_{i:03d}.ogg')
        # Mono, Vorbis quality 5; normalised to -1 dBFS so every voice has a similar level.
        subprocess.run(
          ['sox', wav, '-r', str(SAMPLE_RATE), '-c', '1', '-C', '5', out, 'norm', '-1'],
          check=True,
          capture_output=True,
        )
      print(f'{speaker}: {len(SENTENCES)} utterances')
  # Outside the corpus folder, where preprocessing would list it as a non-audio file.
  with open(os.path.join(args.out, '..', 'demo_sentences.txt'), 'w') as f:
    f.writelines(f'{i:03d} {text}\n' for i, text in enumerate(SENTENCES, 1))


if __name__ == '__main__':
  main()
