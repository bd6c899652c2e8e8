#!/usr/bin/env bash
# Records the benchmarks' GPU rows on a machine with one GPU, JAX with CUDA
# and torch with CUDA (the peer), the asset cache in $TINYTRAIN_ASSETS.
# Writes benchmarks/results/{peer_speed,throughput,step_costs}_gpu.json (the CPU files
# stay as they are). Each step stops at its share of $LIMIT seconds (default
# 900); rows already measured are written as they come, so a stopped run
# keeps them. On one H200 the compiles dominate: about 100 s per backbone
# for the peer benchmark at one batch size, 11-18 s per new fine-tune plan.
#   LIMIT=600 bash benchmarks/gpu_rows.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-900}
DEADLINE=$(( $(date +%s) + LIMIT ))
# Seconds until the deadline less $1, at least 1 (timeout 0 would not stop).
left() { local s=$(( DEADLINE - $(date +%s) - $1 )); echo $(( s > 0 ? s : 1 )); }
R=benchmarks/results
PY=${PYTHON:-python3}  # an interpreter with jax[cuda] and torch
export PYTHONUNBUFFERED=1
# JAX takes 75 % of the GPU's memory by default; leave the peer its share.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-.45}
timeout "$(left $(( LIMIT * 2 / 5 )))" "$PY" -m benchmarks.peer_speed \
  --batches=100,25 --matmul=8192 --out=$R/peer_speed_gpu.json
timeout "$(left $(( LIMIT / 5 )))" "$PY" -m benchmarks.throughput \
  --models=mcunet-5fps,mbv2-w0.35,proxyless-w0.3 --methods=tinytrain,fulltrain \
  --devices=1 --tasks=16 --tasks_per_device=8 --out=$R/throughput_gpu.json
timeout "$(left $(( LIMIT / 10 )))" "$PY" -m benchmarks.throughput \
  --models=mcunet-5fps,mbv2-w0.35,proxyless-w0.3 \
  --methods=tinytrain,fulltrain,lastlayer --devices=1 --tasks=8 \
  --out=$R/throughput_gpu.json
# XLA's FLOPs and temp memory of the compiled steps on the GPU backend.
timeout "$(left 5)" "$PY" -m benchmarks.step_costs \
  --methods=tinytrain,fulltrain --out=$R/step_costs_gpu.json
echo "seconds left: $(left 0)"
