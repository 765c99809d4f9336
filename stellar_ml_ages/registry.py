"""The packaged models: finding them by name or alias, and listing them."""

from functools import cache
from importlib import resources
from pathlib import Path

from astropy.table import Table

from .columns import resolve_columns
from .exceptions import (
    AmbiguousColumnError,
    ColumnError,
    MissingColumnError,
    ModelNotFoundError,
)
from .model import MassAgeModel, _read_card, load_model

__all__ = ["get_model", "list_models", "select_model"]

#: Order in which ``model=None`` tries the packaged models: the most general first.
_PREFERENCE = ("giants-apogee-dr17", "red-clump-apogee-dr17", "red-clump-seismic-apogee-dr17")


def _packaged_dir():
    return Path(str(resources.files("stellar_ml_ages") / "data" / "models"))


def _packaged_cards():
    cards = {path.stem: path for path in sorted(_packaged_dir().glob("*.json"))}
    ranked = [name for name in _PREFERENCE if name in cards]
    ranked += [name for name in cards if name not in ranked]
    return {name: cards[name] for name in ranked}


def _card_path(name):
    cards = _packaged_cards()
    if name in cards:
        return cards[name]
    for path in cards.values():
        if name in _read_card(path).get("aliases", ()):
            return path
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate.resolve()
    known = []
    for path in cards.values():
        card = _read_card(path)
        known.append(f"{card['name']} (aliases: {', '.join(card.get('aliases', [])) or '-'})")
    raise ModelNotFoundError(
        f"no model called {name!r}; packaged models: {'; '.join(known) or 'none'}. "
        "A path to a model card (.json) also works."
    )


@cache
def _load_cached(card_path):
    return load_model(card_path)


def get_model(name):
    """Return a model by name, alias, or path to its JSON card.

    Models are loaded (and their checksums verified) on first use and cached
    for the rest of the session; importing the package loads none.

    Parameters
    ----------
    name : str, path-like or `~stellar_ml_ages.model.MassAgeModel`
        ``"giants"``, ``"red-clump"``, a full model name from `list_models`, or a
        path to a ``.json`` model card. A model instance is returned unchanged.

    Examples
    --------
    >>> from stellar_ml_ages import get_model
    >>> get_model("red-clump").target_names
    ('mass', 'age')
    """
    if isinstance(name, MassAgeModel):
        return name
    return _load_cached(_card_path(str(name)))


def select_model(table, mapping=None):
    """The first packaged model whose input columns the table has.

    Models are tried from the most general (``giants``, for RGB and red-clump
    stars alike) to the most specific; the red-clump models are therefore chosen
    only by name, as only the user knows that the stars are in the clump.

    Raises
    ------
    MissingColumnError
        Naming, for each packaged model, what the table lacks.
    """
    errors = []
    for path in _packaged_cards().values():
        card = _read_card(path)
        try:
            resolve_columns(table, [f["name"] for f in card["features"]], mapping)
        except ColumnError as error:
            errors.append((card["name"], error))
            continue
        return get_model(card["name"])
    if not errors:
        raise ModelNotFoundError("no packaged model is installed")
    # An ambiguity is the more actionable problem: report it as such.
    kind = next((type(e) for _, e in errors if isinstance(e, AmbiguousColumnError)),
                MissingColumnError)
    raise kind("no packaged model applies.\n"
               + "\n".join(f"model {name!r}: {error}" for name, error in errors))


def list_models():
    """Table of the packaged models with their features, targets and metrics.

    Returns
    -------
    `~astropy.table.Table`
        One row per model: name, aliases, features, targets (with units),
        training set, number of training stars, and the held-out median relative
        error and 68% interval coverage of each target.

    Examples
    --------
    >>> from stellar_ml_ages import list_models
    >>> models = list_models()
    >>> models["name"].tolist()
    ['giants-apogee-dr17', 'red-clump-apogee-dr17', 'red-clump-seismic-apogee-dr17']
    """
    rows = []
    for path in _packaged_cards().values():
        card = _read_card(path)
        targets = card["targets"]
        rows.append({
            "name": card["name"],
            "aliases": ", ".join(card.get("aliases", ())),
            "features": ", ".join(f"{f['label']} [{f['unit'] or '-'}]" for f in card["features"]),
            "targets": ", ".join(f"{t['name']} [{t['unit']}]" for t in targets),
            "training_set": card.get("training_set", {}).get("description", ""),
            "n_train": card.get("training_set", {}).get("n_train", -1),
            "median_rel_error": ", ".join(
                f"{t['name']}: {100 * t['metrics']['median_rel_error']:.1f}%" for t in targets
            ),
            # Pooled out-of-fold coverage when the card has it: a single split is noisy.
            "coverage_68": ", ".join(
                f"{t['name']}: {100 * t.get('coverage_cv', t['coverage'])['p16_p84']:.0f}%"
                for t in targets
            ),
        })
    names = ["name", "aliases", "features", "targets", "training_set", "n_train",
             "median_rel_error", "coverage_68"]
    return Table(rows=[[row[n] for n in names] for row in rows], names=names) if rows else Table(
        names=names, dtype=[str] * 5 + [int] + [str] * 2)
