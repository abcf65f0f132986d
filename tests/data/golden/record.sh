#!/bin/bash
# Records the golden journals of tests/test_golden.py from the real runner on the tiny models:
#   clean/  a healthy run on a private Xvfb
#   fault/  the same run with the X server stopped (SIGSTOP) for the whole `after` phase and resumed
#           (SIGCONT) when that phase ends
# Usage: tests/data/golden/record.sh   (from the repository root, with .venv set up; a few minutes)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $xpid 2>/dev/null || true; rm -rf "$work"' EXIT
disp=:$((200 + RANDOM % 200))
Xvfb "$disp" -screen 0 640x480x24 -nolisten tcp -retro >"$work/xvfb.log" 2>&1 &
xpid=$!
for _ in $(seq 50); do xdpyinfo -display "$disp" >/dev/null 2>&1 && break; sleep 0.2; done
export DISPLAY=$disp STRESS_CACHE="$work/cache"
run() { .venv/bin/python -m stress run "$here/golden.yaml" --out "$work/$1" --reports "$work/rep-$1" --no-history --quiet || true; }
run clean
run fault &
pid=$!
stopped=0
while kill -0 $pid 2>/dev/null; do
  j=$(ls "$work"/fault/*/journal.jsonl 2>/dev/null | head -1 || true)
  if [ -n "$j" ]; then
    if [ $stopped = 0 ] && grep -q '"phase":"after","state":"start"' "$j"; then kill -STOP $xpid; stopped=1; fi
    if [ $stopped = 1 ] && grep -q '"phase":"after","state":"end"' "$j"; then kill -CONT $xpid; stopped=2; fi
  fi
  sleep 0.2
done
kill -CONT $xpid 2>/dev/null || true
for kind in clean fault; do
  src=$(dirname "$(ls "$work/$kind"/*/journal.jsonl)")
  mkdir -p "$here/$kind"
  cp "$src/journal.jsonl" "$src/scenario.resolved.json" "$src/environment.json" "$here/$kind/"
done
