"""The web page (skipvqvc-demo) in a real headless browser: Debian's chromium, driven through its
chromedriver by selenium, against a real server process on loopback. Upload two files, convert, receive
audio of the source's length; a corrupt upload and an over-long one are messages on the page, and the
server converts again after them."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.data import audio
from tests.conftest import REPO

DEMO = REPO / 'data' / 'demo_corpus'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def ported(parity_dir, tmp_path_factory):
  """What a user with only the original's checkpoint has: its vqvc+ weights (the golden ones) in its
  checkpoint/vqvc+_n64_ch64_train_normal/gen file, ported into a model directory."""
  from skipvqvc_jax.inference import model_dirs
  from tests.store.test_porting import _write_original

  root = tmp_path_factory.mktemp('original')
  with np.load(parity_dir / 'vqvcplus_n64_ch64.npz') as g:
    state_dict = {k.removeprefix('param/'): g[k] for k in g.files if k.startswith('param/')}
  pt = _write_original(root / 'checkpoint' / 'vqvc+_n64_ch64_train_normal' / 'gen', state_dict)
  model_dirs.port_original(str(pt), str(root / 'model'))
  return root / 'model'


@pytest.fixture(scope='module')
def server(ported, tmp_path_factory):
  """skipvqvc-demo on the ported model directory, as a user starts it; (its URL, the process)."""
  pytest.importorskip('gradio', reason='the web page needs the [demo] extra')
  port = _free_port()
  with open(tmp_path_factory.mktemp('demo') / 'server.log', 'w') as log:
    process = _start_server(ported, port, log)
  yield f'http://127.0.0.1:{port}/', process
  process.terminate()
  process.wait(timeout=30)


@pytest.fixture(scope='module')
def browser():
  if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
    pytest.skip('needs Debian chromium and chromium-driver (apt install chromium chromium-driver)')
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  driver.set_window_size(1400, 1800)
  yield driver
  driver.quit()


def _convert_on_the_page(browser, url, source, reference):
  """Opens the page, puts `source` and `reference` in its two audio inputs, clicks Convert; returns
  (the converted audio's URL or None, the text of any error shown)."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  browser.get(url)
  wait = WebDriverWait(browser, 120)
  # The page renders its components one by one: wait for the source's, the reference's and the
  # further references' uploads.
  uploads = lambda d: d.find_elements(By.CSS_SELECTOR, 'input[type=file]')
  inputs = wait.until(lambda d: len(uploads(d)) >= 3 and uploads(d))
  inputs[0].send_keys(str(source))
  inputs[1].send_keys(str(reference))
  # Both uploads shown in their players before converting.
  wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, 'audio')) >= 2)
  browser.find_element(By.ID, 'convert').click()

  def outcome(d):
    errors = [e.text for e in d.find_elements(By.CSS_SELECTOR, '#status') if 'Error' in e.text]
    if errors:
      return None, ' '.join(errors)
    for element in d.find_elements(By.CSS_SELECTOR, '#result audio, #result a[download]'):
      src = element.get_attribute('src') or element.get_attribute('href')
      if src and 'converted-' in src:
        return src, ''
    return False

  return wait.until(outcome)


def test_two_uploads_convert_to_audio_of_the_source_length(server, browser):
  url, _ = server
  source, reference = DEMO / 'awb' / 'awb_005.ogg', DEMO / 'slt' / 'slt_001.ogg'
  src, error = _convert_on_the_page(browser, url, source, reference)
  assert src and not error, error
  with urllib.request.urlopen(src, timeout=30) as response:
    data = response.read()
  wave, rate = sf.read(__import__('io').BytesIO(data))
  frames = audio.file_to_log_mel(str(source))[0].shape[1]
  assert rate == 22050 and abs(len(wave) - frames * 256) <= 256
  assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3


def test_a_corrupt_and_a_long_upload_are_messages_and_the_server_goes_on(server, browser, tmp_path):
  from selenium.webdriver.common.by import By

  url, process = server
  corrupt = tmp_path / 'corrupt.wav'
  corrupt.write_bytes(b'RIFF' + os.urandom(4000))
  src, error = _convert_on_the_page(browser, url, corrupt, DEMO / 'slt' / 'slt_001.ogg')
  assert src is None and 'the source' in error and 'corrupt.wav' in error, error
  time.sleep(12)  # longer than a toast lasts: the message is still on the page, the boxes quiet
  assert browser.find_element(By.ID, 'status').text == error
  assert 'Error' not in browser.find_element(By.ID, 'result').text
  long = tmp_path / 'long.wav'  # over the server's --max_seconds=8
  sf.write(long, np.tile(audio.load(str(DEMO / 'awb' / 'awb_005.ogg')), 4), 22050)
  src, error = _convert_on_the_page(browser, url, DEMO / 'awb' / 'awb_005.ogg', long)
  assert src is None and 'long.wav' in error and 'up to 8 s' in error, error
  assert process.poll() is None  # alive
  src, error = _convert_on_the_page(
    browser, url, DEMO / 'awb' / 'awb_005.ogg', DEMO / 'slt' / 'slt_001.ogg'
  )
  assert src and not error, error


def _start_server(model, port: int, log, *flags, host: str = '127.0.0.1') -> subprocess.Popen:
  process = subprocess.Popen(
    [
      sys.executable,
      '-c',
      'from skipvqvc_jax.apps import demo; demo.run()',
      f'--model={model}',
      f'--port={port}',
      '--vocoder=griffin_lim',
      '--max_seconds=8',
      *flags,
    ],
    cwd=REPO,
    stdout=log,
    stderr=subprocess.STDOUT,
    env=dict(os.environ, GRADIO_ANALYTICS_ENABLED='False'),
  )
  deadline = time.time() + 300
  while process.poll() is None and time.time() < deadline:
    try:
      with urllib.request.urlopen(f'http://{host}:{port}/', timeout=5):
        return process
    except OSError:
      time.sleep(1)
  process.kill()
  log.flush()
  pytest.fail(f'the demo server did not start: {pathlib.Path(log.name).read_text()[-3000:]}')


def test_server_name_chooses_the_address_it_serves_on(ported, tmp_path):
  """--server_name=127.0.0.2 (another loopback address: tests bind loopback only) serves there and not
  on 127.0.0.1, and the first line says where."""
  port = _free_port()
  log_path = tmp_path / 'server.log'
  with open(log_path, 'w') as log:
    process = _start_server(ported, port, log, '--server_name=127.0.0.2', host='127.0.0.2')
  try:
    assert f'at http://127.0.0.2:{port} (Ctrl-C stops)' in log_path.read_text()
    with pytest.raises(OSError):
      urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=5)
  finally:
    process.terminate()
    process.wait(timeout=60)


def test_uploads_are_capped_results_bounded_and_both_removed_at_exit(ported, browser, tmp_path):
  """An upload over what --max_seconds of audio can weigh is refused by the server (a 2 GB one was
  taken); the page keeps the last --keep_results conversions (each added a wav and a png for ever);
  SIGTERM removes the uploads and the results (they were kept after shutdown)."""
  port = _free_port()
  log_path = tmp_path / 'server.log'
  with open(log_path, 'w') as log:
    process = _start_server(ported, port, log, '--keep_results=2')
  try:
    serving = next(line for line in log_path.read_text().splitlines() if 'serving' in line)
    uploads, results = serving.split(' results in ')[1].split(', removed')[0].split(' and ')
    url = f'http://127.0.0.1:{port}/'
    too_big = int(serving.split('uploads of up to ')[1].split()[0]) + 1
    assert too_big == 8 * 48_000 * 2 * 4 + (1 << 20) + 1  # 8 s of 48 kHz stereo float, and a MiB
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.wav"\r\n\r\n'
    body += bytes(too_big) + b'\r\n--x--\r\n'
    request = urllib.request.Request(
      url + 'gradio_api/upload',
      data=body,
      headers={'Content-Type': 'multipart/form-data; boundary=x'},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
      urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert sum(f.stat().st_size for f in pathlib.Path(uploads).rglob('*') if f.is_file()) < too_big
    for _ in range(3):
      src, error = _convert_on_the_page(
        browser, url, DEMO / 'awb' / 'awb_005.ogg', DEMO / 'slt' / 'slt_001.ogg'
      )
      assert src and not error, error
    kept = sorted(os.listdir(results))
    assert len(kept) == 4 and sum(f.endswith('.wav') for f in kept) == 2, kept
    assert os.path.isdir(uploads)
  finally:
    process.terminate()
    process.wait(timeout=60)
  assert not os.path.exists(uploads) and not os.path.exists(results)
