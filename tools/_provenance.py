"""What the report tools record about the code they ran on."""

import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def git_commit():
    """The short hash of this checkout's commit, or ``"unknown"`` outside a git tree.

    Asked of the repository these tools are in, wherever they are run from.
    """
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
