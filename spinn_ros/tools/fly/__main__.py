"""python -m spinn_ros.tools.fly: the same as `spinn fly`."""
import sys

from .cli import main

sys.exit(main())
