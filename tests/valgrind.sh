#!/usr/bin/env bash
# Runs the resize_mig recipe (success and an API failure) and the sandbox's memory-cap path
# under valgrind against a fresh gcpr-fake: any invalid read/write, use of uninitialised
# memory or definite leak fails the test.
set -euo pipefail
build=${1:?usage: valgrind.sh BUILD_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/gcpr-vg.XXXXXX)
"$build/gcpr-fake" --dir "$work/fake" > "$work/fake.out" &
fake=$!
trap 'kill $fake 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q ready "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
. "$work/fake/env.sh"
vg() {
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite "$build/gcpr" "$@"
}
cd "$src"
vg run resize_mig project=demo-project zone=us-central1-a mig=td-central-ig size=3 > /dev/null
set +e
vg run resize_mig project=demo-project zone=us-central1-a mig=nope size=3 2> "$work/err"
code=$?
set -e
[ "$code" -eq 1 ] || { cat "$work/err"; echo "valgrind: expected exit 1 for an unknown MIG, got $code"; exit 1; }
cat > "$work/mem.lua" <<'LUA'
local gcp = require "gcp"
return gcp.recipe{description = "runaway", run = function()
  local t = {} while true do t[#t + 1] = ("x"):rep(4096) .. #t end
end}
LUA
set +e
vg run --memory 16 "$work/mem.lua" 2> "$work/err"
code=$?
set -e
[ "$code" -eq 3 ] || { cat "$work/err"; echo "valgrind: expected exit 3 at the memory cap, got $code"; exit 1; }
echo "valgrind: 3 runs clean"
