"""Default selection budgets per backbone (docs/reference/criterion.md §3.2, reconstructed).

No budget value of TinyTrain could be read; the published numbers are
calibration targets instead (poster Table II, per sample):

  backbone         backward compute   backward memory
  mcunet-5fps      6.51 M MACs        0.89 MB
  mbv2-w0.35       4.90 M MACs        1.06 MB
  proxyless-w0.3   5.00 M MACs        0.78 MB

Defaults: `budget_macs` = the published compute, counted with
`cost.backward_macs` (per sample, the stem's unneeded input gradient not
counted). `budget_bytes` = the published memory read as MiB (0.89 MiB =
933,232 bytes for MCUNet), counted with `cost.backward_memory_bytes` (the
fp32_saved model: saved fp32 input slices of trained kernels + 1-bit ReLU6
masks at batch 1, plus trained parameters × (weight + gradient + 1 momentum
slot), 12 bytes each). With these, the MACs budget binds first on all three
backbones (the selection stays well inside the memory cap: 3/4 or less on
mcunet-5fps at 128 px); the byte cap therefore acts as TinyTrain's "≈1 MB
device" envelope rather than as a reproduction of the published MB, whose
accounting is unknown (docs/reference/cost_model.md §3.3). Sweep both (e.g. 0.25-2x).
"""
from typing import Tuple

from tinytrain_jax.models.registry import canonical_name

# (published backward MACs per sample, published backward memory in MB).
PUBLISHED = {
    'mcunet-5fps': (6_510_000, 0.89),
    'mbv2-w0.35': (4_900_000, 1.06),
    'proxyless-w0.3': (5_000_000, 0.78),
}


def default_budgets(model_name: str) -> Tuple[int, int]:
  """(budget_bytes, budget_macs) for a named backbone.

  Args:
    model_name: 'mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3' or an alias.

  Returns:
    (bytes under `cost.backward_memory_bytes` at batch 1 with one optimizer
    slot, backward MACs per sample under `cost.backward_macs`).

  Raises:
    ValueError: unknown model (names the accepted ones).

  Example:
    budget_bytes, budget_macs = default_budgets('mcunet-5fps')
  """
  macs, mb = PUBLISHED[canonical_name(model_name)]
  return int(round(mb * 2**20)), int(macs)
