"""Few-shot data: sources, Meta-Dataset sampler, padded episodes, preprocessing.

  src = get_source('omniglot', 'test')
  spec = sample_episode(src, SamplerConfig(), seed=0, index=0)
  ep = make_episode(src, spec, resolution=128)
"""
from tinytrain_jax.data.episodes import bucket_shape
from tinytrain_jax.data.episodes import bucket_size
from tinytrain_jax.data.episodes import DEFAULT_BUCKETS
from tinytrain_jax.data.episodes import DEFAULT_WAY_BUCKETS
from tinytrain_jax.data.episodes import Episode
from tinytrain_jax.data.episodes import episode_padding
from tinytrain_jax.data.episodes import episode_stats
from tinytrain_jax.data.episodes import make_episode
from tinytrain_jax.data.preprocess import augment
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.data.preprocess import preprocess
from tinytrain_jax.data.sampler import EpisodeSpec
from tinytrain_jax.data.sampler import sample_episode
from tinytrain_jax.data.sampler import sample_episodes
from tinytrain_jax.data.sampler import SamplerConfig
from tinytrain_jax.data.sources import ArraySource
from tinytrain_jax.data.sources import get_source
from tinytrain_jax.data.sources import Source
