"""The browser demo, `python -m groupvit_jax.app`, driven in headless Chromium.

The app runs as a subprocess on a free port with a tiny Hugging Face checkpoint; Playwright
drives Debian's Chromium (/usr/bin/chromium, which CI installs; else Playwright's own) through
the page: an upload must come back as exactly the picture `demo.render` draws in this process,
and bad input as a message on the page. An unexpected error, tested in this process with a
model that raises, must reach the page as one line.
"""

import base64
import io
import json
import os
import re
import signal
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

import groupvit_jax
from groupvit_jax import app, demo
from tests import cli

import hf_reference as ref

CHROMIUM = '/usr/bin/chromium'
# Without the background-networking flags Chromium's connections are refused on a closed network.
CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
]  # fmt: skip
MAX_PIXELS = 100_000
MAX_UPLOAD_MB = 1
LABELS, THRESHOLD = 'sky, grass, sand', '0.05'
TIMEOUT_MS = 300_000  # the first request compiles, on a busy 2-core CI machine


def blocks() -> np.ndarray:
  """A 120 x 176 picture of three colour bands."""
  image = np.zeros((120, 176, 3), np.uint8)
  image[:40], image[40:90], image[90:] = (60, 120, 230), (50, 170, 60), (230, 200, 90)
  return image


def png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(out, 'PNG')
  return out.getvalue()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
  directory = tmp_path_factory.mktemp('hf')
  ref.make_model(seed=0, **ref.TINY).save_pretrained(directory)
  return str(directory)


@pytest.fixture(scope='module')
def server(checkpoint, tmp_path_factory):
  """(the app's URL, its process, its log's path), once it says it is serving."""
  log = tmp_path_factory.mktemp('app') / 'app.log'
  process = cli.start(
    'groupvit_jax.app', '--checkpoint', checkpoint, '--port', '0', '--max_pixels', MAX_PIXELS,
    '--max_upload_mb', MAX_UPLOAD_MB, log_path=log,
  )  # fmt: skip
  try:
    cli.wait_for(lambda: 'serving on' in log.read_text(), process, timeout=300)
    yield re.search(r'serving on (http://\S+)', log.read_text()).group(1), process, log
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()


@pytest.fixture(scope='module')
def page():
  with sync_playwright() as playwright:
    if os.path.exists(CHROMIUM):
      browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    elif os.path.exists(playwright.chromium.executable_path):  # `playwright install chromium`
      browser = playwright.chromium.launch(args=CHROMIUM_ARGS)
    else:
      pytest.fail(
        f"no Chromium: install Debian's (apt-get install chromium, {CHROMIUM}) or Playwright's "
        '(python -m playwright install chromium)'
      )
    yield browser.new_page(viewport={'width': 900, 'height': 400})
    browser.close()


def submit(page, url, upload: tuple[str, bytes], labels: str, threshold: str) -> str:
  """Fills in the form, submits it and waits for the answer; the status line while waiting."""
  page.goto(url)
  name, data = upload
  page.set_input_files('input[name=image]', {'name': name, 'mimeType': 'image/png', 'buffer': data})
  page.fill('input[name=labels]', labels)
  page.fill('input[name=threshold]', threshold)
  page.click('button[type=submit]')
  waiting = page.inner_text('#status')
  page.wait_for_function(
    "document.getElementById('result').src.startsWith('data:') || "
    "document.getElementById('status').className === 'error'",
    timeout=TIMEOUT_MS,
  )
  return waiting


def result_picture(page) -> np.ndarray:
  src = page.get_attribute('#result', 'src')
  assert src.startswith('data:image/png;base64,'), page.inner_text('#status')
  data = base64.b64decode(src.removeprefix('data:image/png;base64,'))
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))


def test_the_page_shows_the_demo_picture_and_the_second_request_is_faster(server, page, checkpoint):
  url, _, log = server
  image = blocks()
  waiting, pictures, seconds = [], [], []
  for _ in range(2):
    waiting.append(submit(page, url, ('blocks.png', png(image)), LABELS, THRESHOLD))
    status = page.inner_text('#status')
    assert page.get_attribute('#status', 'class') != 'error', status
    seconds.append(float(re.fullmatch(r'done in ([\d.]+) s', status).group(1)))
    pictures.append(result_picture(page))
  assert waiting == ['compiling on the first request (this takes a while)...', 'segmenting...']
  print(f'first request (compiles) {seconds[0]:.2f} s, second {seconds[1]:.2f} s')
  assert seconds[1] < seconds[0]
  assert log.read_text().count('segmented in') == 2  # each request's time is logged

  model = groupvit_jax.load(checkpoint)
  labels, threshold = demo.parse_labels(LABELS), float(THRESHOLD)
  label_map = model.segment(image, labels, threshold)
  expected = demo.render(image, label_map, ['background'] + labels, model.group_maps(image))
  for picture in pictures:
    np.testing.assert_array_equal(picture, expected)  # pixel for pixel


@pytest.mark.parametrize(
  'upload, labels, threshold, message',
  [
    ('image', '', '', 'type at least one label'),
    ('image', 'cat, , dog', '', "labels 'cat, , dog' has an empty name"),
    ('image', 'cat, cat', '', "labels 'cat, cat' names a class twice"),
    ('image', 'cat', 'high', "threshold must be a number from 0 to 1, or empty for no back"),
    ('image', 'cat', '1.5', 'threshold must be a number from 0 to 1'),
    ('text', 'cat', '', 'not a readable image (corrupt_image: UnidentifiedImageError'),
    ('huge', 'cat', '', f'image is too large (400x300); the limit is {MAX_PIXELS:,} pixels'),
    ('bytes', 'cat', '', f'the file is 1.5 MB; the limit is {MAX_UPLOAD_MB} MB'),
  ],
)  # fmt: skip
def test_bad_input_shows_a_message_on_the_page(page, server, upload, labels, threshold, message):
  url = server[0]
  uploads = {
    'image': ('blocks.png', png(blocks())),
    'text': ('notes.png', b'just some text, renamed .png\n'),
    'huge': ('huge.png', png(np.zeros((300, 400, 3), np.uint8))),  # 120,000 pixels
    'bytes': ('big.png', np.random.default_rng(0).bytes(1_500_000)),
  }
  submit(page, url, uploads[upload], labels, threshold)
  assert page.get_attribute('#status', 'class') == 'error'
  assert message in page.inner_text('#status')
  assert not page.get_attribute('#result', 'src')
  assert 'Traceback' not in page.content()


def test_ctrl_c_stops_the_server_cleanly(server):
  _, process, log = server
  process.send_signal(signal.SIGINT)
  assert process.wait(timeout=60) == 0
  text = log.read_text()
  assert text.rstrip().endswith('stopped') and 'Traceback' not in text, text[-3000:]


def test_an_unexpected_error_is_one_line_on_the_page_and_its_traceback_in_the_log(capsys):
  class Broken:
    def segment(self, image, labels, threshold):
      raise RuntimeError('out of memory\nmore detail')

  server = app.Server(('127.0.0.1', 0), max_bytes=1_000_000)
  server.segmenter = app.Segmenter(Broken(), max_pixels=MAX_PIXELS)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  host, port = server.server_address[:2]
  request = urllib.request.Request(
    f'http://{host}:{port}/segment?labels=cat&threshold=', data=png(blocks()), method='POST'
  )
  try:
    with pytest.raises(urllib.error.HTTPError) as answer:
      urllib.request.urlopen(request, timeout=60)
  finally:
    server.shutdown()
    server.server_close()
  assert answer.value.code == 500
  assert json.load(answer.value) == {'error': 'internal error: RuntimeError: out of memory'}
  assert 'Traceback' in capsys.readouterr().err
