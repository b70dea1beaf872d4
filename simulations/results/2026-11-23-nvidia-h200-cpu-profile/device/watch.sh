#!/bin/bash
# On the device: report every minute until every row ended or $1 seconds passed; then pack the results.
limit=$1; start=$(date +%s)
rows=$(wc -l < /tmp/rows.txt)
while true; do
  ended=$(grep -c " end " /tmp/res/times.txt 2>/dev/null); ended=${ended:-0}
  echo "== $(date +%T) ended $ended of $rows; $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader); $(cut -d' ' -f1-3 /proc/loadavg)"
  [ "$ended" -ge "$rows" ] && break
  left=$(( limit - ($(date +%s) - start) ))
  [ "$left" -le 0 ] && break
  sleep $(( left < 60 ? left : 60 ))
done
for f in /tmp/res/*.log; do echo "-- $f"; tail -c 300 "$f" | tr '\r' '\n' | tail -2; done
cat /tmp/res/times.txt
cd /tmp/res && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.log' -o -name '*.txt' -o -name '*.csv' -o -name '*.png' \) -size -3M -print0 | tar czf $OUT/res.tgz --null -T - && ls -la $OUT
