"""spinn_ros: SPINN progressive inference for drones on ROS 2.

The generated interfaces (``spinn_ros.msg``) are installed by the rosidl build
into a different directory than these sources (for example the venv's
site-packages while the sources stay in a checkout); ``extend_path`` lets one
``spinn_ros`` package span both. On a colcon install both live in one folder and
this is a no-op.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
