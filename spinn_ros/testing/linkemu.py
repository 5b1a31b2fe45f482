"""The guard every link-emulation test and benchmark calls first."""
from __future__ import annotations

import os
import sys

from ..linkemu import LinkEmuUnavailable, link_emulation_problem

#: set to 1 to skip (not fail) link-emulation tests on a machine without root
ALLOW_NO_ROOT_ENV = "SPINN_ALLOW_NO_ROOT"


def require_root() -> None:
    """For tests: fail LOUDLY when link emulation is impossible here.

    With SPINN_ALLOW_NO_ROOT=1 the test is skipped instead (still with the reason);
    outside pytest LinkEmuUnavailable is raised.
    """
    problem = link_emulation_problem()
    if problem is None:
        return
    message = (f"LINK EMULATION UNAVAILABLE - this test did NOT run: {problem}. "
               f"Run as root with iproute2/iptables/NetfilterQueue "
               f"(scripts/install_system_deps.sh), or set {ALLOW_NO_ROOT_ENV}=1 to skip.")
    if "pytest" not in sys.modules:
        raise LinkEmuUnavailable(message)
    import pytest

    if os.environ.get(ALLOW_NO_ROOT_ENV) == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)

