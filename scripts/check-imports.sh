#!/usr/bin/env bash
# Import boundaries from DESIGN.md: lbnode never imports raft or go-nvml;
# protocol imports no other baton package; agent and lbnode never import
# coordinator.
set -euo pipefail
mod=$(go list -m)
fail=0
deps() { go list -deps "$1" 2>/dev/null; }
forbid() { # package, pattern, reason
  local bad
  bad=$(deps "$1" | grep -E "$2" || true)
  if [ -n "$bad" ]; then echo "import boundary: $1 must not import $3:"; echo "$bad" | sed 's/^/  /'; fail=1; fi
}
forbid "$mod/lbnode/..." 'github.com/hashicorp/raft|github.com/NVIDIA/go-nvml' "raft or go-nvml"
forbid "$mod/lbnode/..." "^$mod/(coordinator|agent)" "coordinator or agent"
forbid "$mod/agent/..." "^$mod/coordinator" "coordinator"
# The gossip pool is shared by every daemon: it knows none of them.
forbid "$mod/internal/membership" "^$mod/(coordinator|agent|lbnode)|github.com/hashicorp/raft" "a daemon package or raft"
forbid "$mod/internal/tlsutil" "^$mod/(coordinator|agent|lbnode)|github.com/hashicorp/raft" "a daemon package or raft"
bad=$(go list -f '{{join .Imports "\n"}}' "$mod/protocol" | grep "^$mod/" || true)
if [ -n "$bad" ]; then echo "import boundary: protocol imports baton packages: $bad"; fail=1; fi
[ $fail -eq 0 ] && echo "import boundaries ok"
exit $fail
