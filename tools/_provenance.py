"""What the report tools record about the code they ran on."""

__all__ = ["git_commit"]


def git_commit():
    """The commit of the package the tools ran on, or ``"unknown"`` outside a checkout.

    The same stamp the training writes in a model card (``stellar_ml_ages_commit``):
    the short hash, with ``-dirty`` if a tracked ``.py`` file differs from it, so a
    report run on uncommitted code says so.
    """
    from stellar_ml_ages.training.pipeline import _source_commit

    return _source_commit() or "unknown"
