"""Config files + flags -> frozen dataclasses at the launcher edge."""
import dataclasses
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

from tinytrain_jax.configs import dataclass_config
from tinytrain_jax.configs import default
from tinytrain_jax.configs import eval_config
from tinytrain_jax.configs import meta_train as meta_train_config
from tinytrain_jax.configs import sweep
from tinytrain_jax.data import sampler
from tinytrain_jax.eval import config as config_lib
from tinytrain_jax.eval import meta_cache
from tinytrain_jax.train import finetune
from tinytrain_jax.train import meta_train

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fields(cls, drop=()):
  return {f.name for f in dataclasses.fields(cls)} - set(drop)


def _flat(d, prefix=''):
  out = set()
  for k, v in d.items():
    if isinstance(v, dict) and k not in ('starts', 'lr_per_method',
                                         'lr_per_backbone'):
      out |= _flat(v, f'{prefix}{k}.')
    else:
      out.add(f'{prefix}{k}')
  return out


class EveryFieldIsAFlagTest(parameterized.TestCase):

  @parameterized.parameters((default.get_config,), (sweep.get_config,))
  def test_eval_config_files(self, get_config):
    cd = get_config()
    self.assertEqual(
        set(cd.finetune),
        _fields(finetune.FinetuneConfig, config_lib.FINETUNE_DERIVED)
        | _fields(config_lib.LrChoiceConfig))
    self.assertEqual(
        set(cd.meta_train),
        _fields(meta_train.MetaTrainConfig, config_lib.META_TRAIN_DERIVED)
        | {'checkpoint', 'lr_per_backbone'})
    self.assertEqual(set(cd.sampler), _fields(sampler.SamplerConfig))
    self.assertEqual(set(cd.selection), _fields(config_lib.BudgetConfig))
    self.assertEqual(
        set(cd.extra_backbones), _fields(config_lib.ExtraBackbones))
    self.assertEqual(set(cd.variable), _fields(config_lib.VariableStudies))
    top = _fields(config_lib.EvalConfig,
                  ('lr_choice', 'meta_train_checkpoints', 'meta_train_lrs'))
    self.assertEqual(set(cd), top)
    # Each flag lands in the EvalConfig: its JSON has exactly the flags.
    self.assertEqual(
        _flat(eval_config.from_config_dict(cd).to_json_dict()),
        _flat(cd.to_dict()))

  def test_meta_train_config_file(self):
    cd = meta_train_config.get_config()
    self.assertEqual(set(cd), _fields(meta_train.MetaTrainConfig))
    cfg = dataclass_config.meta_train_config(cd)
    self.assertEqual(
        dataclasses.asdict(cfg),
        dict(cd.to_dict(), val_sources=('mini-imagenet', 'omniglot')))


class FromConfigDictTest(parameterized.TestCase):

  def test_tuples_pairs_and_resolved_fields(self):
    cd = default.get_config('quick')
    cd.domains = ' omniglot, cifar10_subset ,'
    cd.backbones = 'mcunet,mbv2'
    cd.finetune.lr_per_method = 'lastlayer=1e-2,tinytrain=3e-3'
    cd.finetune.weight_decay = 1e-4
    cd.meta_train.momentum = 0.5
    cd.sampler.bilevel = False
    cd.starts.fulltrain = 'metatrained'
    cfg = eval_config.from_config_dict(cd)
    self.assertEqual(cfg.domains, ('omniglot', 'cifar10_subset'))
    self.assertEqual(cfg.backbones, ('mcunet-5fps', 'mbv2-w0.35'))
    self.assertEqual(cfg.lr_choice.lr_grid, (1e-3, 1e-2))
    self.assertEqual(cfg.lr_choice.lr_per_method,
                     (('lastlayer', 1e-2), ('tinytrain', 3e-3)))
    self.assertEqual(cfg.starts, (('fulltrain', 'metatrained'),))
    self.assertEqual(cfg.finetune.weight_decay, 1e-4)
    self.assertEqual((cfg.meta_train.momentum, cfg.meta_train.resolution,
                      cfg.meta_train.val_sources),
                     (0.5, 32, ('mini-imagenet', 'omniglot')))
    self.assertFalse(cfg.sampler.bilevel)
    hash(cfg)  # frozen and hashable, nested blocks included
    cd.meta_train.steps = 0
    cd.meta_train.checkpoint = 'runs/a,runs/b'
    cfg = eval_config.from_config_dict(cd)
    self.assertIsNone(cfg.meta_train)
    self.assertEqual(cfg.meta_train_checkpoints, ('runs/a', 'runs/b'))

  def test_meta_cache_keys_unchanged(self):
    # Meta-trainings cached before EvalConfig existed stay valid: the key of
    # an unchanged config is the one computed from the old ConfigDict path.
    # Those configs had the head at scale 10 (the default since is 30).
    want = {
        ('', 'mcunet-5fps'): 'b9ef24388244',
        ('', 'mbv2-w0.35'): '8f9cc1ce3912',
        ('', 'proxyless-w0.3'): '8aae40a3f921',
        ('quick', 'mcunet-5fps'): '8e2dd78fddd4'
    }
    for (arg, backbone), key in want.items():
      cd = default.get_config(arg)
      cd.meta_train.head_scale = 10.0
      cfg = eval_config.from_config_dict(cd)
      mcfg = meta_cache.metatrain_config(cfg.meta_train, backbone, cfg.seed)
      self.assertEqual(meta_cache.cache_dir(mcfg).name, f'{backbone}-{key}')
    # Today's defaults: the entries docs/results/main_results.json came from.
    want = {
        'mcunet-5fps': 'e4a2734284de',
        'mbv2-w0.35': 'efabf0e619dd',
        'proxyless-w0.3': '94b05e32c9c7'
    }
    cfg = eval_config.from_config_dict(default.get_config())
    self.assertEqual(cfg.meta_train_lrs, ())
    for backbone, key in want.items():
      mcfg = meta_cache.metatrain_config(cfg.meta_train, backbone, cfg.seed,
                                         cfg.meta_train_lrs)
      self.assertEqual(meta_cache.cache_dir(mcfg).name, f'{backbone}-{key}')

  def test_a_backbone_meta_trains_with_its_own_lr(self):
    cd = default.get_config()
    cd.meta_train.lr_per_backbone = 'proxyless=3e-5'
    cfg = eval_config.from_config_dict(cd)
    self.assertEqual(cfg.meta_train_lrs, (('proxyless-w0.3', 3e-5),))
    got = {
        b: meta_cache.metatrain_config(cfg.meta_train, b, cfg.seed,
                                       cfg.meta_train_lrs)
        for b in ('mcunet-5fps', 'proxyless-w0.3')
    }
    base = meta_cache.metatrain_config(cfg.meta_train, 'proxyless-w0.3',
                                       cfg.seed)
    self.assertEqual(got['proxyless-w0.3'], dataclasses.replace(base, lr=3e-5))
    self.assertEqual(got['mcunet-5fps'].lr, cd.meta_train.lr)
    self.assertNotEqual(
        meta_cache.cache_dir(got['proxyless-w0.3']), meta_cache.cache_dir(base))
    self.assertEqual(cfg.to_json_dict()['meta_train']['lr_per_backbone'],
                     {'proxyless-w0.3': 3e-5})

  @parameterized.parameters(
      ('meta_train.lr_per_backbone', 'resnet=1e-3', r'^--config\.meta_train\.'
       r"lr_per_backbone: unknown model 'resnet'"),
      ('meta_train.lr_per_backbone', 'mcunet=x', r'^--config\.meta_train\.'
       r"lr_per_backbone: bad item 'mcunet=x'; use backbone=lr"),
      ('meta_train.lr_per_backbone', 'mcunet=-1', r'lrs must be finite'),
      ('methods', 'none,magic', r"^--config\.methods: unknown \['magic'\]"),
      ('domains', '', r'^--config\.domains is empty'),
      ('episodes', 0, r'^--config\.episodes must be >= 1, got 0$'),
      ('resolution', 48, r'^--config\.resolution=48 must be a multiple of 32'),
      ('sampler.mode', 'md', r"^--config\.sampler\.mode must be one of"),
      ('sampler.ways', 0, r'ways must be >= 1 or None, got 0; set '
       r'--config\.sampler\.ways$'),
      ('finetune.lr_grid', '1e-3,x', r"^--config\.finetune\.lr_grid: 'x' is "
       'not a number'),
      ('finetune.lr_per_method', 'lastlayer', r"^--config\.finetune\."
       r"lr_per_method: bad item 'lastlayer'; use method=lr"),
      ('finetune.lr_per_method', 'magic=1e-2', r'^--config\.finetune\.'
       r"lr_per_method: unknown methods \['magic'\]; accepted: none"),
      ('finetune.impl', 'fast', r'impl must be one of .*; set '
       r'--config\.finetune\.impl$'),
      ('meta_train.ways', 0, r'ways must be an int >= 1, got 0; set '
       r'--config\.meta_train\.ways$'),
      ('meta_train.val_sources', '', r'val_every > 0 needs val_sources; '
       r'set --config\.meta_train\.val_sources='),
      ('starts.none', 'meta', r"^--config\.starts\.none='meta': accepted "
       'starts are pretrained, metatrained'),
      ('backbones', 'resnet', r"^--config\.backbones: unknown model 'resnet'"),
      ('selection.budget_scale', -1.0, r'^--config\.selection\.budget_scale '
       'must be a finite number > 0'),
  )
  def test_one_line_errors_name_the_flag(self, key, value, regex):
    cd = default.get_config('quick')
    *path, leaf = key.split('.')
    node = cd
    for p in path:
      node = node[p]
    node[leaf] = value
    with self.assertRaisesRegex(ValueError, regex) as e:
      eval_config.from_config_dict(cd)
    self.assertNotIn('\n', str(e.exception))

  def test_unknown_key(self):
    cd = default.get_config('quick')
    with cd.unlocked():
      cd.finetune.stepz = 3
    with self.assertRaisesRegex(
        ValueError, r'unknown config key '
        r'--config\.finetune\.stepz; accepted in '
        r'--config\.finetune\.\*: augment'):
      eval_config.from_config_dict(cd)

  def test_launcher_flags(self):
    # New flags exist on the command line, and their errors are one line.
    with tempfile.TemporaryDirectory() as wd:
      out = subprocess.run([
          sys.executable, '-m', 'experiments.evaluate',
          '--config=tinytrain_jax/configs/default.py:quick',
          '--config.finetune.lr_per_method=lastlayer=1e-2',
          '--config.domains=omniglot,cifar10_subset',
          '--config.meta_train.weight_decay=0.1',
          '--config.finetune.weight_decay=-1', f'--workdir={wd}'
      ], cwd=ROOT, capture_output=True, text=True, check=False)
    self.assertEqual(out.returncode, 1, out.stderr)
    self.assertEqual(
        out.stderr.strip().splitlines()[-1],
        'error: FinetuneConfig.weight_decay must be >= 0, got '
        '-1.0; set --config.finetune.weight_decay')


if __name__ == '__main__':
  absltest.main()
