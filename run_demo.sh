#!/usr/bin/env bash
# The main job: set everything up if needed, then fly one simulated course with SPINN.
# Extra arguments go to `spinn fly` (see `spinn fly --help`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/spinn fly "$@"
