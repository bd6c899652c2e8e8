"""Bad inputs and faults through the launchers: one `error:` line, no
traceback, no result file touched (issue 16).

Each case runs `python -m experiments.<launcher> ...` in a subprocess with tiny
settings and checks: exit code != 0, exactly one stderr line starting with
`error:`, that line names the offending value, no `Traceback` anywhere, and
every file under the case's workdir / output path is byte-identical afterwards
(or, for a fresh workdir, no result file appeared). The lr-collapse case
instead checks its one-line warning. Cases that need real training are marked
slow. Library-level faults without a launcher input (damaged checkpoints, mask
JSON, full disk) are tested in checkpoint_test, masks_test and here
(CliEdgeTest).
"""
import dataclasses
import errno
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Optional, Sequence

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest

from tinytrain_jax.configs import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT = 'tinytrain_jax/configs/default.py'
META = 'tinytrain_jax/configs/meta_train.py'
RESULT_FILES = ('results.json', 'results.md', 'pareto.png', 'episodes.jsonl',
                'checkpoints')


@dataclasses.dataclass(frozen=True)
class Case:
  """launcher: experiments module; args: flags, '{wd}' / '{tmp}' / '{assets}'
  are substituted; regex: what the error line must match (the value)."""
  launcher: str
  args: Sequence[str]
  regex: str
  setup: Optional[Callable[[pathlib.Path], None]] = None
  assets: Optional[str] = None  # 'trunc', 'crc', 'tamper', 'empty'
  slow: bool = False  # a variant of a default case; runs with TINYTRAIN_SLOW=1


def _weights_file() -> pathlib.Path:
  # pylint: disable-next=g-import-not-at-top
  from tinytrain_jax.models import pretrained
  return pretrained.weights_path('mcunet-5fps')


def _make_assets(kind: str, root: pathlib.Path) -> pathlib.Path:
  """An asset cache whose mcunet weights are damaged in one way (or empty)."""
  real = pathlib.Path(os.environ.get('TINYTRAIN_ASSETS', ''))
  (root / 'weights').mkdir(parents=True)
  (root / 'data').mkdir()
  if kind == 'empty':
    return root
  for f in (real / 'data').glob('*.npz'):
    (root / 'data' / f.name).symlink_to(f)
  for f in (real / 'data').glob('*.json'):
    (root / 'data' / f.name).symlink_to(f)
  good = _weights_file().read_bytes()
  dst = root / 'weights' / 'mcunet-5fps.npz'
  if kind == 'trunc':
    dst.write_bytes(good[:len(good) // 2])
  elif kind == 'crc':
    b = bytearray(good)
    b[5000:5100] = bytes(100)
    dst.write_bytes(bytes(b))
  elif kind == 'tamper':
    with np.load(_weights_file()) as z:
      arrays = {k: z[k] for k in z.files}
    key = 'blocks/3/pointwise1/w_scales'
    arrays[key] = arrays[key] * np.float32(10.0)
    np.savez(dst, **arrays)
  return root


def _bomb_folder(tmp: pathlib.Path) -> None:
  """dir: source whose class 'a' holds a decompression bomb (> 2x PIL's
  MAX_IMAGE_PIXELS, a few kB as a 1-bit PNG)."""
  for c in 'ab':
    (tmp / 'bomb' / c).mkdir(parents=True)
    Image.new('RGB', (8, 8), (40, 0, 0)).save(tmp / 'bomb' / c / '0.png')
  side = int((2 * Image.MAX_IMAGE_PIXELS)**0.5) + 100
  Image.new('1', (side, side)).save(tmp / 'bomb' / 'a' / 'big.png')
  Image.new('RGB', (8, 8)).save(tmp / 'bomb' / 'b' / '1.png')


def _prior_results(wd: pathlib.Path) -> None:
  """A workdir holding a previous run's result files (must stay untouched)."""
  wd.mkdir(parents=True, exist_ok=True)
  (wd / 'results.json').write_text('{"results": []}\n')
  (wd / 'episodes.jsonl').write_text('{"episode": 0}\n')


def _sentinel(tmp: pathlib.Path) -> None:
  (tmp / 'out.png').write_bytes(b'previous output')
  (tmp / 'mask.json').write_text('{"previous": true}')


CASES = {
    # Config files and keys (all launchers share configs.cli).
    'config_arg_typo':
        Case(
            'evaluate', [f'--config={DEFAULT}:quik', '--workdir={wd}'],
            r"--config=.*default.py:quik: unknown config argument 'quik'.*"
            r"accepted: '' \(none\), 'quick'", _prior_results),
    'config_arg_typo_meta_train':
        Case('meta_train', [f'--config={META}:quik', '--workdir={wd}'],
             r"unknown config argument 'quik'", _prior_results, slow=True),
    'config_unknown_key':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--config.episodez=3', '--workdir={wd}'
        ], r'unknown config key --config.episodez; Did you mean "episodes"',
             _prior_results),
    'config_unknown_nested_key':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--config.selection.budget_scal=2',
            '--workdir={wd}'
        ], r'unknown config key --config.selection.budget_scal\b',
             _prior_results, slow=True),
    'config_bad_type':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--config.episodes=abc',
            '--workdir={wd}'
        ], r"--config.episodes=abc: invalid literal .* 'abc'", _prior_results,
             slow=True),
    'config_missing_file':
        Case('meta_train',
             ['--config=tinytrain_jax/configs/nope.py', '--workdir={wd}'],
             r"--config=tinytrain_jax/configs/nope.py: no config file",
             _prior_results, slow=True),
    # Numbers.
    'num_episodes_zero':
        Case('episodes', ['--source=cifar10_subset', '--num_episodes=0'],
             r'--num_episodes=0: 0 is not a positive integer'),
    'episodes_zero':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--config.episodes=0', '--workdir={wd}'
        ], r'--config.episodes must be >= 1, got 0', slow=True),
    'budget_scale_inf':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--workdir={wd}',
            '--config.selection.budget_scale=inf',
            '--config.domains=cifar10_subset', '--config.resolution=32',
            '--config.meta_train.steps=0'
        ], r'budget_scale must be a finite number > 0, got inf'),
    'resolution_not_multiple_of_32_evaluate':
        Case('evaluate', [
            f'--config={DEFAULT}:quick', '--config.resolution=100',
            '--workdir={wd}'
        ], r'--config.resolution=100 must be a multiple of 32', slow=True),
    'resolution_not_multiple_of_32_cost':
        Case('cost', ['--resolution=100'],
             r'--resolution=100 must be a multiple '
             r'of 32 .* 96 or 128'),
    'resolution_not_multiple_of_32_describe':
        Case('describe', ['--resolution=100'], r'--resolution=100 must be a '
             r'multiple of 32', slow=True),
    'resolution_not_multiple_of_32_select':
        Case('select', ['--resolution=100', '--save={tmp}/mask.json'],
             r'--resolution=100 must be a multiple of 32', _sentinel,
             slow=True),
    # Damaged weights in the asset cache.
    'weights_truncated':
        Case(
            'select', ['--resolution=32', '--save={tmp}/mask.json'],
            r'cannot read weights file .*mcunet-5fps.npz \(BadZipFile.*damaged.*'
            r'TINYTRAIN_ASSETS', _sentinel, 'trunc'),
    'weights_bad_crc':
        Case('select', ['--resolution=32', '--save={tmp}/mask.json'],
             r'cannot read weights file .*mcunet-5fps.npz .*CRC', _sentinel,
             'crc'),
    'weights_tampered_scale':
        Case(
            'select', ['--resolution=32', '--save={tmp}/mask.json'],
            r'mcunet-5fps.npz fails its integrity check .*weights_manifest.json',
            _sentinel, 'tamper'),
    # Empty asset cache.
    'empty_cache_omniglot':
        Case(
            'episodes', ['--source=omniglot'],
            r'Omniglot not found: \$TINYTRAIN_ASSETS=.* has no data/omniglot.npz.*'
            r'TFDS .*omniglot.* not prepared', None, 'empty'),
    'empty_cache_cifar':
        Case(
            'episodes', ['--source=cifar10_subset', '--split=train'],
            r'CIFAR-10 subset not found at .*cifar10_subset.npz; set '
            r'\$TINYTRAIN_ASSETS', None, 'empty'),
    # Images and folders.
    'decompression_bomb':
        Case(
            'episodes', [
                '--source=dir:{tmp}/bomb', '--mode=fixed', '--ways=2',
                '--shots=1', '--queries=1', '--num_episodes=1',
                '--contact_sheet={tmp}/out.png'
            ],
            r'cannot read image .*bomb/a/big.png: Image size .* exceeds limit',
            lambda t: (_bomb_folder(t), _sentinel(t))),
    'workdir_is_under_a_file':
        Case('evaluate',
             [f'--config={DEFAULT}:quick', '--workdir={tmp}/afile/run'],
             r'cannot create folder .*afile.*pass another --workdir', lambda t:
             (t / 'afile').write_text('not a folder')),
}


def _snapshot(folder: pathlib.Path):
  if not folder.exists():
    return {}
  return {
      str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
      for p in sorted(folder.rglob('*'))
      if p.is_file()
  }


def run_launcher(launcher: str, args, env_extra=None, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  env.update(env_extra or {})
  return subprocess.run(
      [sys.executable, '-m', f'experiments.{launcher}', *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=timeout, check=False)


class BadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(k, k) for k in CASES])
  def test_one_error_line(self, name):
    case = CASES[name]
    if case.slow and os.environ.get('TINYTRAIN_SLOW') != '1':
      self.skipTest('variant of a default case; run with TINYTRAIN_SLOW=1')
    tmp = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
    wd = tmp / 'wd'
    if case.setup is not None:
      case.setup(wd if '{wd}' in ' '.join(case.args) else tmp)
    env = {}
    if case.assets:
      env['TINYTRAIN_ASSETS'] = str(_make_assets(case.assets, tmp / 'assets'))
      env['TINYTRAIN_TFDS_DATA_DIR'] = str(tmp / 'no_tfds')
    before = _snapshot(tmp)
    args = [
        a.replace('{wd}', str(wd)).replace('{tmp}', str(tmp)) for a in case.args
    ]
    out = run_launcher(case.launcher, args, env)
    text = out.stdout + out.stderr
    errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
    self.assertNotEqual(out.returncode, 0, text[-3000:])
    self.assertNotIn('Traceback', text)
    self.assertLen(errors, 1, text[-3000:])
    self.assertRegex(errors[0], case.regex)
    after = _snapshot(tmp)
    self.assertEqual({
        k: v for k, v in after.items() if k in before
    }, before, 'a file that existed was changed')
    new = [k for k in after if k not in before]
    self.assertFalse([k for k in new if any(r in k for r in RESULT_FILES)],
                     f'result files appeared: {new}')

  @pytest.mark.slow
  def test_select_budget_message_agrees_with_its_numbers(self):
    # At 32 px the MACs budget binds; the message used to say the (ample)
    # byte budget was below the cheapest update too.
    out = run_launcher(
        'select',
        ['--resolution=32', '--budget_mmacs=0.01', '--source=cifar10_subset'])
    errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(errors, 1, out.stderr[-3000:])
    self.assertRegex(
        errors[0], r'budget_macs=10000.0 is below the cheapest '
        r'single-layer update within budget_bytes=\d+ \(.* '
        r'(\d+) MACs, (\d+) bytes\); raise the budgets: '
        r'--budget_mmacs to at least')
    self.assertNotIn('budget_bytes=933233 / ', errors[0])


@pytest.mark.slow
class CollapseTest(absltest.TestCase):

  def test_lr_1e6_warns_in_one_line(self):
    wd = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, wd, ignore_errors=True)
    out = run_launcher('evaluate', [
        f'--config={DEFAULT}:quick', f'--workdir={wd}', '--noprogress',
        '--config.methods=fulltrain', '--config.domains=cifar10_subset',
        '--config.finetune.lr_per_method=fulltrain=1e6',
        '--config.meta_train.steps=0', '--config.episodes=1',
        '--config.resolution=32'
    ])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    warn = [l for l in out.stderr.splitlines() if 'collapsed' in l]
    self.assertLen(warn, 1, out.stderr[-3000:])
    self.assertRegex(
        warn[0], r'fine-tuning \(method fulltrain\) with lr '
        r'1e\+06 collapsed: loss 1.6094 = ln\(5\)')


class CliEdgeTest(absltest.TestCase):
  """OS faults at the launcher edge (cannot be provoked portably)."""

  def _run_guarded(self, exc):

    def main(argv):
      del argv
      raise exc

    with self.assertRaises(SystemExit) as cm, absltest.mock.patch(
        'sys.stderr', new_callable=__import__('io').StringIO) as err:
      cli.guard(main)([])
    self.assertEqual(cm.exception.code, 1)
    lines = err.getvalue().splitlines()
    self.assertLen(lines, 1)
    return lines[0]

  def test_full_disk_and_permissions_are_one_line(self):
    line = self._run_guarded(
        OSError(errno.ENOSPC, 'No space left on device',
                '/runs/main/episodes.jsonl'))
    self.assertRegex(
        line, r'^error: disk full while writing '
        r'/runs/main/episodes.jsonl; free space and rerun')
    line = self._run_guarded(
        PermissionError(errno.EACCES, 'Permission denied', '/runs/main'))
    self.assertRegex(
        line, r'^error: cannot write /runs/main \(Permission '
        r'denied\); pass a writable --workdir')
    line = self._run_guarded(ValueError('a\nb'))
    self.assertEqual(line, 'error: a; b')


if __name__ == '__main__':
  absltest.main()
