"""Configuration items of `stellar_ml_ages` (``astropy.config`` namespace).

They can be set for a session (``conf.chunk_size = 50_000``), temporarily
(``with conf.set_temp(...)``), or persistently in the astropy configuration file
under ``[stellar_ml_ages]``.
"""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `stellar_ml_ages`."""

    training_data_dir = _config.ConfigItem(
        "",
        "Directory holding the training catalogs (APOKASC-2, APOGEE labels, "
        "APOKASC-3 subset). Empty means: use the STELLAR_ML_AGES_DATA environment "
        "variable, then ../shared/data next to the working directory.",
        cfgtype="string",
    )
    chunk_size = _config.ConfigItem(
        100_000,
        "Rows evaluated at a time by the forest and hull kernels; bounds memory.",
        cfgtype="integer",
    )
    use_compiled_kernels = _config.ConfigItem(
        True,
        "Evaluate forests with the compiled (numba) kernel; False uses the NumPy "
        "reference implementation (same results, several times slower).",
        cfgtype="boolean",
    )
    threads = _config.ConfigItem(
        0,
        "Threads for the compiled kernels and the hull test; 0 means all cores.",
        cfgtype="integer",
    )
    flagged_warning_fraction = _config.ConfigItem(
        0.5,
        "Warn (FlaggedRowsWarning, once per call) when more than this fraction of the "
        "rows gets no prediction, with the counts per reason and the likely cause.",
        cfgtype="float",
    )
    user_model_dir = _config.ConfigItem(
        "",
        "Directory of user-trained models (model cards and arrays written by "
        "'stellar-ml-ages train --out DIR'), used by name like the packaged ones and "
        "listed by list_models. Empty means: the STELLAR_ML_AGES_MODELS environment "
        "variable, if set.",
        cfgtype="string",
    )
    show_progress = _config.ConfigItem(
        True,
        "Show a progress bar on long command-line runs.",
        cfgtype="boolean",
    )


conf = Conf()
