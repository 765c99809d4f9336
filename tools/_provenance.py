"""What the report tools record about the code they ran on."""

import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def _toplevel(directory):
    try:
        return Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                                   text=True, check=True, cwd=directory,
                                   timeout=30).stdout.strip()).resolve()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit():
    """The commit the tools and the package they ran on are at, or ``"unknown"``.

    The same stamp the training writes in a model card (``stellar_ml_ages_commit``):
    the short hash, with ``-dirty`` if a tracked ``.py`` file differs from it, so a
    report run on uncommitted code says so. If the imported ``stellar_ml_ages`` is not
    this checkout's (an installed package, another clone), both are named.
    """
    import stellar_ml_ages
    from stellar_ml_ages.training.pipeline import _source_commit

    package = Path(stellar_ml_ages.__file__).resolve().parent
    tools_top = _toplevel(Path(__file__).resolve().parent)
    commit = _source_commit()
    if commit is not None and tools_top is not None and tools_top == _toplevel(package):
        return commit
    here = Path(__file__).resolve().parent
    try:
        tools_commit = subprocess.run(["git", "rev-parse", "--short=9", "HEAD"],
                                      capture_output=True, text=True, check=True, cwd=here,
                                      timeout=30).stdout.strip()
        modified = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                   "--", ":/*.py"], capture_output=True, text=True,
                                  check=True, cwd=here, timeout=30).stdout.strip()
        tools_commit += "-dirty" if modified else ""
    except (OSError, subprocess.SubprocessError):
        tools_commit = "unknown"
    return (f"{tools_commit} (tools), stellar_ml_ages "
            f"{commit or stellar_ml_ages.__version__} from {package}")
