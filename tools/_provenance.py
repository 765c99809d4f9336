"""What the report tools record about the code they ran on."""

from pathlib import Path

__all__ = ["git_commit"]


def git_commit():
    """The commit the tools and the package they ran on are at, or ``"unknown"``.

    The same stamp the training writes in a model card (``stellar_ml_ages_commit``):
    the short hash, with ``-dirty`` if a tracked ``.py`` file differs from it, so a
    report run on uncommitted code says so. If the imported ``stellar_ml_ages`` is not
    this checkout's (an installed package, another clone), both are named.
    """
    import stellar_ml_ages
    from stellar_ml_ages.training.pipeline import _checkout_commit, _source_commit

    package = Path(stellar_ml_ages.__file__).resolve().parent
    tools = _checkout_commit(Path(__file__).resolve().parent)
    commit = _source_commit()
    if commit is not None and tools is not None and tools == _checkout_commit(package):
        return commit
    return (f"{tools[1] if tools else 'unknown'} (tools), stellar_ml_ages "
            f"{commit or stellar_ml_ages.__version__} from {package}")
