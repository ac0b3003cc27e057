"""A page in the browser: upload an image, name its classes, see the segmentation and groups.

  python -m groupvit_jax.app --checkpoint DIR [--port 7860] [--host 127.0.0.1]

`--checkpoint` is a groupvit_jax checkpoint, a released NVlabs `.pth` or a Hugging Face
directory. The model loads once, at start; requests go through it one at a time. The page and
its server use the standard library only (http.server): POST /segment takes the image file as
the body and `labels` and `threshold` in the query, and answers JSON, {"png": base64} or
{"error": message}. The picture is the one `python -m groupvit_jax.demo` writes.
"""

import argparse
import base64
import http.server
import io
import json
import re
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Sequence

import numpy as np
from PIL import Image

import groupvit_jax
from groupvit_jax import demo
from input_pipeline import image_transforms

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>GroupViT</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
label { display: inline-block; margin: 0 1em 0.5em 0; }
#status.error { color: #b00; font-weight: bold; }
#result { display: block; max-width: 100%; margin-top: 1em; }
</style></head>
<body>
<h2>GroupViT: zero-shot segmentation</h2>
<form id="form">
  <label>image <input type="file" name="image" accept="image/*"></label>
  <label>labels <input type="text" name="labels" size="50" placeholder="cat, dog, grass"></label>
  <label>background threshold <input type="text" name="threshold" size="5"
    placeholder="none"></label>
  <button type="submit">segment</button>
</form>
<p id="status">Choose an image, type comma-separated labels and press segment. A threshold
in [0, 1] labels pixels whose best class scores below it as background; empty, none.</p>
<img id="result" alt="">
<script>
let compiled = COMPILED;
const form = document.getElementById('form');
const status = document.getElementById('status');
const result = document.getElementById('result');
function show(text, isError) {
  status.textContent = text;
  status.className = isError ? 'error' : '';
}
form.onsubmit = async (event) => {
  event.preventDefault();
  const file = form.image.files[0];
  if (!file) { show('choose an image first', true); return; }
  show(compiled ? 'segmenting...' : 'compiling on the first request (this takes a while)...');
  result.removeAttribute('src');
  form.querySelector('button').disabled = true;
  const query = new URLSearchParams({labels: form.labels.value, threshold: form.threshold.value});
  try {
    const response = await fetch('/segment?' + query, {method: 'POST', body: file});
    const answer = await response.json();
    if (response.ok) {
      compiled = true;
      result.src = 'data:image/png;base64,' + answer.png;
      show('done in ' + answer.seconds.toFixed(2) + ' s');
    } else {
      show(answer.error, true);
    }
  } catch (error) {
    show('no answer from the server: ' + error, true);
  } finally {
    form.querySelector('button').disabled = false;
  }
};
</script>
</body></html>
"""


class BadRequest(Exception):
  """Input the user can fix: `message` goes to the page with HTTP `status`."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def parse_threshold(text: str) -> float | None:
  """'' -> None (no background); otherwise a number in [0, 1]."""
  if not text.strip():
    return None
  try:
    value = float(text)
  except ValueError:
    value = None
  if value is None or not 0 <= value <= 1:
    raise BadRequest(
      f'the background threshold must be a number from 0 to 1, or empty for no background; '
      f'got {text!r}'
    )
  return value


def read_upload(data: bytes, max_pixels: int) -> np.ndarray:
  """The uploaded image file as uint8 RGB [H, W, 3], decoded as `demo.load_image` decodes a
  file; BadRequest for a file that is not an image or has more than `max_pixels` pixels."""
  if not data:
    raise BadRequest('the upload is empty: choose an image file')
  try:
    return np.asarray(image_transforms.decode(data, max_pixels))
  except image_transforms.DamagedImage as error:
    if error.reason == 'image_too_large':
      size = str(error).removeprefix('image_too_large: ')  # 'WxH', or Pillow's own message
      raise BadRequest(
        f'the image is too large ({size}); the limit is {max_pixels:,} pixels (--max_pixels)'
      ) from None
    detail = re.sub(r' <_io\.BytesIO object at \w+>', '', str(error))  # Pillow's name for it
    raise BadRequest(f'not a readable image ({detail}); upload a JPEG, PNG, WebP, ...') from None


class Segmenter:
  """The model behind the page: uploads in, demo pictures out, one request at a time."""

  def __init__(self, model, max_pixels: int):
    self.model, self.max_pixels = model, max_pixels
    self.compiled = False  # whether a request has run (and so compiled) the model
    self._lock = threading.Lock()

  def picture(self, data: bytes, labels_text: str, threshold_text: str) -> np.ndarray:
    """`demo.render`'s picture of the image in `data` segmented into the labels."""
    if not labels_text.strip():
      raise BadRequest('type at least one label, e.g. "cat, dog, grass"')
    try:
      labels = demo.parse_labels(labels_text)
    except ValueError as error:
      raise BadRequest(str(error).removeprefix('--')) from None  # "--labels ...": the CLI's
    threshold = parse_threshold(threshold_text)
    image = read_upload(data, self.max_pixels)
    with self._lock:
      _, picture = demo.segment_and_render(self.model, image, labels, threshold)
      self.compiled = True
    return picture


class Handler(http.server.BaseHTTPRequestHandler):
  """GET / is the page; POST /segment segments the uploaded image."""

  def do_GET(self):
    if self.path != '/':
      self._send_json(404, {'error': f'no page {self.path}'})
      return
    body = PAGE.replace('COMPILED', json.dumps(self.server.segmenter.compiled)).encode()
    self._send(200, 'text/html; charset=utf-8', body)

  def do_POST(self):
    url = urllib.parse.urlsplit(self.path)
    if url.path != '/segment':
      self._send_json(404, {'error': f'no endpoint {url.path}'})
      return
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    start = time.perf_counter()
    try:
      data = self._read_body()
      picture = self.server.segmenter.picture(
        data, query.get('labels', [''])[0], query.get('threshold', [''])[0]
      )
      png = io.BytesIO()
      Image.fromarray(picture).save(png, 'PNG')
    except BadRequest as error:
      self.log_message('rejected: %s', error)
      self._send_json(error.status, {'error': str(error)})
      return
    except Exception as error:  # pylint: disable=broad-except  # logged here, one line there
      traceback.print_exc()
      summary = (str(error).splitlines() or [''])[0]
      self._send_json(500, {'error': f'internal error: {type(error).__name__}: {summary}'})
      return
    seconds = time.perf_counter() - start
    self.log_message('segmented in %.2f s', seconds)
    answer = {'png': base64.b64encode(png.getvalue()).decode('ascii'), 'seconds': seconds}
    self._send_json(200, answer)

  def _read_body(self) -> bytes:
    """The request's body; BadRequest (413), once it is read, if it is over the limit."""
    size = int(self.headers.get('Content-Length') or 0)
    limit = self.server.max_bytes
    if size <= limit:
      return self.rfile.read(size)
    remaining = size
    while remaining > 0:  # read, so that the browser gets the answer, not a reset connection
      chunk = self.rfile.read(min(remaining, 1 << 20))
      if not chunk:
        break
      remaining -= len(chunk)
    raise BadRequest(
      f'the file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB (--max_upload_mb)',
      status=413,
    )

  def _send_json(self, status: int, answer: dict) -> None:
    self._send(status, 'application/json', json.dumps(answer).encode())

  def _send(self, status: int, content_type: str, body: bytes) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
  """Serves the page; `segmenter` is set once the model has loaded."""

  def __init__(self, address: tuple[str, int], max_bytes: int):
    super().__init__(address, Handler)
    self.max_bytes = max_bytes
    self.segmenter: Segmenter | None = None


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.app', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--host', default='127.0.0.1', help='address to listen on')
  parser.add_argument('--port', type=int, default=7860, help='port to listen on (0: any free)')
  parser.add_argument(
    '--max_pixels', type=int, default=40_000_000, help='largest image accepted, in pixels'
  )
  parser.add_argument(
    '--max_upload_mb', type=float, default=50, help='largest upload accepted, in MB'
  )
  args = parser.parse_args(argv)
  try:
    server = Server((args.host, args.port), int(args.max_upload_mb * 1e6))
  except OSError as error:
    print(f'error: cannot listen on {args.host}:{args.port}: {error}', file=sys.stderr)
    return 1
  try:
    try:
      model = groupvit_jax.load(args.checkpoint)  # imports JAX: not for --help
    except (FileNotFoundError, ValueError) as error:
      print(f'error: {error}', file=sys.stderr)
      return 1
    server.segmenter = Segmenter(model, args.max_pixels)
    host, port = server.server_address[:2]
    print(f'serving on http://{host}:{port}', flush=True)
    server.serve_forever()
  except KeyboardInterrupt:
    print('stopped', flush=True)
  finally:
    server.server_close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
