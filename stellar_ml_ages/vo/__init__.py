"""Virtual Observatory helpers: fetch survey labels over TAP, cross-match, annotate.

Services and tables are configured in ``stellar_ml_ages.vo.conf``; every TAP query
goes through `run_query`, which retries transient failures, never returns a
truncated result as complete, and names the service and query in every error.
Whole-table cross-matches with VizieR go through CDS XMatch (`xmatch_vizier`) and
catalog metadata through VizieR (`vizier_columns`), both with astroquery.
"""

from .adql import format_degrees, quote_identifier, region_to_adql
from .catalogs import CATALOGS, Catalog, positions_from_2mass
from .config import conf
from .fetch import (
    build_lamost_training_table,
    fetch,
    fetch_apokasc,
    fetch_lamost,
    fetch_lasp,
    fetch_red_clump,
    fetch_slam,
    tap_crossmatch,
)
from .tap import get_service, run_query
from .xmatch import vizier_columns, xmatch_vizier

__all__ = [
    "CATALOGS",
    "Catalog",
    "build_lamost_training_table",
    "conf",
    "fetch",
    "fetch_apokasc",
    "fetch_lamost",
    "fetch_lasp",
    "fetch_red_clump",
    "fetch_slam",
    "format_degrees",
    "get_service",
    "positions_from_2mass",
    "quote_identifier",
    "region_to_adql",
    "run_query",
    "tap_crossmatch",
    "vizier_columns",
    "xmatch_vizier",
]
