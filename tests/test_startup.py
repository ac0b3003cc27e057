"""Commands start quietly and at once: `--help` loads none of the heavy libraries (JAX,
TensorFlow, PyTorch, orbax, grain), which load where they are used, and prints nothing else."""

import pytest

from tests import cli

HEAVY = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow', 'torch', 'grain', 'clu')
COMMANDS = (
  'groupvit_jax.main',
  'groupvit_jax.evaluate',
  'groupvit_jax.demo',
  'groupvit_jax.app',
  'groupvit_jax.convert',
  'groupvit_jax.evaluators.coco_object',
  'input_pipeline.inspect',
)
# Runs the command's --help in this interpreter, then names the heavy libraries it imported.
_PROBE = """
import runpy, sys
module = sys.argv[1]
sys.argv = [module, '--help']
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
except SystemExit:
  pass
heavy = sorted({name.split('.')[0] for name in sys.modules} & set(sys.argv[2:]))
print('loaded:', ','.join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize('command', COMMANDS)
def test_help_loads_no_heavy_library_and_prints_only_help(command):
  result = cli.run_python(_PROBE, command, *HEAVY)
  assert result.stderr.splitlines() == ['loaded: '], result.stderr[-2000:]
  assert 'usage' in result.stdout.lower() or 'flags' in result.stdout.lower(), result.stdout


def test_importing_the_package_loads_no_heavy_library():
  probe = (
    'import sys, groupvit_jax, groupvit_jax.evaluators.datasets, input_pipeline.image_transforms;'
    f'print(sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}))'
  )
  result = cli.run_python(probe)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]' and not result.stderr.strip()
