#!/usr/bin/env bash
# The drone side on a Jetson: JetPack 6 (L4T r36, Ubuntu 22.04, Python 3.10), ROS 2
# Humble from apt, this package built with colcon, onnxruntime with the GPU providers
# when NVIDIA's JetPack index has them (the CPU wheel otherwise), and a smoke check that
# runs one camera frame through the drone node. Idempotent: steps already done are quick.
#
#   scripts/jetson_setup.sh                  # workspace ~/spinn_ws, backend onnxruntime
#   SPINN_WS=/data/ws scripts/jetson_setup.sh
#   JETSON_PIP_INDEX=https://.../jp6/cu126 scripts/jetson_setup.sh    # another JetPack wheel index
#   SKIP_SMOKE=1 scripts/jetson_setup.sh
#
# Written for JetPack 6 and checked here only statically (shellcheck): docs/deployment.md
# says what was and was not verified on a device.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WS=${SPINN_WS:-$HOME/spinn_ws}
ROS_DISTRO=${ROS_DISTRO:-humble}
# NVIDIA's pip index for JetPack 6 (torch, onnxruntime-gpu built against the JetPack CUDA/TensorRT)
JETSON_PIP_INDEX=${JETSON_PIP_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}
BACKEND=${SPINN_BACKEND:-onnxruntime}

log() { printf '[jetson] %s\n' "$*"; }
die() { printf '[jetson] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
apt_install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }

check_platform() {
    [[ $(uname -m) == aarch64 ]] || die "this is $(uname -m): the script is for a Jetson (aarch64); see docs/deployment.md"
    # shellcheck source=/dev/null
    . /etc/os-release
    [[ ${VERSION_ID:-} == 22.04 ]] || die "Ubuntu ${VERSION_ID:-?}: JetPack 6 is Ubuntu 22.04 (ROS 2 Humble)"
    if [[ -f /etc/nv_tegra_release ]]; then
        log "L4T: $(head -1 /etc/nv_tegra_release)"
    else
        log "warning: no /etc/nv_tegra_release: not a Jetson? (continuing: CPU providers only)"
    fi
}

ros_apt() {
    "${SUDO[@]}" apt-get update -qq
    if [[ -f /opt/ros/$ROS_DISTRO/setup.bash ]]; then
        log "ROS 2 $ROS_DISTRO present"
    else
        log "adding the ROS 2 apt repository and installing ros-$ROS_DISTRO-ros-base"
        apt_install curl gnupg lsb-release ca-certificates
        "${SUDO[@]}" curl -sSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key \
            -o /usr/share/keyrings/ros-archive-keyring.gpg
        echo "deb [arch=arm64 signed-by=/usr/share/keyrings/ros-archive-keyring.gpg] http://packages.ros.org/ros2/ubuntu $(lsb_release -cs) main" \
            | "${SUDO[@]}" tee /etc/apt/sources.list.d/ros2.list >/dev/null
        "${SUDO[@]}" apt-get update -qq
        apt_install "ros-$ROS_DISTRO-ros-base"
    fi
    apt_install python3-pip python3-rosdep python3-colcon-common-extensions
}

workspace() {
    mkdir -p "$WS/src"
    if [[ ! -e $WS/src/spinn_ros ]]; then
        ln -s "$REPO" "$WS/src/spinn_ros"
    fi
    [[ -f /etc/ros/rosdep/sources.list.d/20-default.list ]] || "${SUDO[@]}" rosdep init
    rosdep update --rosdistro "$ROS_DISTRO" >/dev/null
    log "rosdep: the package's ROS dependencies"
    rosdep install --from-paths "$WS/src" --ignore-src --rosdistro "$ROS_DISTRO" -y -q
}

has_on_index() {   # has_on_index PACKAGE: NVIDIA's JetPack index serves a wheel of it for this Python
    local dir rc=0
    dir=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: --index-url "$JETSON_PIP_INDEX" \
        -d "$dir" "$1" >/dev/null 2>&1 || rc=$?
    rm -rf "$dir"
    return "$rc"
}

python_deps() {
    local pip=(python3 -m pip install --user -q)
    # numpy < 2: ROS 2 Humble's cv_bridge and rclpy were built against numpy 1.x
    "${pip[@]}" "numpy<2" "ml-dtypes<0.6" onnx eclipse-zenoh lz4 zstandard PyYAML tqdm
    if python3 -c 'import torch' 2>/dev/null; then
        log "torch present: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.cuda.is_available())')"
    elif has_on_index torch; then
        log "torch from $JETSON_PIP_INDEX (CUDA build)"
        "${pip[@]}" --index-url "$JETSON_PIP_INDEX" torch
    else
        log "warning: no torch on $JETSON_PIP_INDEX: installing the CPU wheel from PyPI"
        "${pip[@]}" torch
    fi
    if python3 -c 'import onnxruntime' 2>/dev/null; then
        log "onnxruntime present"
    elif has_on_index onnxruntime-gpu; then
        log "onnxruntime-gpu from $JETSON_PIP_INDEX (TensorRT and CUDA providers)"
        "${pip[@]}" --index-url "$JETSON_PIP_INDEX" onnxruntime-gpu
    else
        log "warning: no onnxruntime-gpu on $JETSON_PIP_INDEX: the CPU wheel from PyPI (CPU provider only)"
        "${pip[@]}" onnxruntime
    fi
    python3 -c 'import onnxruntime as o; print("[jetson] onnxruntime", o.__version__, o.get_available_providers())'
}

build() {
    log "colcon build"
    (
        cd "$WS"
        set +u   # ROS setup scripts read unset variables
        # shellcheck source=/dev/null
        . "/opt/ros/$ROS_DISTRO/setup.bash"
        colcon build --packages-select spinn_ros --event-handlers console_direct-
    )
}

smoke() {
    [[ -n ${SKIP_SMOKE:-} ]] && { log "smoke check skipped (SKIP_SMOKE)"; return; }
    log "smoke check: one frame through the drone node on $BACKEND (the first run exports ONNX; TensorRT builds engines)"
    (
        cd "$WS"
        set +u
        # shellcheck source=/dev/null
        . install/setup.bash
        ros2 run spinn_ros spinn export --checkpoint default
        ros2 run spinn_ros spinn smoke --backend "$BACKEND" --timeout 600
    )
}

check_platform
if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root or sudo for apt"
    SUDO=(sudo)
fi
ros_apt
workspace
python_deps
build
smoke
log "ready: source $WS/install/setup.bash; ros2 launch spinn_ros drone.launch.py backend:=$BACKEND"
log "then re-profile this drone: ros2 run spinn_ros spinn profile --role device --backend $BACKEND (docs/deployment.md)"
