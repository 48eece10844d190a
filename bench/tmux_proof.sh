#!/usr/bin/env bash
# The real dashboard in a real terminal (tmux) on the device: a 10 GiB process appears and goes;
# the dashboard's own CPU use at 2 Hz and 4 Hz. Screens are written to $OUT.
set -u
OUT=${OUT:-/tmp/out}
cpu_of() {  # percent of one core used by pid $1 over $2 seconds
  local a b; a=$(awk '{print $14+$15}' /proc/$1/stat); sleep $2; b=$(awk '{print $14+$15}' /proc/$1/stat)
  python3 -c "print(round(100*($b-$a)/$(getconf CLK_TCK)/$2, 2))"
}
for hz in 0.5 0.25; do
  tmux kill-server 2>/dev/null
  tmux new-session -d -s g -x 140 -y 44 "env PYTHONPATH=$PYTHONPATH python3 -m gputui --interval $hz"
  sleep 6
  pid=$(pgrep -f "gputui --interval $hz" | head -1)
  echo "interval $hz: dashboard pid $pid cpu% over 10s = $(cpu_of $pid 10)"
done
tmux capture-pane -p -t g > "$OUT/tmux_before.txt"
python3 -c "import torch,time; x=torch.empty(10<<30,dtype=torch.uint8,device='cuda'); print('ok',flush=True); time.sleep(30)" > /tmp/alloc.out &
apid=$!
until grep -q ok /tmp/alloc.out 2>/dev/null; do sleep 0.05; done
sleep 0.3
tmux capture-pane -p -t g > "$OUT/tmux_with_10gib.txt"
kill $apid; wait $apid 2>/dev/null
sleep 0.35
tmux capture-pane -p -t g > "$OUT/tmux_after_exit.txt"
echo "alloc pid $apid: in screen with 10 GiB: $(grep -c " $apid " $OUT/tmux_with_10gib.txt), after exit: $(grep -c " $apid " $OUT/tmux_after_exit.txt)"
grep " $apid " "$OUT/tmux_with_10gib.txt"
tmux send-keys -t g q; sleep 1; tmux kill-server 2>/dev/null
