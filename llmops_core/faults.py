"""Named kill points for crash-resume tests.

``kill_point("rollout.hooks.before")`` does nothing unless the environment
variable :data:`KILL_ENV` names that point, in which case the process kills
itself with SIGKILL right there, exactly like a node losing power. Tests set
it on a subprocess to prove that every side effect converges on a rerun.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "LLMOPS_KILL_AT"  # comma-separated point names


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$LLMOPS_KILL_AT`` lists ``name``."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
