"""Where the package's data files are: config (params, SLA), profiles, launch files.

Resources come with the code that uses them: run from a source checkout, they are the
checkout's folders; installed by colcon, they are ``share/spinn_ros`` found through the
ament index. No lookup depends on the working directory.
"""
from __future__ import annotations

import functools
from pathlib import Path

PACKAGE = "spinn_ros"
_CHECKOUT = Path(__file__).resolve().parents[2]     # spinn_ros/core/resources.py -> the repository


class ResourceNotFound(FileNotFoundError):
    """A package resource that is in neither the checkout nor the installed share directory."""


@functools.lru_cache(maxsize=1)
def share_dir() -> Path:
    """The package's data root: the source checkout this code runs from, else the
    installed ``share/spinn_ros`` (ament index), else ResourceNotFound saying what was tried."""
    if (_CHECKOUT / "package.xml").is_file() and (_CHECKOUT / "config").is_dir():
        return _CHECKOUT
    installed = _ament_share_dir()
    if installed is not None:
        return installed
    raise ResourceNotFound(
        f"the {PACKAGE} data files (config/, profiles/) are in neither a source checkout ({_CHECKOUT}) "
        f"nor an installed share/{PACKAGE} on AMENT_PREFIX_PATH: source the colcon install space, "
        "or run from a clone of the repository")


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:          # a ROS-free install (pip install .)
        return None
    try:
        shared = Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, OSError):    # OSError: no AMENT_PREFIX_PATH (not a ROS shell)
        return None
    return shared if (shared / "config").is_dir() else None


def config_dir() -> Path:
    return share_dir() / "config"


def profiles_dir() -> Path:
    return share_dir() / "profiles"


def config_file(name: str) -> Path:
    """A file under config/ (e.g. ``sla.yaml``, ``drone.yaml``)."""
    return config_dir() / name
