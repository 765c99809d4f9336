"""The models: packaged ones and the user's own, found by name or alias, and listed.

User-trained models (``stellar-ml-ages train SPEC --out DIR``, e.g. the paper's
LAMOST models) are used by name like the packaged ones when their directory is
``stellar_ml_ages.conf.user_model_dir`` or the ``STELLAR_ML_AGES_MODELS``
environment variable. A packaged name always means the packaged model; a user
model of the same name is reached by its card path.
"""

import os
import warnings
from functools import cache
from importlib import resources
from pathlib import Path

from astropy.table import Table

from .config import conf
from .exceptions import (
    AmbiguousColumnError,
    ColumnError,
    MissingColumnError,
    ModelError,
    ModelNotFoundError,
    StellarMLAgesWarning,
)
from .labelsource import _compatible, _scale_of
from .model import MassAgeModel, _read_card, load_model
from .reading import TableReading, read_table

__all__ = ["get_model", "list_models", "select_model", "user_model_dir"]

#: Order in which ``model=None`` tries the packaged models: the most general first.
_PREFERENCE = ("giants-apogee-dr17", "red-clump-apogee-dr17", "red-clump-seismic-apogee-dr17")


def _packaged_dir():
    return Path(str(resources.files("stellar_ml_ages") / "data" / "models"))


def _packaged_cards():
    cards = {path.stem: path for path in sorted(_packaged_dir().glob("*.json"))}
    ranked = [name for name in _PREFERENCE if name in cards]
    ranked += [name for name in cards if name not in ranked]
    return {name: cards[name] for name in ranked}


def user_model_dir():
    """The directory of user-trained models, or None when none is configured.

    ``stellar_ml_ages.conf.user_model_dir``, else the ``STELLAR_ML_AGES_MODELS``
    environment variable.

    Examples
    --------
    >>> from stellar_ml_ages import conf
    >>> from stellar_ml_ages.registry import user_model_dir
    >>> with conf.set_temp("user_model_dir", "/data/my_models"):
    ...     print(user_model_dir())
    /data/my_models
    """
    configured = str(conf.user_model_dir or os.environ.get("STELLAR_ML_AGES_MODELS", ""))
    return Path(configured).expanduser() if configured.strip() else None


def _packaged_names():
    """Every name and alias of a packaged model: what ``model="giants"`` must always mean."""
    names = set()
    for name, path in _packaged_cards().items():
        names.add(name)
        names.update(_read_card(path).get("aliases", ()))
    return names


def _user_cards():
    """{model name: card path} of the user's models.

    A user model named like a packaged model or one of its aliases is left out, with
    a warning: ``"giants"`` always means the packaged model (the user's is reached by
    its card path).
    """
    directory = user_model_dir()
    if directory is None or not directory.is_dir():
        return {}
    packaged = _packaged_names()
    cards = {}
    for path in sorted(directory.glob("*.json")):
        try:
            name = _read_card(path)["name"]
        except ModelError as error:
            # One stray or broken file must not take the packaged models down with it.
            warnings.warn(f"skipping {str(path)!r} in the user model directory: {error}",
                          StellarMLAgesWarning, stacklevel=3)
            continue
        if name in packaged:
            warnings.warn(
                f"the user model {str(path)!r} is called {name!r}, a packaged model's name or "
                "alias, which always means the packaged model; use its card path to run it, "
                "or retrain it under another name", StellarMLAgesWarning, stacklevel=3)
            continue
        cards.setdefault(name, path.resolve())
    return cards


def _all_cards():
    return {**_packaged_cards(), **_user_cards()}


def _card_path(name):
    cards = _all_cards()
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
    directory = user_model_dir()
    where = (f"user models in {str(directory)!r}" if directory is not None else
             "no user model directory (set stellar_ml_ages.conf.user_model_dir or "
             "$STELLAR_ML_AGES_MODELS)")
    raise ModelNotFoundError(
        f"no model called {name!r}; known models: {'; '.join(known) or 'none'} ({where}). "
        "A path to a model card (.json) also works." + _how_to_train(name)
    )


def _how_to_train(name):
    """For the name of a model that is trained by users (the paper's LAMOST models), how."""
    from .training.specs import LAMOST_SPECS, LEGACY_SPECS

    for spec in (*LAMOST_SPECS.values(), *LEGACY_SPECS.values()):
        if name == spec.name or name in spec.aliases:
            command = f"stellar-ml-ages train {spec.aliases[0] if spec.aliases else spec.name}"
            how = (f"'{command} --from-vo' (its LAMOST x APOKASC-2 table over TAP; or "
                   "--table FILE)" if spec.name in LAMOST_SPECS else
                   f"'{command} --data DIR' (the shared catalogs)")
            return (f" {spec.name!r} is not packaged: train it with {how}, which writes it to "
                    "the user model directory, then use it by name.")
    return ""


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
    """The first model whose input columns the table has.

    ``table`` may be an astropy table or the `~stellar_ml_ages.reading.TableReading`
    of one (then ``mapping`` is the reading's own).

    Models trained on the table's own survey (`stellar_ml_ages.labelsource`) are
    tried first, among them one trained for that survey's label noise (``giants-slam``
    for LAMOST SLAM labels), then the others; within each, packaged models from the most
    general (``giants``, for RGB and red-clump stars alike) to the most specific,
    then the user's. The red-clump models are therefore chosen only by name, as
    only the user knows that the stars are in the clump.

    Raises
    ------
    MissingColumnError
        Naming, for each packaged model, what the table lacks.
    """
    reading = table if isinstance(table, TableReading) else read_table(table, mapping)
    errors = []
    paths = list(_all_cards().values())
    source = reading.label_source
    if source is not None:
        def rank(path):
            training_set = _read_card(path).get("training_set", {})
            trained_on = training_set.get("label_source", "")
            # A model trained for this survey's noise (giants-slam for SLAM) comes
            # first, then any other on its scale, then the rest.
            for_noise = training_set.get("noise_model", {}).get("label_source") == source.name
            return (not _compatible(source.scale, _scale_of(trained_on)), not for_noise)

        paths.sort(key=rank)  # stable: the preference order holds within each group
    for path in paths:
        card = _read_card(path)
        try:
            reading.sources([f["name"] for f in card["features"]])
        except ColumnError as error:
            errors.append((card["name"], error))
            continue
        return _load_cached(path)
    if not errors:
        raise ModelNotFoundError("no packaged model is installed")
    # An ambiguity is the more actionable problem: report it as such.
    kind = next((type(e) for _, e in errors if isinstance(e, AmbiguousColumnError)),
                MissingColumnError)
    raise kind("no packaged model applies.\n"
               + "\n".join(f"model {name!r}: {error}" for name, error in errors))


def list_models():
    """Table of the packaged and user models with their features, targets and metrics.

    Returns
    -------
    `~astropy.table.Table`
        One row per model: name, aliases, features, targets (with units),
        training set and label source, number of training stars, the held-out
        median relative error and 68% interval coverage of each target, and where
        the model is (``packaged`` or the card's path).

    Examples
    --------
    >>> from stellar_ml_ages import list_models
    >>> models = list_models()
    >>> models["name"].tolist()  # doctest: +NORMALIZE_WHITESPACE
    ['giants-apogee-dr17', 'red-clump-apogee-dr17', 'red-clump-seismic-apogee-dr17',
     'giants-slam-apogee-dr17']
    """
    rows = []
    packaged = _packaged_cards()
    for name, path in _all_cards().items():
        card = _read_card(path)
        targets = card["targets"]
        rows.append({
            "name": card["name"],
            "aliases": ", ".join(card.get("aliases", ())),
            "features": ", ".join(f"{f['label']} [{f['unit'] or '-'}]" for f in card["features"]),
            "targets": ", ".join(f"{t['name']} [{t['unit']}]" for t in targets),
            "training_set": card.get("training_set", {}).get("description", ""),
            "label_source": card.get("training_set", {}).get("label_source", ""),
            "n_train": card.get("training_set", {}).get("n_train", -1),
            "median_rel_error": ", ".join(
                f"{t['name']}: {100 * t['metrics']['median_rel_error']:.1f}%" for t in targets
            ),
            # Pooled out-of-fold coverage when the card has it: a single split is noisy.
            "coverage_68": ", ".join(
                f"{t['name']}: {100 * t.get('coverage_cv', t['coverage'])['p16_p84']:.0f}%"
                for t in targets
            ),
            "location": "packaged" if name in packaged else str(path),
        })
    names = ["name", "aliases", "features", "targets", "training_set", "label_source",
             "n_train", "median_rel_error", "coverage_68", "location"]
    return Table(rows=[[row[n] for n in names] for row in rows], names=names) if rows else Table(
        names=names, dtype=[str] * 6 + [int] + [str] * 3)
