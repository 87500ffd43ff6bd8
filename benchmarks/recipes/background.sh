#!/usr/bin/env bash
# Run a recipe longer than one device call (10 minutes) on a lent GPU machine: start it in the background in one
# call, then wait for it in the next ones (the machine stays up between calls made back to back, and with it the job
# and its files). Each job's command, output, exit status and end time are kept under $BG (default runs/background).
#
#   bash benchmarks/recipes/background.sh start t2r -- bash benchmarks/recipes/t2r.sh
#   bash benchmarks/recipes/background.sh wait t2r 540   # up to 540 s; prints the log's tail; exit 0 once the job
#                                                        # has ended (its own status in $BG/t2r/rc), 3 while it runs
#   bash benchmarks/recipes/background.sh status t2r     # the same without waiting
source "$(dirname "$0")/common.sh"  # the repository root, and this checkout's gsa on PYTHONPATH for the job
BG=${BG:-runs/background}
usage() { echo "usage: background.sh start NAME -- COMMAND... | wait NAME SECONDS | status NAME" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1 name=$2; shift 2
[[ $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "background.sh: NAME must be letters, digits, '.', '_' or '-', got '$name'" >&2; exit 2; }
dir=$BG/$name

report() {  # the log's tail, then 0 if the job ended (3 if it still runs)
  tail -n "${TAIL:-15}" "$dir/log" 2>/dev/null || true
  if [ -f "$dir/rc" ]; then
    echo "background.sh: $name ended with status $(cat "$dir/rc") at $(cat "$dir/ended")"
    return 0
  fi
  echo "background.sh: $name still running ($(( $(date +%s) - $(cat "$dir/started") )) s so far)"
  return 3
}

case "$action" in
  start)
    [ "${1:-}" = "--" ] && shift
    [ $# -ge 1 ] || usage
    if [ -f "$dir/started" ] && [ ! -f "$dir/rc" ]; then
      echo "background.sh: $name is already running (started $(cat "$dir/started"))" >&2; exit 1
    fi
    rm -rf "$dir"; mkdir -p "$dir"
    printf '%q ' "$@" > "$dir/command"; date +%s > "$dir/started"
    # its own process session (a GPU machine ends what a call leaves running otherwise); the job's status and end
    # time are written by the job itself, so they survive this shell
    setsid nohup bash -c '"$@" > "$0/log" 2>&1; echo $? > "$0/rc.tmp"; date -u +%FT%TZ > "$0/ended"
      mv "$0/rc.tmp" "$0/rc"' "$dir" "$@" > /dev/null 2>&1 < /dev/null &
    echo "background.sh: started $name (pid $!): $(cat "$dir/command")" ;;
  wait)
    [ $# -eq 1 ] && [[ $1 =~ ^[0-9]+$ ]] || usage
    [ -f "$dir/started" ] || { echo "background.sh: no job named $name under $BG" >&2; exit 2; }
    end=$(( $(date +%s) + $1 ))
    while [ ! -f "$dir/rc" ] && [ "$(date +%s)" -lt "$end" ]; do sleep "${POLL:-10}"; done
    report ;;
  status)
    [ -f "$dir/started" ] || { echo "background.sh: no job named $name under $BG" >&2; exit 2; }
    report ;;
  *) usage ;;
esac
