#!/usr/bin/env bash
# The drone image's entrypoint: ROS 2 and the built workspace in the environment, then the command.
set -eo pipefail
# shellcheck source=/dev/null
. "/opt/ros/${ROS_DISTRO:-humble}/setup.bash"
# shellcheck source=/dev/null
. "${SPINN_WS:-/opt/spinn_ws}/install/setup.bash"
exec "$@"
