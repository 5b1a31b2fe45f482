#!/usr/bin/env bash
# requirements.lock from pyproject.toml: the exact versions scripts/setup_env.sh installs of
# the package's dependencies, all its extras and its build requirements, and of everything
# they pull in. pip resolves them (pip install --dry-run --ignore-installed --report) for the
# venv's Python (3.11, x86_64 Linux):
#   1. together with the ROS lists (requirements-ros.txt, requirements-ros2cli.txt: pinned
#      apart, installed beside the lock), so that what both pull in agrees;
#   2. then the package alone, held to what step 1 chose: the lock holds only its closure.
# Both steps are held to the current lock's pins, so regenerating keeps today's versions
# unless asked otherwise:
#
#   scripts/lock.sh                      # after editing pyproject.toml: keeps every pin that fits
#   scripts/lock.sh --upgrade            # everything to the newest versions pyproject.toml allows
#   scripts/lock.sh --upgrade NAME...    # only these packages (the others keep their pins)
#
# Needs the index (network) and a venv with pip (scripts/setup_env.sh makes .venv; PYTHON=
# picks another interpreter). Then run scripts/setup_env.sh to install what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOCK=requirements.lock
WORK=build/lock

command -v "$PY" >/dev/null || { echo "lock: no $PY (run scripts/setup_env.sh first, or set PYTHON=)" >&2; exit 1; }

upgrade_all=0
upgrade=()
if [[ ${1:-} == --upgrade ]]; then
  shift
  if (($#)); then upgrade=("$@"); else upgrade_all=1; fi
elif (($#)); then
  echo "usage: scripts/lock.sh [--upgrade [NAME...]]" >&2; exit 2
fi

rm -rf "$WORK" && mkdir -p "$WORK"

# the current pins as constraints, less those asked to move
if [[ -f $LOCK ]] && ((!upgrade_all)); then
  "$PY" - "$LOCK" "$WORK/held.txt" "${upgrade[@]}" <<'EOF'
import re, sys
lock, out, *moving = sys.argv[1:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
moving = {norm(n) for n in moving}
held = [line.split("#")[0].strip() for line in open(lock)]
held = [p for p in held if "==" in p and norm(p.split("==")[0]) not in moving]
open(out, "w").write("".join(p + "\n" for p in held))
EOF
else
  : >"$WORK/held.txt"
fi

# what to resolve: the package with every extra, and its build requirements. The package
# from a copy (pyproject.toml + spinn_ros/): its metadata build leaves a spinn_ros.egg-info
# beside the sources, which in the checkout would shadow the editable install's record.
mkdir -p "$WORK/src"
cp pyproject.toml "$WORK/src/" && cp -r spinn_ros "$WORK/src/"
mapfile -t TARGETS < <("$PY" - "$WORK/src" <<'EOF'
import sys, tomllib
data = tomllib.load(open("pyproject.toml", "rb"))
print(sys.argv[1] + "[" + ",".join(sorted(data["project"].get("optional-dependencies", {}))) + "]")
print(*data["build-system"]["requires"], sep="\n")
EOF
)

resolve() {   # resolve REPORT ARGS...: pip's resolution, no install
  local report=$1; shift
  # (the filter hides pip's notes about this machine's local wheel mirrors)
  "$PY" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
    --report "$report" "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}

echo "lock: resolving ${TARGETS[*]} with the ROS lists"
resolve "$WORK/joint.json" -c "$WORK/held.txt" -r requirements-ros.txt -r requirements-ros2cli.txt "${TARGETS[@]}"
"$PY" - "$WORK/joint.json" "$WORK/joint.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report["install"]
        if "dir_info" not in i["download_info"]]      # not the package itself
open(sys.argv[2], "w").write("".join(p + "\n" for p in pins))
EOF

echo "lock: resolving the package alone, held to that"
resolve "$WORK/package.json" -c "$WORK/joint.txt" "${TARGETS[@]}"

"$PY" - "$WORK/package.json" "$LOCK" <<'EOF'
import json, re, sys, tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

report_path, lock = sys.argv[1:]
report = json.load(open(report_path))
data = tomllib.load(open("pyproject.toml", "rb"))
project = data["project"]

# which of pyproject's requirements each pin answers (a note on the line)
why = {}
for label, reqs in [(project["name"], project["dependencies"]),
                    *((f"{project['name']}[{e}]", r) for e, r in project.get("optional-dependencies", {}).items()),
                    ("build-system", data["build-system"]["requires"])]:
    for r in reqs:
        why.setdefault(canonicalize_name(Requirement(r).name), []).append(label)

lines = []
for item in report["install"]:
    if "dir_info" in item["download_info"]:
        continue                                          # the package itself
    name, ver = item["metadata"]["name"], item["metadata"]["version"]
    notes = why.get(canonicalize_name(name), [])
    if "+" in ver:
        # a local build (torch's +cpu wheel here): pin the version, any build of it fits
        notes.append(f"resolved {ver}")
        ver = ver.split("+")[0]
    line = f"{name}=={ver}"
    lines.append((canonicalize_name(name), line + (f"  # {', '.join(notes)}" if notes else "")))

header = f"""\
# requirements.lock: the exact versions scripts/setup_env.sh installs (Python 3.11, x86_64
# Linux) of pyproject.toml's dependencies, all its extras ({", ".join(sorted(project.get("optional-dependencies", {})))}),
# its build requirements (the editable install builds without isolation) and everything they
# pull in. The ROS 2 wheels are pinned apart: requirements-ros.txt, requirements-ros2cli.txt.
#
# GENERATED by scripts/lock.sh (pip {version("pip")}: pip install --dry-run --ignore-installed
# --report, resolved together with the ROS lists and held to this file's pins); do not edit.
# Regenerate after editing pyproject.toml (test_package checks they agree):
#   scripts/lock.sh                      # keeps every pin that still fits
#   scripts/lock.sh --upgrade [NAME...]  # everything (or only NAME...) to the newest allowed
# Use: pip install -r requirements.lock (what scripts/setup_env.sh does), or as constraints:
#   pip install -c requirements.lock ".[onnx]"
"""
with open(lock, "w") as f:
    f.write(header + "".join(line + "\n" for _, line in sorted(lines)))
print(f"lock: wrote {lock} ({len(lines)} pins)")
EOF
