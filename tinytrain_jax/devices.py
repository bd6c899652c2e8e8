"""Devices, meshes and processes: how work is spread with `jax.sharding`.

One representation for "where things run": a 1-D `jax.sharding.Mesh` over
the first N visible devices (all of them by default) with a single named
axis. Work that splits (a batch of meta-training episodes, a batch of
evaluation tasks) is laid along that axis with `split_sharding`; everything
else (params, optimizer state) is `replicated`. jit with these shardings
lets XLA place the computation and insert the collectives; no scheduler of
our own.

  mesh = devices.make_mesh()                    # all visible devices
  x = jax.device_put(x, devices.split_sharding(mesh))   # x: [B, ...], B % N == 0

Multi-host: `initialize(coordinator, num_processes, process_id)` wraps
`jax.distributed.initialize`; `process_share(n)` is this process's disjoint,
deterministic share of n items (round robin by process index).

On a CPU host, `XLA_FLAGS=--xla_force_host_platform_device_count=4` (set
before jax is imported) simulates 4 devices.
"""
from typing import List, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = 'batch'


def device_list(num_devices: int = 0, local: bool = False) -> List[jax.Device]:
  """The first `num_devices` visible devices (0 = all of them); `local`:
  only this process's (`jax.local_devices()`), for work that each process
  does on its own share, such as evaluation tasks.

  Raises:
    ValueError: one line, when more devices are asked for than are visible.
  """
  devs = jax.local_devices() if local else jax.devices()
  if num_devices < 0:
    raise ValueError(f'--devices must be >= 0 (0 = all), got {num_devices}')
  if num_devices > len(devs):
    raise ValueError(
        f'--devices={num_devices} but only {len(devs)} {devs[0].platform} '
        'device(s) are visible; ask for fewer (0 = all), or on a CPU host set '
        'XLA_FLAGS=--xla_force_host_platform_device_count=N before starting')
  return devs[:num_devices or len(devs)]


def make_mesh(num_devices: int = 0,
              devices: Optional[Sequence[jax.Device]] = None,
              local: bool = False) -> Mesh:
  """A 1-D mesh with axis `AXIS` over `devices` or the first `num_devices`
  (`local`: of this process's devices)."""
  devs = (
      list(devices) if devices is not None else device_list(num_devices, local))
  return Mesh(np.asarray(devs), (AXIS,))


def split_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh (its size must divide by mesh.size)."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The whole array on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def divisor_mesh(mesh: Mesh, n: int) -> Mesh:
  """The largest sub-mesh (first devices) whose size divides `n`, so a
  batch of n items splits evenly; n=1 gives a one-device mesh."""
  devs = list(mesh.devices.flat)
  size = max(d for d in range(1, len(devs) + 1) if n % d == 0)
  return make_mesh(devices=devs[:size])


def padded_size(n: int, mesh: Mesh) -> int:
  """n rounded up to a multiple of the mesh size."""
  return -(-n // mesh.size) * mesh.size


def initialize(coordinator_address: str = '', num_processes: int = 1,
               process_id: int = 0) -> None:
  """`jax.distributed.initialize` for a multi-process run (no-op for 1).

  Raises:
    ValueError: one line naming the flag when the values cannot work.
  """
  if num_processes < 1:
    raise ValueError(f'--num_processes must be >= 1, got {num_processes}')
  if num_processes == 1:
    return
  if not coordinator_address:
    raise ValueError('--num_processes > 1 needs --coordinator_address=HOST:PORT'
                     ' (the address of process 0)')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'--process_id must be in [0, {num_processes}), got '
                     f'{process_id}')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def process_share(n: int, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> List[int]:
  """This process's items of range(n): i with i % process_count == index.

  Disjoint across processes, covering range(n), the same on every run.
  """
  idx = jax.process_index() if process_index is None else process_index
  cnt = jax.process_count() if process_count is None else process_count
  return list(range(idx, n, cnt))
