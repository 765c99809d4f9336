"""Configuration of the VO helpers (``astropy.config`` namespace ``stellar_ml_ages.vo``).

Service URLs and table names are configuration items so that a mirror, a local
test server, or a renamed table is one setting away::

    from stellar_ml_ages.vo import conf
    with conf.set_temp("vizier_tap_url", "http://127.0.0.1:8080/tap"):
        ...
"""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `stellar_ml_ages.vo`."""

    vizier_tap_url = _config.ConfigItem(
        "https://tapvizier.cds.unistra.fr/TAPVizieR/tap", "VizieR TAP service.")
    lamost_table = _config.ConfigItem(
        '"J/ApJS/245/34/catalog"', "LAMOST DR5 DD-Payne abundances (Xiang+2019), ADQL name.")
    apokasc2_table = _config.ConfigItem(
        '"J/ApJS/239/32/table5"', "APOKASC-2 (Pinsonneault+2018) Table 5, ADQL name.")
    red_clump_table = _config.ConfigItem(
        '"J/ApJ/858/L7/table1"', "LAMOST red clump with Δν and ΔP (Ting+2018), ADQL name.")
    # The GAVO data centre holds LAMOST DR6 spectra (lamost6.*), not LASP parameters;
    # LAMOST DR5 LASP parameters are VizieR V/164 (ReadMe: tables dr5, stellar5, ...).
    lasp_table = _config.ConfigItem(
        '"V/164/stellar5"', "LAMOST DR5 LASP AFGK-star parameters (Luo+2019), ADQL name.")
    # The table and column labels of J/ApJS/246/9 could not be read from a stored
    # ReadMe: empty means "the table under slam_table_prefix whose TAP_SCHEMA columns
    # hold the SLAM labels", decided by the service at query time.
    slam_table = _config.ConfigItem(
        "", "LAMOST DR5 SLAM K giants (Zhang+2020), ADQL name; empty: found under "
            "slam_table_prefix in the service's TAP_SCHEMA.")
    slam_table_prefix = _config.ConfigItem(
        "J/ApJS/246/9/", "Table-name prefix searched when slam_table is empty.")
    xmatch_url = _config.ConfigItem(
        "http://cdsxmatch.u-strasbg.fr/xmatch/api/v1/sync",
        "CDS XMatch service (synchronous API), used by xmatch_vizier.")
    vizier_server = _config.ConfigItem(
        "vizier.cds.unistra.fr",
        "VizieR server (astroquery.vizier) for catalog metadata, used by vizier_columns.")
    timeout = _config.ConfigItem(
        120.0, "Seconds to wait for one HTTP answer, or for an async job to finish.",
        cfgtype="float")
    max_retries = _config.ConfigItem(
        3, "Retries of a transient failure (HTTP 500/502/503/504, connection lost).",
        cfgtype="integer")
    retry_backoff = _config.ConfigItem(
        1.0, "Seconds before the first retry; doubled at each further retry.", cfgtype="float")
    cache = _config.ConfigItem(
        False, "Keep query results in the astropy download cache and reuse them.",
        cfgtype="boolean")


conf = Conf()
