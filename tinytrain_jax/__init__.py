"""tinytrain_jax: TinyTrain (Kwon et al., ICML 2024) in JAX.

Public API (shapes and units in each docstring):
  models: model_spec, init, apply, load_pretrained, ModelSpec, ConvLayer
  masks:  full_mask, mask_from_layers, layer_updates, to_dense, apply_mask,
          masked_optimizer, save_mask, load_mask
"""
from tinytrain_jax.masks import (LayerUpdate, apply_mask, check_mask, full_mask,
                                 layer_updates, load_mask, mask_from_layers,
                                 masked_optimizer, save_mask, to_dense,
                                 to_leaf_mask)
from tinytrain_jax.models import (ConvLayer, ModelOutput, ModelSpec, apply,
                                  init, load_pretrained, model_spec)

__version__ = '0.1.0'
