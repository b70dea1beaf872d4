#!/bin/bash
# On the device: every row of /tmp/rows.txt as a job in a session of its own (it outlives the call).
cp .devrun/runrow.sh /tmp/runrow.sh
i=0
for id in $(cat /tmp/rows.txt); do
  i=$((i+1))
  mkdir -p /tmp/res/$id/work/prior-retina /tmp/flwr/$i
  cp -r /tmp/data/prior-retina/* /tmp/res/$id/work/prior-retina/
  setsid nohup bash /tmp/runrow.sh $id $i </dev/null >/dev/null 2>&1 &
done
echo "launched $i rows"
