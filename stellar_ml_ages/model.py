"""A trained mass/age model: JSON model card plus plain arrays.

An artifact is two files side by side:

``NAME.json``
    The model card: features (with units, training means, standard deviations and
    ranges), targets (with units, the output transform, the uncertainty
    calibration and the held-out metrics), training set, hyperparameters,
    software versions, citation, the sha256 of the array file, and (format 3)
    ``card_sha256``, the sha256 of the card's own content, so an edited card is
    refused as surely as a corrupted array file.
``NAME.npz``
    The forests, the hull vertices and (format 4) the neural networks of targets
    whose card entry has a ``network``, as NumPy arrays. It is read with
    ``allow_pickle=False`` only after its checksum matched the card.

Before either checksum is trusted the card is checked against its schema
(`validate_card`): known feature names, finite statistics with positive
standard deviations, finite calibration tables, a plain array file name. A
model in memory (`MassAgeModel.to_payload`) travels as the same two parts.
"""

import hashlib
import io
import json
import warnings
import zipfile
from functools import cached_property
from pathlib import Path

import astropy.units as u
import numpy as np

from ._rowwise import row_products
from .evstate import normalize_states
from .exceptions import (
    ModelChecksumError,
    ModelError,
    ModelFormatError,
    ModelIntegrityWarning,
    ModelNotFoundError,
    ModelVersionError,
)
from .features import FEATURES
from .forest import CompactForest
from .hull import ConvexHullDomain
from .network import CompactNetwork
from .reference_prior import group_robust_quantiles, interp_levels

__all__ = ["FORMAT_VERSION", "MassAgeModel", "card_checksum", "load_model", "load_model_payload",
           "row_normal_deviates", "row_products", "sha256_of", "spread_factor", "validate_card",
           "with_oblique_inputs"]

#: Newest card format this version of the package reads and writes. Version 2 adds
#: calibration by evolutionary state and predicted value, calibrated ranges and the
#: training labels' noise; version 3 the card's own checksum (``card_sha256``);
#: version 4 the networks beside the forest; version 5 the calibration's spread
#: along one input (``spread_factor``); version 6 robust levels recalibrated along
#: one input (`stellar_ml_ages.reference_prior.levels_along`).
#: Version 1 and 2 cards still load, after the same schema checks.
FORMAT_VERSION = 6
#: The first format whose targets may carry a ``network`` (`stellar_ml_ages.network`).
_NETWORK_VERSION = 4
#: The first format whose calibrations may carry a ``spread`` (`spread_factor`): an
#: older reader would ignore it and give intervals too narrow where it exceeds 1.
_SPREAD_VERSION = 5
#: The first format whose reference priors may carry levels ``along`` an input: an
#: older reader would use the state's levels everywhere.
_ALONG_VERSION = 6
#: Relative margin within which an input error counts as the training labels' noise.
_SAME_NOISE = 1e-3
#: From this format on, the card carries ``card_sha256`` and the loader requires it.
_CHECKSUM_VERSION = 3

_REQUIRED_CARD_KEYS = ("format_version", "name", "features", "targets", "arrays")


def sha256_of(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_checksum(card):
    """sha256 of a card's content: canonical JSON of everything but ``card_sha256``.

    Examples
    --------
    >>> from stellar_ml_ages import get_model
    >>> from stellar_ml_ages.model import card_checksum
    >>> card = get_model("giants").card
    >>> card_checksum(card) == card["card_sha256"]
    True
    """
    content = {key: value for key, value in card.items() if key != "card_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _finite_number(value, what):
    """One finite real number (not a bool, list or string), as float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ModelFormatError(f"{what} must be a finite number, got {value!r:.80}")
    return float(value)


def _finite_numbers(values, what):
    array = np.asarray(values, dtype=object)
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{what} must be numbers, got {array!r:.80}") from None
    if any(isinstance(v, bool) for v in array.ravel()) or not np.all(np.isfinite(numbers)):
        raise ModelFormatError(f"{what} must be finite numbers, got {values!r:.80}")
    return numbers


def _is_histogram(edges, values):
    """At least two increasing edges and one non-negative value per bin."""
    return (len(edges) >= 2 and len(values) == len(edges) - 1
            and bool(np.all(np.diff(edges) > 0)) and bool(np.all(values >= 0)))


def validate_card(card, where="model card"):
    """Check a model card against its schema; raise `ModelFormatError` naming the field.

    Parameters
    ----------
    card : dict
    where : str
        How to name the card in messages (its path).

    Examples
    --------
    >>> import copy
    >>> from stellar_ml_ages import get_model
    >>> from stellar_ml_ages.model import validate_card
    >>> card = copy.deepcopy(get_model("giants").card)
    >>> card["features"][1]["std"] = float("inf")
    >>> validate_card(card)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stellar_ml_ages.exceptions.ModelFormatError: model card: feature 'teff' std must be a finite...
    """
    from .features import FEATURES

    def need(condition, message):
        if not condition:
            raise ModelFormatError(f"{where}: {message}")

    need(isinstance(card.get("name"), str) and card["name"].strip(), "no model name")
    features = card.get("features")
    need(isinstance(features, list) and features, "'features' must be a non-empty list")
    seen = set()
    for entry in features:
        need(isinstance(entry, dict), "each feature must be an object")
        name = entry.get("name")
        need(name in FEATURES, f"unknown feature {name!r}; known: {', '.join(sorted(FEATURES))}")
        need(name not in seen, f"feature {name!r} appears twice")
        seen.add(name)
        stats = {}
        for key in ("mean", "std", "min", "max"):
            need(key in entry, f"feature {name!r} lacks {key!r}")
            stats[key] = _finite_number(entry[key], f"{where}: feature {name!r} {key}")
        need(stats["std"] > 0, f"feature {name!r} std must be positive, got {stats['std']}")
        need(stats["min"] <= stats["mean"] <= stats["max"],
             f"feature {name!r} mean {stats['mean']} is outside its [min, max]")
        low, high = FEATURES[name].valid_range
        need(low < stats["mean"] < high,
             f"feature {name!r} mean {stats['mean']} is not a possible {FEATURES[name].label} "
             f"in {FEATURES[name].unit.to_string() or 'dex'} (features swapped?)")
        if "training_noise" in entry:
            noise = _finite_number(entry["training_noise"],
                                   f"{where}: feature {name!r} training_noise")
            need(noise >= 0, f"feature {name!r} training_noise is negative")
    distribution = card.get("training_set", {}).get("feature_distribution", {})
    if isinstance(distribution, dict) and "mean" in distribution:
        recorded = _finite_numbers(distribution["mean"],
                                   f"{where}: training_set feature_distribution mean")
        means = np.array([entry["mean"] for entry in features], dtype=np.float64)
        need(len(recorded) == len(means)
             and np.allclose(recorded, means, rtol=1e-9, atol=1e-12),
             "features do not match training_set.feature_distribution (reordered or edited "
             "feature entries?)")
    oblique = card.get("oblique_inputs", [])
    need(isinstance(oblique, list), "'oblique_inputs' must be a list")
    # A feature's residual names the feature; a target direction its ln target.
    directions = {f"ln {target.get('name')}" for target in card.get("targets") or []
                  if isinstance(target, dict)}
    for entry in oblique:
        need(isinstance(entry, dict) and (entry.get("of") in seen
                                          or entry.get("of") in directions),
             f"oblique input {entry.get('name') if isinstance(entry, dict) else entry!r} must "
             "name one of the card's features (or 'ln <target>') in 'of'")
        weights = _finite_numbers(entry.get("weights", []),
                                  f"{where}: oblique input {entry['of']!r} weights")
        need(len(weights) == len(features),
             f"oblique input {entry['of']!r} has {len(weights)} weights for {len(features)} "
             "features")
        _finite_number(entry.get("offset"), f"{where}: oblique input {entry['of']!r} offset")
        scale = _finite_number(entry.get("scale"), f"{where}: oblique input {entry['of']!r} scale")
        need(scale > 0, f"oblique input {entry['of']!r} scale must be positive, got {scale}")
    targets = card.get("targets")
    need(isinstance(targets, list) and targets, "'targets' must be a non-empty list")
    for target in targets:
        need(isinstance(target, dict) and isinstance(target.get("name"), str),
             "each target must be an object with a name")
        what = f"target {target['name']!r}"
        try:
            u.Unit(target.get("unit"))
        except (TypeError, ValueError):
            need(False, f"{what} has no valid unit ({target.get('unit')!r})")
        calibration = target.get("calibration")
        if calibration is not None:
            need(isinstance(calibration, dict), f"{what} calibration must be an object")
            for key in ("probability", "z"):
                if key in calibration:
                    _finite_numbers(calibration[key], f"{where}: {what} calibration {key}")
            probability = np.asarray(calibration.get("probability", []), dtype=np.float64)
            need(np.all((probability > 0) & (probability < 1))
                 and np.all(np.diff(probability) > 0),
                 f"{what} calibration probabilities must increase within (0, 1)")
            tables = [("pooled", calibration.get("z", []))]
            for group, entry in (calibration.get("bins") or {}).items():
                need(isinstance(entry, dict),
                     f"{what} calibration bins {group!r} must be an object")
                for key in ("centre", "z"):
                    if key in entry:
                        _finite_numbers(entry[key], f"{where}: {what} calibration bins {key}")
                need(np.all(np.diff(np.asarray(entry.get("centre", []), dtype=np.float64)) > 0),
                     f"{what} calibration bins {group!r}: centres must increase")
                tables += [(f"bins {group!r}", z) for z in entry.get("z", [])]
            for label, z in tables:
                z = np.asarray(z, dtype=np.float64)
                if not len(z):
                    continue
                # Quantile offsets grow with probability, with the point estimate between
                # the lower and upper ones: a negated or shuffled table fails here.
                need(len(z) == len(probability) and np.all(np.diff(z) >= 0)
                     and np.all(z[probability < 0.5] <= 0) and np.all(z[probability > 0.5] >= 0),
                     f"{what} calibration {label} offsets must be one per probability, "
                     "non-decreasing, <= 0 below the median and >= 0 above it")
            spread = calibration.get("spread")
            if spread is not None:
                need(isinstance(spread, dict) and spread.get("feature") in seen,
                     f"{what} calibration spread must be an object naming one of the card's "
                     "features")
                centre = _finite_numbers(spread.get("centre", []),
                                         f"{where}: {what} calibration spread centre")
                factor = _finite_numbers(spread.get("factor", []),
                                         f"{where}: {what} calibration spread factor")
                need(len(centre) >= 1 and len(centre) == len(factor)
                     and np.all(np.diff(centre) > 0) and np.all(factor > 0),
                     f"{what} calibration spread needs increasing centres and one positive "
                     "factor per centre")
                need(card.get("format_version", _SPREAD_VERSION) >= _SPREAD_VERSION,
                     f"{what} has a calibration spread, which needs format_version >= "
                     f"{_SPREAD_VERSION}")
        if "calibrated_range" in target:
            _finite_numbers(target["calibrated_range"], f"{where}: {what} calibrated_range")
        network = target.get("network")
        if network is not None:
            need(isinstance(network, dict), f"{what} network must be an object")
            share = _finite_number(network.get("weight"), f"{where}: {what} network weight")
            need(0 < share <= 1, f"{what} network weight must be in (0, 1], got {share}")
            members, shape = network.get("members"), network.get("shape")
            need(isinstance(members, int) and not isinstance(members, bool) and members > 0,
                 f"{what} network members must be a positive integer, got {members!r}")
            need(isinstance(shape, list) and len(shape) >= 3 and shape[-1] == 1
                 and all(isinstance(n, int) and n > 0 for n in shape),
                 f"{what} network shape must list its layer widths, inputs to one output, "
                 f"got {shape!r}")
            need(card.get("format_version", _NETWORK_VERSION) >= _NETWORK_VERSION,
                 f"{what} has a network, which needs format_version >= {_NETWORK_VERSION}")
        prior = target.get("prior")
        if prior is not None:
            need(isinstance(prior, dict), f"{what} prior must be an object")
            edges = _finite_numbers(prior.get("log_edges", []), f"{where}: {what} prior edges")
            fraction = _finite_numbers(prior.get("fraction", []),
                                       f"{where}: {what} prior fraction")
            need(_is_histogram(edges, fraction) and abs(fraction.sum() - 1) < 1e-6,
                 f"{what} prior needs increasing edges and one non-negative fraction per "
                 "bin, summing to 1")
        reference = target.get("reference_prior")
        if reference is not None:
            need(isinstance(reference, dict) and isinstance(reference.get("groups"), dict)
                 and "all" in reference["groups"],
                 f"{what} reference_prior needs groups, \"all\" among them")
            n_levels = len((target.get("calibration") or {}).get("probability", []))
            powers = set()
            for group, entry in reference["groups"].items():
                label = f"{what} reference_prior group {group!r}"
                need(isinstance(entry, dict), f"{label} must be an object")
                edges = _finite_numbers(entry.get("log_edges", []), f"{where}: {label} edges")
                density = _finite_numbers(entry.get("density", []),
                                          f"{where}: {label} density")
                need(_is_histogram(edges, density) and density.max() > 0,
                     f"{label} needs increasing edges and one non-negative density per bin")
                if "prior_power" in entry:
                    power = entry["prior_power"]
                    need(isinstance(power, (int, float)) and not isinstance(power, bool)
                         and np.isfinite(power) and power >= 1,
                         f"{label} prior_power must be a number >= 1")
                powers.add(entry.get("prior_power", 1.0))
                if "log_range" in entry:
                    bounds = _finite_numbers(entry["log_range"], f"{where}: {label} log_range")
                    need(len(bounds) == 2 and bounds[0] < bounds[1],
                         f"{label} log_range must be two increasing numbers")
                for side in ("lower_level", "upper_level"):
                    level = _finite_numbers(entry.get(side, []), f"{where}: {label} {side}")
                    need(len(level) == n_levels and np.all(np.diff(level) >= 0)
                         and np.all((level > 0) & (level < 1)),
                         f"{label} needs one non-decreasing {side} in (0, 1) per "
                         "calibration probability")
                along = entry.get("along")
                if along is not None:
                    need(isinstance(along, dict) and isinstance(along.get("feature"), str)
                         and along["feature"] in seen,
                         f"{label} along must be an object naming one of the card's features")
                    centre = _finite_numbers(along.get("centre", []),
                                             f"{where}: {label} along centre")
                    need(len(centre) >= 1 and np.all(np.diff(centre) > 0),
                         f"{label} along needs increasing centres")
                    counts = along.get("n")
                    need(isinstance(counts, list) and len(counts) == len(centre)
                         and all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                 for c in counts),
                         f"{label} along needs one positive star count n per centre")
                    for side in ("lower_level", "upper_level"):
                        table = along.get(side)
                        need(isinstance(table, list) and len(table) == len(centre),
                             f"{label} along needs one {side} row per centre")
                        for row in table:
                            level = _finite_numbers(row, f"{where}: {label} along {side}")
                            need(len(level) == n_levels and np.all(np.diff(level) >= 0)
                                 and np.all((level > 0) & (level < 1)),
                                 f"{label} along needs rows of one non-decreasing {side} "
                                 "in (0, 1) per calibration probability")
                    need(card.get("format_version", _ALONG_VERSION) >= _ALONG_VERSION,
                         f"{label} has levels along a feature, which needs format_version "
                         f">= {_ALONG_VERSION}")
            # One power per target, the one its choice (if recorded) says.
            choice = reference.get("prior_power_choice")
            need(len(powers) <= 1 and (choice is None or (
                isinstance(choice, dict) and powers <= {choice.get("power")})),
                 f"{what} reference_prior groups need one prior_power, the one its "
                 "prior_power_choice records")
    arrays = card.get("arrays")
    need(isinstance(arrays, dict), "'arrays' must be an object")
    if arrays:  # a model being assembled in memory has none yet
        file_name = arrays.get("file")
        need(isinstance(file_name, str) and file_name == Path(file_name).name
             and file_name.endswith(".npz") and not file_name.startswith("."),
             f"array file name {file_name!r} must be a plain NAME.npz beside the card")
        digest = arrays.get("sha256")
        need(isinstance(digest, str) and len(digest) == 64
             and all(c in "0123456789abcdef" for c in digest),
             "array sha256 must be 64 lower-case hex digits")


def _mix64(values):
    """The splitmix64 finaliser: a bijective, well-mixing map of uint64 words."""
    values = np.asarray(values, dtype=np.uint64)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _mean_over_draws(values):
    """Mean of a list of per-row arrays, summed in list order.

    ``numpy.mean(axis=0)`` of a stack sums pairwise where the reduced axis is
    contiguous (a one-row table) and in order otherwise, so a star's last bits would
    depend on how many rows came with it.
    """
    total = np.array(values[0], dtype=np.float64)
    for value in values[1:]:
        total += value
    return total / len(values)


def spread_factor(spread, values):
    """A card's spread factor at ``values`` of its feature (canonical units).

    The predictive sigma of a target with a ``calibration["spread"]`` entry is the
    forest's times this factor: linear in the feature between the bins' centres and
    held beyond the outer ones, as the calibration's bins of predicted value are.

    Parameters
    ----------
    spread : dict
        ``{"feature": name, "centre": [...], "factor": [...]}`` (the card's entry).
    values : array-like
        The feature's values, in its canonical unit.

    Returns
    -------
    ndarray
        The factor per value (NaN where the value is NaN).

    Examples
    --------
    >>> spread_factor({"feature": "logg", "centre": [1.8, 2.4, 3.0],
    ...                "factor": [1.5, 1.0, 0.8]}, [1.0, 2.1, 3.3])
    array([1.5 , 1.25, 0.8 ])
    """
    return np.interp(np.asarray(values, dtype=np.float64),
                     np.asarray(spread["centre"], dtype=np.float64),
                     np.asarray(spread["factor"], dtype=np.float64))


def row_normal_deviates(rows, seed, n_draws, n_columns):
    """Standard normal deviates, shape (n_draws, n_rows, n_columns), each row's a
    function of that row's values and ``seed`` only.

    The row's float64 bits are hashed (splitmix64) into a key, and draw ``k``,
    column ``j`` of the row is the normal quantile of a uniform number hashed from
    the key and ``(k, j)``: the same star gets the same draws in any table, block or
    Dask partition, and different stars independent ones.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.model import row_normal_deviates
    >>> rows = np.array([[4700.0, 2.4], [4800.0, 2.6]])
    >>> alone = row_normal_deviates(rows[1:], seed=0, n_draws=3, n_columns=2)
    >>> together = row_normal_deviates(rows, seed=0, n_draws=3, n_columns=2)
    >>> bool(np.array_equal(alone[:, 0], together[:, 1]))
    True
    """
    from scipy.special import ndtri

    values = np.asarray(rows, dtype=np.float64)
    if len(values) == 0:  # no row to draw for (a block where nothing is predicted)
        return np.zeros((n_draws, 0, n_columns))
    bits = np.ascontiguousarray(np.nan_to_num(values, nan=0.0))
    bits = bits.reshape(len(bits), -1).view(np.uint64)
    with np.errstate(over="ignore"):
        key = np.full(len(bits), _mix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)))
        for column in bits.T:
            key = _mix64(key ^ column)
        counters = np.arange(1, n_draws * n_columns + 1, dtype=np.uint64) \
            * np.uint64(0x9E3779B97F4A7C15)
        words = _mix64(key[None, :] + counters[:, None])  # (n_draws * n_columns, n_rows)
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return ndtri(uniform).reshape(n_draws, n_columns, len(bits)).transpose(0, 2, 1)


def with_oblique_inputs(standardized, entries):
    """Standardised features followed by the oblique inputs ``entries`` describe.

    An oblique input is a feature less its linear fit on the other features, in
    z-scores: ``(z @ weights + offset) / scale``. Teff at fixed log g and
    composition, say, tracks mass along the giant branch, and axis-aligned splits
    can only approximate it by staircases. The hull stays on the features.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.model import with_oblique_inputs
    >>> entry = {"of": "teff", "weights": [1.0, -0.5], "offset": 0.0, "scale": 0.5}
    >>> with_oblique_inputs(np.array([[1.0, 2.0]]), [entry])
    array([[1., 2., 0.]])
    """
    standardized = np.asarray(standardized, dtype=np.float64)
    if not entries:
        return standardized
    columns = [(row_products(standardized, entry["weights"]) + float(entry["offset"]))
               / float(entry["scale"]) for entry in entries]
    return np.column_stack([standardized, *columns])


def _stood_in_for(label):
    """Training labels that ``label`` can be read as: its counterpart ([N/M] for [N/Fe])
    and the features it substitutes for ([Mg/Fe] for [α/M])."""
    if label not in FEATURES:
        return []
    names = [FEATURES[label].counterpart] if FEATURES[label].counterpart else []
    return names + [feature.name for feature in FEATURES.values() if label in feature.substitutes]


class MassAgeModel:
    """A trained model: standardisation, applicability domain and one forest per target.

    Use `load_model` or `stellar_ml_ages.get_model` to obtain one; the training
    pipeline builds them with `MassAgeModel.from_parts`.

    Parameters
    ----------
    card : dict
        The model card (see the module docstring).
    forests : dict
        Target name to `~stellar_ml_ages.forest.CompactForest`.
    domain : `~stellar_ml_ages.hull.ConvexHullDomain`
        Hull of the standardised training features.
    networks : dict, optional
        Target name to `~stellar_ml_ages.network.CompactNetwork`, for the targets
        whose card entry has a ``network``: their point estimate blends the forest's
        with the networks' (`point_and_variance`).

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages import get_model
    >>> model = get_model("red-clump-seismic")
    >>> model.target_names, model.feature_names[:3]
    (('mass', 'age'), ('c_n', 'dnu', 'logg'))
    >>> means = np.array([[f["mean"] for f in model.card["features"]]])
    >>> bool(model.in_hull(means)[0])
    True
    >>> mass = model.predict(means)["mass"]
    >>> bool(mass[0.16][0] < mass["value"][0] < mass[0.84][0])
    True
    """

    def __init__(self, card, forests, domain, networks=None):
        self.card = card
        self.forests = forests
        self.networks = dict(networks or {})
        self.domain = domain
        n_features = len(self.feature_names)
        if domain.n_dim != n_features:
            raise ModelFormatError(
                f"model {self.name!r}: hull has {domain.n_dim} dimensions for {n_features} features"
            )
        for target in self.target_names:
            if target not in forests:
                raise ModelFormatError(f"model {self.name!r}: no forest for target {target!r}")
            n_inputs = n_features + len(card.get("oblique_inputs", []))
            wants_network = "network" in self.target(target)
            if wants_network != (target in self.networks):
                raise ModelFormatError(
                    f"model {self.name!r}, target {target!r}: the card "
                    f"{'names' if wants_network else 'does not name'} a network, the arrays "
                    f"{'have one' if target in self.networks else 'have none'}")
            try:
                forests[target].validate(n_inputs)
                if wants_network:
                    network, entry = self.networks[target], self.target(target)["network"]
                    network.validate(n_inputs)
                    if (network.n_members, list(network.shape)) != (entry["members"],
                                                                    entry["shape"]):
                        raise ValueError(
                            f"the card's network has {entry['members']} members of shape "
                            f"{entry['shape']}, the arrays {network.n_members} of shape "
                            f"{list(network.shape)}")
            except ValueError as error:
                raise ModelFormatError(f"model {self.name!r}, target {target!r}: {error}") from None
        strays = sorted(set(self.networks) - set(self.target_names))
        if strays:
            raise ModelFormatError(f"model {self.name!r}: networks for {strays}, which the card "
                                   "does not list as targets")

    def __repr__(self):
        return (
            f"<MassAgeModel {self.name!r}: {', '.join(self.target_names)} from "
            f"{', '.join(self.feature_labels)}>"
        )

    # ------------------------------------------------------------------ card
    @property
    def name(self):
        return self.card["name"]

    @property
    def aliases(self):
        return tuple(self.card.get("aliases", ()))

    @property
    def feature_names(self):
        return tuple(f["name"] for f in self.card["features"])

    @property
    def feature_labels(self):
        return tuple(f["label"] for f in self.card["features"])

    @property
    def target_names(self):
        return tuple(t["name"] for t in self.card["targets"])

    def target(self, name):
        """The card entry of one target."""
        for entry in self.card["targets"]:
            if entry["name"] == name:
                return entry
        raise KeyError(f"model {self.name!r} has no target {name!r}")

    def target_unit(self, name):
        return u.Unit(self.target(name)["unit"])

    @cached_property
    def _scaling(self):
        mean = np.array([f["mean"] for f in self.card["features"]], dtype=np.float64)
        scale = np.array([f["std"] for f in self.card["features"]], dtype=np.float64)
        return mean, scale

    @cached_property
    def feature_bounds(self):
        low = np.array([f["min"] for f in self.card["features"]], dtype=np.float64)
        high = np.array([f["max"] for f in self.card["features"]], dtype=np.float64)
        return low, high

    # ------------------------------------------------------------ numerics
    def standardize(self, features):
        """z-scores of features given in canonical units, shape (n_rows, n_features)."""
        mean, scale = self._scaling
        return (np.asarray(features, dtype=np.float64) - mean) / scale

    def forest_inputs(self, standardized):
        """What the forests split on: the z-scores, then the card's oblique inputs
        (``stellar_ml_ages.model.with_oblique_inputs``)."""
        return with_oblique_inputs(standardized, self.card.get("oblique_inputs", []))

    def in_range(self, features):
        """Whether every feature lies inside the training [min, max]."""
        low, high = self.feature_bounds
        features = np.asarray(features, dtype=np.float64)
        return np.all((features >= low) & (features <= high), axis=1)

    def in_hull(self, features):
        """Whether each row lies inside the convex hull of the standardised training set."""
        return self.domain.contains(self.standardize(features))

    def _offset_table(self, target, mean, states, probabilities=None):
        """Calibrated z offsets per row at ``probabilities``: (n_probabilities, n_rows).

        ``probabilities`` defaults to the card's calibration grid. Rows of a state
        with its own calibration use it, the others the pooled ``"all"`` bins; within
        a group the offsets are interpolated linearly in the predicted value between
        the bins' centres. Cards without bins (format 1) give every row the pooled
        offsets. The (small) tables are interpolated to ``probabilities`` first, so
        the per-row work grows with the probabilities asked for, not the grid.
        """
        calibration = self.target(target)["calibration"]
        grid = np.asarray(calibration["probability"], dtype=np.float64)
        probabilities = grid if probabilities is None else probabilities

        def at_probabilities(offsets):  # (..., n_grid) -> (..., n_probabilities)
            offsets = np.atleast_2d(np.asarray(offsets, dtype=np.float64))
            return self._interp_probabilities(grid, offsets.T, probabilities).T

        pooled = at_probabilities(calibration["z"])[0]
        mean = np.asarray(mean, dtype=np.float64)
        # Rows of a group the card lacks (even "all") keep the pooled offsets.
        table = np.repeat(pooled[:, None], len(mean), axis=1)
        bins = calibration.get("bins")
        if not bins:
            return table
        group_of_row = np.full(len(mean), "all", dtype=object)
        if states is not None:
            states = normalize_states(states)
            for group in bins:
                if group != "all":
                    group_of_row[states == group] = group
        for group, entry in bins.items():
            rows = group_of_row == group
            if not rows.any():
                continue
            centres = np.asarray(entry["centre"], dtype=np.float64)
            offsets = at_probabilities(entry["z"])  # (n_bins, n_probabilities)
            for k in range(offsets.shape[1]):
                table[k, rows] = np.interp(mean[rows], centres, offsets[:, k])
        return table

    #: Linear interpolation of each column of a (n_cal, n_rows) table at probabilities.
    _interp_probabilities = staticmethod(interp_levels)

    def predictive_cdf(self, target, features, values, chunk_size=20_000, states=None):
        """Probability that ``target`` is at most ``values``, under the calibrated prediction.

        Used for probability-integral-transform (PIT) histograms: for calibrated
        predictions, the CDF evaluated at the true values is uniform on [0, 1].
        Beyond the outermost calibrated quantiles the CDF is clipped to them.

        Parameters
        ----------
        target : str
        features : array-like, shape (n_rows, n_features)
            Canonical-unit inputs.
        values : array-like, shape (n_rows,)
            Target values in the target's unit.
        states : array-like of str, optional
            Evolutionary state of each row (``"RGB"``, ``"RC"``), selecting its calibration.

        Returns
        -------
        ndarray, shape (n_rows,)
            NaN for rows with a non-finite or masked feature.
        """
        features, unusable = self._feature_rows(features)
        mean, variance = self.point_and_variance(
            target, self.forest_inputs(self.standardize(features)), chunk_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (self._forward_transform(target, values) - mean) / np.sqrt(variance)
        probability = np.asarray(self.target(target)["calibration"]["probability"])
        table = self._offset_table(target, mean, states)
        cdf = np.array([np.interp(z[row], table[:, row], probability)
                        for row in range(len(z))])
        cdf[unusable] = np.nan
        return cdf

    def _feature_rows(self, features):
        """``features`` as a float array (masked entries NaN, as ``add_mass_age`` treats
        them) and which rows have a non-finite feature: those get NaN, not what a forest
        makes of NaN (it goes down one side of every split)."""
        features = np.ma.filled(np.ma.asarray(features, dtype=np.float64), np.nan)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ModelError(f"model {self.name!r} needs features of shape (n_rows, "
                             f"{len(self.feature_names)}), not {features.shape}")
        return features, ~np.all(np.isfinite(features), axis=1)

    def point_and_variance(self, target, inputs, chunk_size=20_000):
        """Point estimate and predictive variance of ``target`` (transformed, e.g. ln).

        The variance is the forest's (`~stellar_ml_ages.forest.CompactForest.predict_moments`),
        times the square of the card's spread factor where its calibration has a
        ``spread`` entry (``spread_factor``: how the residuals' spread changes along one
        input, e.g. log g); the point estimate is the forest's too, unless the card's
        target has a ``network``: then it is ``(1 - weight) * forest + weight *
        network``. The calibration was fitted on residuals of that same point estimate
        and variance.

        Parameters
        ----------
        target : str
        inputs : ndarray, shape (n_rows, n_inputs)
            What the forests split on (`forest_inputs` of `standardize`).
        chunk_size : int
            Rows per forest block.
        """
        mean, variance = self.forests[target].predict_moments(inputs, chunk_size)
        network = self.networks.get(target)
        if network is not None:
            share = float(self.target(target)["network"]["weight"])
            mean = (1.0 - share) * mean + share * network.predict(inputs)
        spread = (self.target(target).get("calibration") or {}).get("spread")
        if spread:
            column = self.feature_names.index(spread["feature"])
            feature_mean, feature_scale = self._scaling
            values = inputs[:, column] * feature_scale[column] + feature_mean[column]
            variance = variance * spread_factor(spread, values) ** 2
        return mean, variance

    def _transform_pair(self, target):
        transform = self.target(target).get("transform", "identity")
        if transform == "ln":
            return np.log, np.exp
        if transform == "identity":
            return (lambda values: values), (lambda values: values)
        raise ModelFormatError(f"model {self.name!r}: unknown target transform {transform!r}")

    def _forward_transform(self, target, values):
        return self._transform_pair(target)[0](np.asarray(values, dtype=np.float64))

    def _inverse_transform(self, target, values):
        return self._transform_pair(target)[1](values)

    def excess_errors(self, features, feature_errors):
        """The part of each per-feature input error beyond the training labels' own noise.

        The calibration already absorbs the noise the training labels had (their
        out-of-bag residuals include it), so only ``sqrt(err**2 - noise**2)`` (zero
        where the input is as good as the training labels or better) is propagated.
        A feature trained with fractional input noise (``training_noise_fraction``,
        e.g. Δν) counts that fraction of the input value in the noise.
        """
        errors = np.nan_to_num(np.asarray(feature_errors, dtype=np.float64), nan=0.0)
        return self._excess(features, errors, self.feature_names)

    def _excess(self, features, errors, labels):
        """Excess over `_label_noise` of error columns measuring ``labels``."""
        if not labels:
            return np.zeros_like(errors)
        noise = np.column_stack([self._label_noise(label, features) for label in labels])
        excess = np.sqrt(np.maximum(errors**2 - noise**2, 0.0))
        # An error within a part in a thousand of the training noise is that noise (the
        # same level computed twice, e.g. SLAM's error at S/N 50 and the giants-slam
        # card's): nothing to propagate, and no row flagged ERRORS_WIDENED for it.
        return np.where(errors <= noise * (1.0 + _SAME_NOISE), 0.0, excess)

    def _label_noise(self, label, features):
        """Training noise of one input label (canonical units), per row.

        A label read as another training label (SLAM's [N/M] standing for [N/Fe],
        `~stellar_ml_ages.features.Feature.counterpart`; [Mg/Fe] substituting for
        [α/M]) has that label's noise.
        """
        entries = {entry["name"]: (k, entry) for k, entry in enumerate(self.card["features"])}
        recorded = self.card.get("training_set", {}).get("label_noise", {})
        if label not in recorded and label not in entries:
            label = next((name for name in _stood_in_for(label)
                          if name in recorded or name in entries), label)
        level = recorded.get(label)
        if level is None and label in entries:
            level = entries[label][1].get("training_noise", 0.0)
        noise = np.full(len(features), float(level or 0.0))
        if label in entries and "training_noise_fraction" in entries[label][1]:
            k, entry = entries[label]
            noise = np.hypot(noise, entry["training_noise_fraction"] * features[:, k])
        return noise

    def _input_excess(self, features, input_errors):
        """(errors, design, excess) of `_perturbations`' ``input_errors``: per error column."""
        if hasattr(input_errors, "design"):
            errors, design = input_errors.column_errors, input_errors.design
            labels = input_errors.labels
        else:
            errors, design = input_errors, np.eye(len(self.feature_names))
            labels = self.feature_names
        errors = np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)
        design = np.asarray(design, dtype=np.float64)
        return errors, design, self._excess(features, errors, labels)

    def widened_rows(self, features, input_errors):
        """Rows whose ``input_errors`` exceed the training labels' noise somewhere.

        Those are the rows whose predictive distribution `predict` widens when the
        errors are propagated (every other row's draws are all zero); what
        `~stellar_ml_ages.MassAgeFlag.ERRORS_WIDENED` marks.

        Parameters
        ----------
        features : array-like, shape (n_rows, n_features)
            Canonical-unit inputs.
        input_errors : array-like or `~stellar_ml_ages.units.InputErrors`
            As `predict`'s ``feature_errors``.

        Returns
        -------
        ndarray of bool, shape (n_rows,)
        """
        features = np.asarray(features, dtype=np.float64)
        _, design, excess = self._input_excess(features, input_errors)
        # An error column no feature is made from widens nothing.
        reaches = np.any(design != 0, axis=0)
        return np.any((excess > 0) & reaches, axis=1)

    def _perturbations(self, features, input_errors, seed, n_draws):
        """Feature-space perturbations of ``n_draws`` Monte Carlo draws of the inputs.

        ``input_errors`` is an `~stellar_ml_ages.units.InputErrors` (per column, with
        the design that makes features from columns: correlated draws) or an array of
        independent per-feature errors (the identity design). Only the excess over
        the training labels' noise is drawn. Each row's deviates come from its own
        inputs and ``seed`` (``row_normal_deviates``), so a star's intervals do not
        depend on its neighbours, the row order or how the table is split in blocks.
        """
        features = np.asarray(features, dtype=np.float64)
        errors, design, excess = self._input_excess(features, input_errors)
        deviates = row_normal_deviates(np.column_stack([features, errors]), seed,
                                       n_draws, excess.shape[1])
        return [row_products(deviates[k] * excess, design.T) for k in range(n_draws)]

    @property
    def interval_kinds(self):
        """The kinds of interval this model gives: ``("robust", "posterior")`` where the
        card has a ``reference_prior`` for every target, else ``("posterior",)``; the
        first is the default."""
        if all("all" in ((self.target(name).get("reference_prior") or {}).get("groups") or {})
               for name in self.target_names):
            return ("robust", "posterior")
        return ("posterior",)

    def _robust_quantiles(self, target, mean, sigma, states, quantiles, training_sigma=None,
                          features=None):
        """Quantiles of ``intervals="robust"`` (`stellar_ml_ages.reference_prior`).

        With propagated input errors, ``training_sigma`` is the spread without them:
        the robust ends are built from that distribution (the one the levels were
        recalibrated on; dividing the prior out of a much wider one would push its
        quantiles to the ends of the range), then moved out by what the propagation
        adds to the posterior's quantile at the same probability. ``features`` (the
        rows' canonical inputs) give the levels of groups recalibrated along a
        feature (`~stellar_ml_ages.reference_prior.levels_along`)."""
        grid = np.asarray(self.target(target)["calibration"]["probability"], dtype=np.float64)
        base_sigma = sigma if training_sigma is None else training_sigma
        knots = (mean + self._offset_table(target, mean, states, grid) * base_sigma).T
        groups = self.target(target)["reference_prior"]["groups"]
        group_of_row = np.full(len(mean), "all", dtype=object)
        if states is not None:
            states = normalize_states(states)
            for group in groups:
                if group != "all":
                    group_of_row[states == group] = group
        out = np.full((len(quantiles), len(mean)), np.nan)
        low, high = np.full(len(mean), -np.inf), np.full(len(mean), np.inf)
        for group, entry in groups.items():
            rows = group_of_row == group
            if rows.any():
                if "log_range" in entry:
                    low[rows], high[rows] = entry["log_range"]
                values = None
                if entry.get("along"):
                    if features is None:
                        raise ModelError(f"model {self.name!r}: the robust levels of {target} "
                                         f"follow {entry['along']['feature']!r}: pass the "
                                         "rows' features")
                    column = self.feature_names.index(entry["along"]["feature"])
                    values = np.asarray(features, dtype=np.float64)[rows, column]
                out[:, rows] = group_robust_quantiles(entry, knots[rows], grid, quantiles,
                                                      values)
        if training_sigma is not None:
            offsets = self._offset_table(target, mean, states, quantiles)
            out += offsets * (sigma - base_sigma)
            # Beyond the training range only as far as the posterior itself reaches.
            posterior = mean + offsets * sigma
            out = np.clip(out, np.minimum(low, posterior), np.maximum(high, posterior))
            # Quantiles stay ordered (ends clipped at the training range included). With
            # the variance floor in predict() the shift above is outward and monotone
            # in probability, so this only guards against rounding.
            order = np.argsort(quantiles, kind="stable")
            out[order] = np.fmax.accumulate(out[order], axis=0)
        return out

    def _mixture_variance(self, target, draws, chunk_size=20_000):
        """Predictive variance (ln) over Monte Carlo draws of the inputs.

        Total variance = mean variance + variance of means, the means blended as the
        point estimate is (a network may follow the labels more steeply than the
        forest). Each draw's variance is that at its own labels, spread factor
        included: the law of total variance. ``draws``: the draws' forest inputs.
        """
        moments = [self.point_and_variance(target, z, chunk_size) for z in draws]
        draw_means = _mean_over_draws([m for m, _ in moments])
        spread = _mean_over_draws([(m - draw_means) ** 2 for m, _ in moments])
        return _mean_over_draws([v for _, v in moments]) + spread

    def predict(self, features, quantiles=(0.16, 0.84), feature_errors=None, n_draws=32,
                seed=0, chunk_size=20_000, states=None, intervals=None):
        """Predict every target for the rows with finite features.

        The domain is not checked here: a row outside the hull or the training
        range gets an extrapolation like any other. Test `in_hull` (and the
        training range) first, or use `~stellar_ml_ages.add_mass_age`, which flags
        and masks such rows.

        Parameters
        ----------
        features : array-like, shape (n_rows, n_features)
            Canonical-unit inputs, in the order of `feature_names`.
        quantiles : sequence of float
            Probabilities of the predictive quantiles to return.
        feature_errors : array-like or `~stellar_ml_ages.units.InputErrors`, optional
            1-sigma input errors: per feature in canonical units (NaN or 0 where
            unknown; drawn independently), or per input column with the design
            that makes features from columns (drawn per column, so features
            sharing a column move together; what `add_mass_age` passes). When
            given, ``n_draws`` Monte Carlo draws of the inputs, with the error in
            excess of the training labels' noise, are pushed through the forest
            (and the networks, where the card has them) and the spread of their
            point estimates is added to the predictive variance.
        n_draws, seed : int
            Monte Carlo draws and their random seed; a row's draws depend only on its
            own inputs and ``seed`` (``row_normal_deviates``).
        chunk_size : int
            Rows per forest block.
        states : array-like, optional
            Evolutionary state per row (``"RGB"``, ``"RC"``, APOKASC codes 1/2, ...:
            read by `~stellar_ml_ages.evstate.normalize_states`; anything else, and
            masked entries, count as unknown). Selects each row's calibration where
            the card has one for that state; otherwise the pooled calibration is used.
        intervals : {"robust", "posterior"}, optional
            What the quantiles describe. ``"posterior"``: the calibrated predictive
            distribution, a posterior under the training population's distribution
            of the target (what population stacking needs); its intervals hold for
            stars of a given predicted value but, by true value, rarely at the ends
            of the range. ``"robust"`` (the default where the card allows it,
            ``interval_kinds``): central intervals whose ends are the further of
            that posterior's and the prior-free (reference) distribution's
            quantiles at recalibrated levels, so that at the ends of the range they
            hold by true value as well as by prediction, RGB and clump alike
            (`stellar_ml_ages.reference_prior`). The point estimate
            ``"value"`` is the same for both.

        Returns
        -------
        dict
            Target name to a dict with ``"value"`` (the point estimate, `point_and_variance`)
            and one array per requested quantile, keyed by probability, in the
            target's unit (`target_unit`). NaN for rows with a non-finite feature (a
            forest would otherwise send them down one side of every split).
        """
        features, unusable = self._feature_rows(features)
        available = self.interval_kinds
        intervals = available[0] if intervals is None else intervals
        if intervals not in available:
            raise ModelError(f"model {self.name!r} gives {' or '.join(map(repr, available))} "
                             f"intervals, not {intervals!r}")
        standardized = self.forest_inputs(self.standardize(features))
        if feature_errors is not None:
            draws = [self.forest_inputs(self.standardize(np.asarray(features) + shift))
                     for shift in self._perturbations(features, feature_errors, seed, n_draws)]
        results = {}
        for target in self.target_names:
            mean, variance = self.point_and_variance(target, standardized, chunk_size)
            training_sigma = None
            if feature_errors is not None:
                training_sigma = np.sqrt(variance)
                # More noise never makes a star better known: where the draws land on
                # labels the model is surer of than of the star's own (its spread is
                # above that of its neighbours), the mixture can come out narrower
                # than the unpropagated distribution; it is kept at least as wide.
                variance = np.maximum(self._mixture_variance(target, draws, chunk_size),
                                      variance)
            sigma = np.sqrt(variance)
            # Linear in probability and in the predicted value, so interpolating the
            # small tables in probability first changes nothing but the cost.
            levels = np.asarray(quantiles, dtype=np.float64)
            if intervals == "robust":
                log_quantiles = self._robust_quantiles(target, mean, sigma, states, levels,
                                                       training_sigma, features)
            else:
                log_quantiles = mean + self._offset_table(target, mean, states, levels) * sigma
            result = {"value": self._inverse_transform(target, mean)}
            for probability, value in zip(quantiles, log_quantiles, strict=True):
                result[float(probability)] = self._inverse_transform(target, value)
            for values in result.values():
                values[unusable] = np.nan
            results[target] = result
        return results

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_parts(cls, card, forests, domain, networks=None):
        """Assemble a model in memory (used by training).

        Its card gets the oldest format that holds it: a model without networks
        stays readable by a package that reads format 3, one without a calibration
        ``spread`` by one that reads format 4.
        """
        card = dict(card)
        spread = any((target.get("calibration") or {}).get("spread")
                     for target in card.get("targets") or [])
        card.setdefault("format_version", _SPREAD_VERSION if spread
                        else _NETWORK_VERSION if networks else _NETWORK_VERSION - 1)
        card.setdefault("arrays", {})
        validate_card(card, f"model {card.get('name')!r}")
        return cls(card, forests, domain, networks)

    def _array_bytes(self):
        """The ``.npz`` file's bytes, the same for the same arrays.

        `numpy.savez_compressed` stamps each member with the time of writing, so a
        retrained model with identical arrays would get another sha256; the members
        are written here with a fixed date instead (`numpy.load` reads either).
        """
        arrays = {"hull_vertices": self.domain.vertices}
        for target, forest in self.forests.items():
            arrays.update(forest.to_arrays(prefix=f"{target}."))
        for target, network in self.networks.items():
            arrays.update(network.to_arrays(prefix=f"{target}.network."))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, "w", force_zip64=True) as stream:
                    np.lib.format.write_array(stream, np.asanyarray(value), allow_pickle=False)
        return buffer.getvalue()

    def _stamp(self, payload):
        """Record the array file and both checksums in the card (format 3)."""
        self.card["arrays"] = {"file": f"{self.name}.npz",
                               "sha256": hashlib.sha256(payload).hexdigest(),
                               "bytes": len(payload)}
        self.card["format_version"] = max(int(self.card.get("format_version", 0)),
                                          _CHECKSUM_VERSION)
        self.card["card_sha256"] = card_checksum(self.card)

    def save(self, directory):
        """Write ``NAME.npz`` and ``NAME.json`` into ``directory``; return the card path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = self._array_bytes()
        self._stamp(payload)
        array_path = directory / f"{self.name}.npz"
        array_path.write_bytes(payload)
        card_path = directory / f"{self.name}.json"
        card_path.write_text(json.dumps(self.card, indent=1, sort_keys=False,
                                        allow_nan=False) + "\n")
        return card_path

    def to_payload(self):
        """The model as ``(card JSON text, array bytes)``: what `save` writes, in memory.

        Sent to other processes (Dask workers) instead of a pickled object;
        ``load_model_payload`` checks both checksums before using it.

        Examples
        --------
        >>> from stellar_ml_ages import get_model
        >>> from stellar_ml_ages.model import load_model_payload
        >>> card_text, arrays = get_model("red-clump").to_payload()
        >>> load_model_payload(card_text, arrays).name
        'red-clump-apogee-dr17'
        """
        payload = getattr(self, "_payload", None)
        if payload is None:  # assembled in memory (training): stamp it as save would
            payload = self._array_bytes()
            self._stamp(payload)
            self._payload = payload
        return json.dumps(self.card, allow_nan=False), payload


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _parse_card(text, where):
    """Parse and check a card: JSON (no NaN/Infinity), version, schema, own checksum."""
    try:
        card = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ModelFormatError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(card, dict) or any(key not in card for key in _REQUIRED_CARD_KEYS):
        raise ModelFormatError(f"{where} lacks required keys {list(_REQUIRED_CARD_KEYS)}")
    version = card["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelVersionError(
            f"{where} has format version {version}, newer than the "
            f"{FORMAT_VERSION} this stellar_ml_ages reads; upgrade the package"
        )
    if version < _CHECKSUM_VERSION and "card_sha256" not in card:
        warnings.warn(
            f"{where} has format version {version}, without a checksum of its own content: "
            "an edit of the card would go unnoticed. Save it again with this version "
            "(load_model(...).save(directory)) to add one.", ModelIntegrityWarning,
            stacklevel=4)
    if version >= _CHECKSUM_VERSION or "card_sha256" in card:
        recorded = card.get("card_sha256")
        actual = card_checksum(card)
        if recorded != actual:
            raise ModelChecksumError(
                f"{where} has content sha256 {actual}, but records {recorded!r}: the card "
                "was edited or corrupted; reinstall the package or retrain the model")
    # The checksum first: an edited card is named as such, not by what the edit broke.
    validate_card(card, where)
    return card


def _read_card(card_path):
    try:
        text = Path(card_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelNotFoundError(f"model card {str(card_path)!r} does not exist") from None
    except UnicodeDecodeError as error:
        raise ModelFormatError(f"model card {str(card_path)!r} is not text: {error}") from None
    return _parse_card(text, f"model card {str(card_path)!r}")


def load_model(card_path):
    """Load a model from its JSON card, verifying the array file's sha256 first.

    Parameters
    ----------
    card_path : str or path-like
        Path of ``NAME.json``; the array file named in the card must be beside it.

    Returns
    -------
    MassAgeModel

    Raises
    ------
    ModelNotFoundError, ModelFormatError, ModelChecksumError, ModelVersionError

    Examples
    --------
    >>> from stellar_ml_ages import get_model
    >>> from stellar_ml_ages.model import load_model
    >>> model = load_model(get_model("giants").card_path)
    >>> model.target_names
    ('mass', 'age')
    """
    card_path = Path(card_path)
    card = _read_card(card_path)
    array_info = card["arrays"]
    try:
        array_path = card_path.parent / array_info["file"]
    except (KeyError, TypeError):
        raise ModelFormatError(
            f"model card {str(card_path)!r} does not name its array file") from None
    if not array_path.is_file():
        raise ModelNotFoundError(
            f"array file {str(array_path)!r} of model {card['name']!r} is missing")
    # Hash and parse the same bytes, so the file cannot change between check and use.
    model = _from_bytes(card, array_path.read_bytes(), f"array file {str(array_path)!r}")
    model.card_path = card_path
    return model


def load_model_payload(card_text, payload):
    """A model from `MassAgeModel.to_payload` output, after the same checks as `load_model`.

    Raises
    ------
    ModelFormatError, ModelChecksumError, ModelVersionError
    """
    card = _parse_card(card_text, "model card (in memory)")
    if not card.get("arrays"):
        raise ModelFormatError("model card (in memory) does not name its arrays")
    return _from_bytes(card, bytes(payload), f"arrays of model {card['name']!r}")


def _from_bytes(card, payload, where):
    expected = card["arrays"].get("sha256")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise ModelChecksumError(
            f"{where} has sha256 {actual}, but its card records {expected}: "
            "the file is corrupted or does not belong to this card"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        forests = {
            target["name"]: CompactForest.from_arrays(arrays, prefix=f"{target['name']}.")
            for target in card["targets"]
        }
        networks = {
            target["name"]: CompactNetwork.from_arrays(arrays,
                                                       prefix=f"{target['name']}.network.")
            for target in card["targets"] if "network" in target
        }
        unnamed = sorted(key.split(".network.")[0] for key in arrays
                         if key.endswith(".network.input_weights")
                         and key.split(".network.")[0] not in networks)
        if unnamed:
            raise ValueError(f"it holds networks for {unnamed}, which the card does not name")
        domain = ConvexHullDomain(arrays["hull_vertices"])
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as error:
        raise ModelFormatError(f"{where} is unreadable: {error}") from None
    model = MassAgeModel(card, forests, domain, networks)
    low, high = model.standardize(np.vstack(model.feature_bounds))
    slack = 1e-6 * (high - low)
    outside = np.any((domain.vertices < low - slack) | (domain.vertices > high + slack), axis=0)
    if outside.any():
        names = ", ".join(np.asarray(model.feature_names)[outside])
        raise ModelFormatError(
            f"{where}: hull vertices lie outside the card's [min, max] of {names}: card and "
            "arrays disagree on the features (reordered or edited feature entries?)")
    model._payload = payload
    return model
