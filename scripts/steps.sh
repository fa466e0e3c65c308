# Sourced by scripts/reproduce_mini.sh, eval/mini/full_build/run.sh and eval/mini/held_out/run.sh.
# step NAME COMMAND...: print the command with the UTC time, run it, and append
# "NAME<TAB>wall seconds" to the file named by $TIMES.
step() {
  local name=$1 s
  shift
  s=$(date +%s)
  echo "== $(date -u +%T) $name: $*" >&2
  "$@"
  printf '%s\t%s\n' "$name" "$(($(date +%s) - s))" >>"$TIMES"
}
