#!/bin/bash
# On the device: one row, its own Flower home and SuperLink port: runrow.sh ID INDEX
id=$1; i=$2
cd /tmp/repo
export FEDSEG_SHARED_DATA=/tmp/data FEDSEG_FLWR_HOME=/tmp/flwr/$i FEDSEG_SUPERLINK_PORT=$((19000 + 10 * i))
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
start=$(date +%s)
echo "$(date +%T) start $id" >> /tmp/res/times.txt
python3 -m simulations.bench.run_all --profile cpu --device cuda --out /tmp/res/$id --one $id > /tmp/res/$id.log 2>&1
rc=$?
echo "$(date +%T) end $id rc=$rc $(( $(date +%s) - start ))s" >> /tmp/res/times.txt
