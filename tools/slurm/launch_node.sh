#!/bin/bash
# One node's `accelerate launch`, started on every node by radio_distill.sbatch (through srun). Arguments:
# SPEC [key=value ...], passed through unchanged. The node's rank comes from SLURM, the rendezvous from the
# batch script (RADIO_MASTER_ADDR / RADIO_MASTER_PORT on the first node).
set -euo pipefail
SPEC=$1
shift
if [ -n "${GPUS_PER_NODE:-}" ]; then
  per_node=$GPUS_PER_NODE
elif [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
  per_node=$SLURM_GPUS_ON_NODE
else
  per_node=$(nvidia-smi -L | wc -l)
fi
nodes=${SLURM_NNODES:?not inside a SLURM job}
exec python -m accelerate.commands.launch \
  --config_file "$ACCELERATE_CONFIG" \
  --num_machines "$nodes" \
  --num_processes $((nodes * per_node)) \
  --machine_rank "${SLURM_NODEID:?}" \
  --main_process_ip "$RADIO_MASTER_ADDR" \
  --main_process_port "$RADIO_MASTER_PORT" \
  --rdzv_backend c10d \
  radio/train.py --spec "$SPEC" train.num_nodes="$nodes" train.num_gpus="$per_node" "$@"
