"""Every command the README shows runs as written, at tiny scale.

The commands are read from README.md's ```bash blocks (continuation lines
joined); `scripts/*.sh` are the two set-up commands, run by CI itself. Each
launcher gets flags appended that shrink it (later flags win in absl), runs
in a temporary runs/ folder, and must exit 0. TFDS targets cannot be
downloaded here, so the GPU/TPU command's domains are replaced by a local one.
"""
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

ROOT = pathlib.Path(__file__).resolve().parents[1]

_TINY_EVAL = [
    '--config.resolution=32', '--config.episodes=1', '--config.methods=none,'
    'lastlayer,tinytrain', '--config.domains=omniglot',
    '--config.ablation=False', '--config.extra_backbones.backbones=',
    '--config.variable.domains=', '--config.finetune.steps=1',
    '--config.finetune.lr_grid=1e-2', '--config.finetune.dev_episodes=1',
    '--config.sampler.queries=2', '--config.meta_train.steps=2',
    '--config.meta_train.shots=1', '--config.meta_train.queries=2',
    '--config.meta_train.val_every=1', '--config.meta_train.val_episodes=1',
    '--config.meta_train.warmup_steps=1',
    '--config.meta_train.checkpoint_every=1', '--progress=False'
]
TINY = {
    'experiments.describe': [],
    'experiments.episodes': ['--num_episodes=1'],
    'experiments.cost': [],
    'experiments.select': ['--resolution=32'],
    'experiments.meta_train': [
        '--config.resolution=32', '--config.steps=2', '--config.shots=1',
        '--config.queries=2', '--config.val_every=1', '--config.val_episodes=1',
        '--config.warmup_steps=1', '--config.checkpoint_every=1'
    ],
    'experiments.evaluate':
        _TINY_EVAL,
    'experiments.sweep': [
        '--config.episodes=1', '--config.resolution=32',
        '--config.finetune.steps=1', '--config.finetune.lr_grid=',
        '--config.meta_train.steps=0', '--config.domains=omniglot'
    ],
    'benchmarks.selection_paired': ['--quick', '--start=pretrained'],
    'benchmarks.throughput': [
        '--methods=none,tinytrain', '--resolution=32', '--tasks=2', '--steps=2',
        '--out=runs/throughput.json'
    ],
}
LIGHT = ('experiments.describe', 'experiments.episodes', 'experiments.cost',
         'experiments.select')


def readme_commands():
  text = (ROOT / 'README.md').read_text()
  cmds = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      line = line.split('  #')[0].strip()
      if line.startswith('python -m '):
        cmds.append(line)
  return cmds


def run(cmd: str, runs: pathlib.Path):
  argv = shlex.split(cmd.replace('runs/', f'{runs}/'))
  module = argv[2]
  extra = [a.replace('runs/', f'{runs}/') for a in TINY[module]]
  if module == 'experiments.evaluate' and 'tfds:' in cmd:
    extra.append('--config.domains=omniglot')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
             PYTHONPATH=str(ROOT))
  out = subprocess.run([sys.executable] + argv[1:] + extra, cwd=ROOT, env=env,
                       capture_output=True, text=True, check=False, timeout=900)
  return module, out


def _needed_before(cmds, index):
  """Indices of earlier commands whose --workdir=runs/... cmds[index] reads
  (e.g. --config.meta_train.checkpoint=runs/meta_mcunet)."""
  args = [a for a in shlex.split(cmds[index]) if not a.startswith('--workdir=')]
  reads = set(re.findall(r'=(runs/[\w./-]+)', ' '.join(args)))
  return [
      i for i, c in enumerate(cmds[:index])
      if any(f'--workdir={r}' in c for r in reads)
  ]


def _training_cases():
  """(test name, command index) of every non-light command: one test each,
  so the two xdist workers share them."""
  out = []
  for i, cmd in enumerate(readme_commands()):
    module = shlex.split(cmd)[2]
    if module not in LIGHT:
      out.append((f'{i:02d}_{module.split(".")[-1]}', i))
  return out


class ReadmeTest(parameterized.TestCase):

  def test_every_launcher_is_covered(self):
    mods = {shlex.split(c)[2] for c in readme_commands()}
    self.assertEqual(mods - set(TINY), set())
    self.assertGreaterEqual(len(mods), 8)

  def _run_all(self, light: bool):
    with tempfile.TemporaryDirectory() as d:
      for cmd in readme_commands():
        if (shlex.split(cmd)[2] in LIGHT) != light:
          continue
        module, out = run(cmd, pathlib.Path(d))
        self.assertEqual(out.returncode, 0,
                         f'{cmd}\n{module}: {out.stderr[-3000:]}')

  def test_light_commands(self):
    self._run_all(light=True)

  def test_main_script_runs_quick(self):
    """`bash scripts/main.sh --quick`, the README's main command, at tiny
    scale (its extra flags go to experiments.evaluate)."""
    with tempfile.TemporaryDirectory() as d:
      env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
      out = subprocess.run([
          'bash', 'scripts/main.sh', '--quick', f'--workdir={d}/quick',
          '--config.methods=none,tinytrain', '--config.domains=omniglot',
          '--config.ablation=False', '--progress=False'
      ], cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                           timeout=900)
      self.assertEqual(out.returncode, 0, out.stderr[-3000:])
      self.assertTrue((pathlib.Path(d) / 'quick' / 'results.md').exists())
      self.assertIn('| tinytrain |', out.stdout)

  @parameterized.named_parameters(*_training_cases())
  def test_training_command(self, index):
    # Commands that read another's output (a meta-train workdir) find it:
    # the earlier commands of the README run first, in one shared runs/.
    with tempfile.TemporaryDirectory() as d:
      cmds = readme_commands()
      for i in _needed_before(cmds, index) + [index]:
        module, out = run(cmds[i], pathlib.Path(d))
        self.assertEqual(out.returncode, 0,
                         f'{cmds[i]}\n{module}: {out.stderr[-3000:]}')


if __name__ == '__main__':
  absltest.main()
