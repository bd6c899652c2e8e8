"""Backbones: specs, pure-function networks, pretrained weights."""
from tinytrain_jax.models.network import ModelOutput, apply, block_of, features, init, prefix
from tinytrain_jax.models.pretrained import init_feature_mix, load_arrays, load_pretrained
from tinytrain_jax.models.quantized import apply_int8
from tinytrain_jax.models.registry import BACKBONES, canonical_name, model_spec
from tinytrain_jax.models.spec import BlockConfig, ConvLayer, ModelSpec
from tinytrain_jax.models import protonet
