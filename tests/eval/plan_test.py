"""Evaluation plan: method variants, the start map, studies from a config."""
from absl.testing import absltest

from tinytrain_jax.configs import default
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import plan


class VariantTest(absltest.TestCase):

  def test_table1_starts_and_labels(self):
    vs = plan.variants(('none', 'fulltrain', 'tinytrain'), {}, ablation=False)
    self.assertEqual([(v.method, v.start, v.label) for v in vs],
                     [('none', 'pretrained', 'none'),
                      ('fulltrain', 'pretrained', 'fulltrain'),
                      ('tinytrain', 'metatrained', 'tinytrain')])

  def test_ablation_swaps_every_start(self):
    vs = plan.variants(('none', 'tinytrain'), {}, ablation=True)
    self.assertEqual(
        [v.label for v in vs],
        ['none', 'tinytrain', 'none@metatrained', 'tinytrain@pretrained'])

  def test_start_map_overrides(self):
    # 'none' is a method: it never collides with a start or a preset.
    sm = plan.start_map(('none', 'tinytrain'), {
        'none': 'metatrained',
        'tinytrain': ''
    })
    self.assertEqual(sm, {'none': 'metatrained', 'tinytrain': 'metatrained'})
    vs = plan.variants(('tinytrain', 'tinytrain_l2', 'tinytrain_random'), {},
                       ablation=False)
    self.assertEqual({v.start for v in vs}, {'metatrained'})

  def test_bad_start_map(self):
    with self.assertRaisesRegex(ValueError, r'starts\.tinytrian: unknown '
                                'method'):
      plan.start_map(('none',), {'tinytrian': 'pretrained'})
    with self.assertRaisesRegex(
        ValueError, r"starts\.none='meta': accepted "
        'starts are pretrained, metatrained'):
      plan.start_map(('none',), {'none': 'meta'})


class StudiesTest(absltest.TestCase):

  def test_default_config_studies(self):
    cfg = eval_config.from_config_dict(default.get_config())
    st = plan.studies(cfg)
    main = [
        s for s in st
        if s.backbone == 'mcunet-5fps' and s.sampler.mode == 'fixed'
    ]
    self.assertEqual([s.domain for s in main],
                     ['omniglot', 'cifar10_subset', 'mini-imagenet'])
    labels = [v.label for v in main[0].variants]
    self.assertIn('tinytrain@pretrained', labels)
    self.assertIn('fulltrain@metatrained', labels)
    extra = [s for s in st if s.backbone != 'mcunet-5fps']
    self.assertEqual({s.backbone for s in extra},
                     {'mbv2-w0.35', 'proxyless-w0.3'})
    self.assertTrue(all('@' not in v.label for s in extra for v in s.variants))
    var = [s for s in st if s.sampler.mode == 'variable']
    self.assertEqual([s.domain for s in var], ['omniglot (MD)'])
    self.assertEqual(
        plan.needs_metatrained(st), {
            'mcunet-5fps': True,
            'mbv2-w0.35': True,
            'proxyless-w0.3': True
        })

  def test_unknown_method(self):
    cfg = default.get_config('quick')
    cfg.methods = 'none,magic'
    with self.assertRaisesRegex(ValueError, r"--config.methods: unknown "
                                r"\['magic'\]"):
      eval_config.from_config_dict(cfg)

  def test_samplers(self):
    cd = default.get_config('quick')
    cd.sampler.mode, cd.variable.domains = 'variable', 'omniglot'
    cd.extra_backbones.backbones = 'mbv2'
    st = plan.studies(eval_config.from_config_dict(cd))
    # Variable mode samples ways/shots/queries; extra backbones keep the
    # configured N-way K-shot tasks.
    self.assertEqual(
        {(s.backbone, s.sampler.mode, s.sampler.ways, s.sampler.queries)
         for s in st}, {('mcunet-5fps', 'variable', None, None),
                        ('mbv2-w0.35', 'fixed', 5, 5)})

  def test_unknown_config_arg(self):
    with self.assertRaisesRegex(ValueError, "unknown config argument 'quik'"):
      default.get_config('quik')


if __name__ == '__main__':
  absltest.main()
