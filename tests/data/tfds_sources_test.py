"""Tests of TFDS sources under tfds.testing.mock_data (nothing downloaded)."""
import os
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tinytrain_jax.data import episodes
from tinytrain_jax.data import sampler
from tinytrain_jax.data import sources
from tinytrain_jax.data import tfds_sources

# Meta-Dataset's DTD test classes (docs/reference/episodes.md §1.2).
MD_DTD_TEST = [
    'banded', 'bumpy', 'crosshatched', 'knitted', 'sprinkled', 'stratified',
    'woven'
]


def omniglot_dataset_fn(alphabet_sizes, per_class=4, size=12):
  """as_dataset_fn for mock_data: a tiny Omniglot with known alphabets.

  Alphabets 0..len(alphabet_sizes)-1 have the given numbers of characters;
  even alphabets go to TFDS 'train' (background), odd ones to 'test'.
  """
  rows = {'train': [], 'test': []}
  label = 0
  for alphabet, n_chars in enumerate(alphabet_sizes):
    for _ in range(n_chars):
      for i in range(per_class):
        img = np.full((size, size, 3), (label * 7 + i) % 256, np.uint8)
        rows['train' if alphabet % 2 == 0 else 'test'].append(
            (img, label, alphabet))
      label += 1

  def as_dataset(self, split, **kwargs):
    del self, kwargs
    imgs, labels, alphabets = zip(*rows[split])
    return tf.data.Dataset.from_tensor_slices({
        'image': np.stack(imgs),
        'label': np.array(labels, np.int64),
        'alphabet': np.array(alphabets, np.int64),
        'alphabet_char_id': np.zeros(len(labels), np.int64)
    })

  return as_dataset


class MdSplitTest(absltest.TestCase):

  def test_reproduces_md_dtd_test_classes(self):
    names = sorted(tfds.builder('dtd').info.features['label'].names)
    idx = tfds_sources.md_split_indices(47, (33, 7, 7))
    self.assertEqual([names[i] for i in idx['test']], MD_DTD_TEST)

  def test_partition_and_default_counts(self):
    idx = tfds_sources.md_split_indices(345)
    self.assertEqual([len(idx[s]) for s in sources.SPLITS], [241, 52, 52])
    self.assertCountEqual(np.concatenate(list(idx.values())), range(345))

  def test_bad_counts(self):
    with self.assertRaisesRegex(ValueError, 'must sum to the 10 classes'):
      tfds_sources.md_split_indices(10, (5, 5, 5))


class TfdsSourceTest(parameterized.TestCase):

  def test_mock_dtd_md_split_and_episodes(self):
    with tfds.testing.mock_data(num_examples=400):
      src = sources.get_source('tfds:dtd', 'test', image_size=16)
      train = sources.get_source('tfds:dtd', 'train', image_size=16)
    self.assertEqual(src.classes, MD_DTD_TEST)
    self.assertLen(train.classes, 33)
    self.assertEmpty(set(src.classes) & set(train.classes))
    self.assertEqual(src.name, 'tfds:dtd')
    spec = sampler.sample_episode(src, sampler.SamplerConfig(), 0, 0)
    self.assertBetween(spec.ways, 5, 7)
    ep = episodes.make_episode(src, spec, resolution=16)
    self.assertEqual(ep.support_x.shape[1:], (16, 16, 3))
    self.assertEqual(
        int(ep.query_mask.sum()), sum(len(q) for q in spec.query_indices))

  def test_mock_omniglot_bilevel(self):
    sizes = [14, 30, 14, 20, 16, 25, 17, 22, 20, 21, 26, 8, 40, 9]
    fn = omniglot_dataset_fn(sizes)
    with tfds.testing.mock_data(as_dataset_fn=fn):
      train = sources.get_source('tfds:omniglot', 'train', image_size=None)
      valid = sources.get_source('tfds:omniglot', 'valid', image_size=None)
      test = sources.get_source('tfds:omniglot', 'test', image_size=None)
    background = sizes[0::2]  # 14, 14, 16, 17, 20, 26, 40
    self.assertLen(valid.classes, 14 + 14 + 16 + 17 + 20)  # 5 smallest.
    self.assertLen(train.classes, sum(background) - len(valid.classes))
    self.assertLen(test.classes, sum(sizes[1::2]))
    self.assertLen(set(train.class_groups), 2)
    self.assertEqual(test.images(0, [0, 1]).shape, (2, 12, 12, 3))
    for spec in sampler.sample_episodes(test, sampler.SamplerConfig(), 0, 20):
      self.assertLen({test.class_groups[c] for c in spec.classes}, 1)

  def test_omniglot_falls_back_to_tfds_with_empty_cache(self):
    fn = omniglot_dataset_fn([14, 30, 14, 20, 16, 25, 17, 22])
    with tempfile.TemporaryDirectory() as empty:
      with mock.patch.dict(os.environ, {'TINYTRAIN_ASSETS': empty}):
        with tfds.testing.mock_data(as_dataset_fn=fn):
          src = sources.get_source('omniglot', 'test')
    self.assertIsInstance(src, tfds_sources.TfdsSource)
    self.assertEqual(src.name, 'omniglot')
    self.assertLen(src.classes, 30 + 20 + 25 + 22)

  def test_download_only_when_the_network_answers(self):
    calls = []

    class Builder:
      data_dir = '/nowhere/omniglot/3.0.0'

      def as_dataset(self, split, decoders):
        del decoders
        if not calls:
          raise FileNotFoundError('not prepared')
        return tf.data.Dataset.from_tensor_slices({
            'image': [b'png'],
            'label': [3]
        })

      def download_and_prepare(self):
        calls.append('download')

    read = lambda: list(
        tfds_sources._read_builder(Builder(), 'omniglot', ['train'], 'image',
                                   ('label',)))
    with mock.patch.object(tfds_sources, 'network_reachable',
                           return_value=False):
      with self.assertRaisesRegex(
          ValueError, r"split 'train' of 'omniglot' "
          r'\(ConnectionError\).*not prepared'):
        read()
    self.assertEmpty(calls)
    with mock.patch.object(tfds_sources, 'network_reachable',
                           return_value=True):
      self.assertEqual([(s, int(ex['label'])) for s, ex in read()],
                       [('train', 3)])
    self.assertEqual(calls, ['download'])

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, r"unknown TFDS dataset 'no_such"):
      sources.get_source('tfds:no_such_dataset_xyz', 'test')

  def test_meta_dataset_builder_guarded(self):
    try:
      import meta_dataset  # pylint: disable=g-import-not-at-top,unused-import
      self.skipTest('meta_dataset is installed')
    except ImportError:
      pass
    with self.assertRaisesRegex(ValueError, 'needs the meta_dataset package'):
      sources.get_source('tfds:meta_dataset/dtd', 'test')


if __name__ == '__main__':
  absltest.main()
