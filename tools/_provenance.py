"""What the report tools record about the code they ran on."""

import subprocess

__all__ = ["git_commit"]


def git_commit():
    """The short hash of the checked-out commit, or ``"unknown"`` outside a git tree."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
