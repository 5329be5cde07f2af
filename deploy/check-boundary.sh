#!/usr/bin/env bash
# The agent boundary (issue 16): the controller reaches a host only through agent messages.
# Nothing in controller/src/{api,engine,build} or docker_types.rs may name `wharf_node`;
# only the in-process adapter and the binary's wiring do. PENDING lists the files not yet
# moved behind messages (none left); it only shrinks, and a file not on it that names
# wharf_node fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PENDING=()
bad=0
while IFS= read -r file; do
  allowed=0
  for p in ${PENDING[@]+"${PENDING[@]}"}; do [[ "$file" == "$p" ]] && allowed=1; done
  if [[ $allowed == 0 ]]; then
    echo "check-boundary: $file names wharf_node; reach the host through agent_client instead" >&2
    grep -n 'wharf_node' "$file" | grep -v '^\s*[0-9]*:\s*//' >&2 || true
    bad=1
  fi
done < <(grep -rlE '^[^/]*wharf_node' controller/src/api controller/src/engine controller/src/build controller/src/docker_types.rs | sort)
for p in ${PENDING[@]+"${PENDING[@]}"}; do
  if ! grep -qE '^[^/]*wharf_node' "$p" 2>/dev/null; then
    echo "check-boundary: $p no longer names wharf_node: remove it from PENDING" >&2
    bad=1
  fi
done
exit $bad
