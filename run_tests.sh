#!/usr/bin/env bash
# The test command: set everything up (idempotent; from scratch on a fresh clone:
# venv, ROS 2 wheels, torch, interface build) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k drone -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
