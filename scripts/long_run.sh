# Sourced by the long runs' run.sh scripts (docs/report-kn-*/run.sh): run one step at
# nice 10 and commit its partial results every 5 minutes, so a run cut off at the end of
# a session resumes from committed files. The caller sets:
#   RUN_PREFIX   commit-message prefix (the run's folder)
#   RUN_PATHS    array of the paths to commit (those that exist are committed)
#   STOP_AT      optional HH:MM: no commit after this time today
# Two copies of a run.sh may share the work; a lock under .git makes their commits take
# turns, so neither leaves files staged but uncommitted.

commit_partial() {  # message
    if [ -n "${STOP_AT:-}" ] && [[ "$(date +%H:%M)" > "$STOP_AT" ]]; then return 0; fi
    local paths=() p
    for p in "${RUN_PATHS[@]}"; do [ -e "$p" ] && paths+=("$p"); done
    [ ${#paths[@]} -eq 0 ] && return 0
    (
        flock -w 300 9 || { echo "== commit lock busy; skipped" >&2; exit 0; }
        git add -- "${paths[@]}" || exit 0
        git diff --cached --quiet -- "${paths[@]}" && exit 0  # nothing new
        git commit -q -m "$RUN_PREFIX: $1" -- "${paths[@]}" >/dev/null ||
            echo "== commit failed: $1" >&2
    ) 9>"$(git rev-parse --git-dir)/relneuron-long-run.lock"
}

run_step() {  # name, command...
    local name=$1; shift
    echo "== $(date +%T) $name: $*" >&2
    nice -n 10 "$@" &
    local pid=$! polls=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 10
        polls=$((polls + 1))
        if [ $((polls % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
            commit_partial "partial runs ($name)"
        fi
    done
    wait "$pid" || { echo "== $(date +%T) $name failed" >&2; return 1; }
    echo "== $(date +%T) $name done" >&2
    commit_partial "$name"
}
