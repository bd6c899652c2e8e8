"""Multi-domain validation sets, and meta-training from a `dir:` folder."""
import pathlib
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from tinytrain_jax import models
from tinytrain_jax.models import protonet
from tinytrain_jax.train import meta_train as mt
from tinytrain_jax.train import validation


def write_folder(root: pathlib.Path, classes: int = 6, per_class: int = 15):
  rng = np.random.default_rng(0)
  for c in range(classes):
    (root / f'c{c}').mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (20, 20, 3),
                                   np.uint8)).save(root / f'c{c}' / f'{i}.png')


class ValidationTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.root = pathlib.Path(tmp.name)
    write_folder(self.root / 'imgs')

  def test_val_set_is_deterministic_and_accuracy_in_range(self):
    name = f'dir:{self.root / "imgs"}'
    a = validation.build_val_set((name, 'omniglot'), 32, 2)
    b = validation.build_val_set((name, 'omniglot'), 32, 2)
    for src in a.episodes:
      for ea, eb in zip(a.episodes[src], b.episodes[src]):
        for k in ea:
          np.testing.assert_array_equal(ea[k], eb[k])
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    accs = validation.none_accuracy(spec, params, protonet.init_head(), a)
    self.assertEqual(set(accs), {name, 'omniglot'})
    for v in accs.values():
      self.assertBetween(v, 0.0, 100.0)
    with self.assertRaisesRegex(ValueError, 'val episodes must be >= 1'):
      validation.build_val_set((name,), 32, 0)

  def test_meta_train_from_a_folder(self):
    name = f'dir:{self.root / "imgs"}'
    cfg = mt.MetaTrainConfig(resolution=32, source=name, ways=3, shots=1,
                             queries=1, steps=2, warmup_steps=1,
                             checkpoint_every=1, val_every=1, val_episodes=1,
                             val_sources=(name,))
    wd = self.root / 'run'
    state = mt.run_meta_training(cfg, wd, progress=False)
    self.assertEqual(int(state.step), 2)
    self.assertLen(mt.val_log(wd), 3)  # steps 0, 1, 2


if __name__ == '__main__':
  absltest.main()
