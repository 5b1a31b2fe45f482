#!/usr/bin/env bash
# The main job: set everything up if needed, then run the demo on the default config.
# Extra arguments go to `spinn demo` (see `spinn demo --help`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/spinn demo "$@"
