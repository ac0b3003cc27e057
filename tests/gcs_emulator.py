"""A local Cloud Storage emulator for the tests: the session fixture `gcs`, and its server.

`gcs` starts `python -m tests.gcs_emulator BUCKET` (the gcp-storage-emulator package, in memory,
on 127.0.0.1 and a free port, with BUCKET made) in its own process and points every client at it
through os.environ, which the processes tests start inherit: gcsfs and google-cloud-storage
(STORAGE_EMULATOR_HOST), tensorstore (TENSORSTORE_GCS_HTTP_URL, a dummy token) and etils.epath
(EPATH_USE_TF=false, so orbax reaches gs:// through fsspec). The server exits when the test
session ends, or dies (its stdin, a pipe from the session, closes).

The fixture's object (`Emulator`):
  bucket, url(path) -> 'gs://BUCKET/path', wipe() (empties the bucket, keeps it, and drops the
  listings gcsfs cached in this process); fail(substring, status=503, times=1): the next
  `times` media downloads (GETs of object data, ranged or not) of objects whose name contains
  `substring` answer `status` (times=None: all of them, until clear_failures(); failures left
  are cleared after each test); request_log(substring='') -> [{'name', 'range', 'status'}], one
  per media download since clear_log(), in order; 'range' is (start, stop) with stop exclusive
  (None: to the end), or None for the whole object.

Fixes to the stock emulator that tensorstore (so orbax) needs: media downloads carry
x-goog-generation and x-goog-metageneration and honour ifGenerationMatch / ifGenerationNotMatch,
and listings honour startOffset / endOffset. It also accepts many connections at once, though
it handles one request at a time.
"""

import functools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from http import HTTPStatus

import pytest

# gcsfs reads this when it is imported: without it, it probes each bucket over gRPC, which the
# emulator does not serve (time-outs). Set when conftest.py loads this plugin, before any test
# module imports gcsfs; it only turns off an experimental gcsfs feature.
os.environ['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'] = 'false'

BUCKET = 'groupvit-test'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RANGE = re.compile(r'bytes=(\d+)-(\d*)')

# The server's side: fixes, fault injection and the request log, in the emulator's process.

_failures: list[dict] = []  # {'substring', 'status', 'times' (None: always)}
_log: list[dict] = []


def _error(response, status: int, message: str) -> None:
  response.status = HTTPStatus(status)
  response.json({'error': {'code': status, 'message': message}})


def _injected_failure(name: str) -> int | None:
  for rule in _failures:
    if rule['substring'] in name and rule['times'] != 0:
      if rule['times'] is not None:
        rule['times'] -= 1
      return rule['status']
  return None


def _download(download, request, response, storage):
  """objects.download with generation headers and preconditions, failures and the log."""
  name = request.params['object_id']
  entry = {'name': name, 'range': request.get_header('range'), 'status': 200}
  _log.append(entry)
  status = _injected_failure(name)
  if status is not None:
    entry['status'] = status
    _error(response, status, f'injected failure of {name}')
    return
  obj = storage.objects.get(request.params['bucket_name'], {}).get(name)
  if obj is not None:
    query = {k: v[0] for k, v in request.query.items()}
    if query.get('ifGenerationNotMatch') == obj['generation']:
      entry['status'] = 304
      response.status = HTTPStatus.NOT_MODIFIED
      return
    if query.get('ifGenerationMatch', obj['generation']) != obj['generation']:
      entry['status'] = 412
      _error(response, 412, 'precondition failed')
      return
  download(request, response, storage)
  entry['status'] = response.status.value
  if obj is not None:
    response['x-goog-generation'] = obj['generation']
    response['x-goog-metageneration'] = obj['metageneration']


def _ls(ls, request, response, storage):
  """objects.ls honouring startOffset (inclusive) and endOffset (exclusive)."""
  ls(request, response, storage)
  start = request.query.get('startOffset', [''])[0]
  end = request.query.get('endOffset', [''])[0]
  if response.status != HTTPStatus.OK or not (start or end):
    return
  listing = json.loads(response._content)  # pylint: disable=protected-access

  def keep(name):
    return name >= start and (not end or name < end)

  listing['items'] = [o for o in listing['items'] if keep(o['name'])]
  listing['prefixes'] = [p for p in listing['prefixes'] if keep(p)]
  response.json(listing)


def _set_failures(request, response, storage):
  if request.method == 'DELETE':
    _failures.clear()
  else:
    _failures.insert(0, dict(request.data))
  response.json({})


def _request_log(request, response, storage):
  if request.method == 'DELETE':
    _log.clear()
  response.json(_log)


def _serve(bucket: str) -> None:
  """Serves the emulator on 127.0.0.1; prints the port, then serves until stdin closes."""
  import http.server  # pylint: disable=g-import-not-at-top

  from gcp_storage_emulator.handlers import buckets, objects  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.storage import Storage  # pylint: disable=g-import-not-at-top

  # The server module binds the handlers when it is imported: patch them first.
  objects.download = functools.partial(_download, objects.download)
  objects.ls = functools.partial(_ls, objects.ls)
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top

  server.HANDLERS = (
    (r'^/_test/failures$', {'POST': _set_failures, 'DELETE': _set_failures}),
    (r'^/_test/log$', {'GET': _request_log, 'DELETE': _request_log}),
  ) + server.HANDLERS
  lock = threading.Lock()
  handle = server.Router.handle

  def handle_serially(router, method):
    with lock:
      handle(router, method)

  server.Router.handle = handle_serially

  class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256

  storage = Storage(use_memory_fs=True)
  buckets.create_bucket(bucket, storage)
  httpd = Server(('127.0.0.1', 0), functools.partial(server.RequestHandler, storage))
  print(httpd.server_port, flush=True)

  def stop_when_stdin_closes():
    sys.stdin.read()
    httpd.shutdown()

  threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
  httpd.serve_forever()


# The tests' side.


def _invalidate_listings() -> None:
  """Drops the listings every gcsfs file system of this process has cached."""
  gcsfs = sys.modules.get('gcsfs')
  if gcsfs is not None:
    for fs in list(gcsfs.GCSFileSystem._cache.values()):  # pylint: disable=protected-access
      fs.invalidate_cache()


class Emulator:
  """The running emulator, as the `gcs` fixture gives it (see the module docstring)."""

  def __init__(self, endpoint: str, bucket: str):
    self.endpoint = endpoint
    self.bucket = bucket
    self.failing = False

  def url(self, path: str = '') -> str:
    return f'gs://{self.bucket}/{path.lstrip("/")}'

  def _call(self, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
      self.endpoint + path, data, {'Content-Type': 'application/json'}, method=method
    )
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.read()

  def wipe(self) -> None:
    self._call('GET', '/wipe?keep-buckets=1')
    _invalidate_listings()

  def fail(self, substring: str, status: int = 503, times: int | None = 1) -> None:
    self._call(
      'POST', '/_test/failures', {'substring': substring, 'status': status, 'times': times}
    )
    self.failing = True

  def clear_failures(self) -> None:
    self._call('DELETE', '/_test/failures')
    self.failing = False

  def request_log(self, substring: str = '') -> list[dict]:
    out = []
    for entry in json.loads(self._call('GET', '/_test/log')):
      if substring in entry['name']:
        match = _RANGE.fullmatch(entry['range'] or '')
        if match:
          start, end = match.groups()
          entry['range'] = (int(start), int(end) + 1 if end else None)
        out.append(entry)
    return out

  def clear_log(self) -> None:
    self._call('DELETE', '/_test/log')


_running: list[Emulator] = []


@pytest.fixture(scope='session')
def gcs(tmp_path_factory):
  """The emulator, with os.environ pointing clients at it (see the module docstring)."""
  log = open(tmp_path_factory.mktemp('gcs_emulator') / 'emulator.log', 'w')
  process = subprocess.Popen(
    [sys.executable, '-m', 'tests.gcs_emulator', BUCKET],
    cwd=REPO_ROOT,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=log,
    text=True,
  )
  port = process.stdout.readline().strip()
  if not port:
    process.wait()
    raise RuntimeError(f'the GCS emulator did not start; see {log.name}')
  endpoint = f'http://127.0.0.1:{port}'
  settings = {
    'STORAGE_EMULATOR_HOST': endpoint,
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'TENSORSTORE_GCS_HTTP_URL': endpoint,
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'dummy',
    'EPATH_USE_TF': 'false',
  }
  saved = {key: os.environ.get(key) for key in settings}
  os.environ.update(settings)
  emulator = Emulator(endpoint, BUCKET)
  _running.append(emulator)
  try:
    yield emulator
  finally:
    _running.remove(emulator)
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    process.stdin.close()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    process.stdout.close()
    log.close()


@pytest.fixture(autouse=True)
def _gcs_failures_cleared():
  """Failures a test injected and did not use up end with it."""
  yield
  for emulator in _running:
    if emulator.failing:
      emulator.clear_failures()


if __name__ == '__main__':
  logging.basicConfig(level=logging.ERROR)
  _serve(sys.argv[1])
