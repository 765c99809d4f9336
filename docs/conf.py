# Sphinx configuration for stellar_ml_ages (sphinx-astropy v2 configuration).
import datetime
import os
from importlib import metadata

from sphinx_astropy.conf.v2 import *  # noqa: F403

project = "stellar_ml_ages"
author = "The stellar_ml_ages developers"
copyright = f"{datetime.date.today().year}, {author}"
release = metadata.version("stellar_ml_ages")
version = release.split("+")[0]

html_theme_options.update({  # noqa: F405
    "github_url": "",
    "use_edit_page_button": False,
})
html_title = f"{project} {version}"
html_static_path = ["_static"]
extensions += ["sphinx.ext.doctest"]  # noqa: F405
intersphinx_mapping.update({  # noqa: F405
    "sklearn": ("https://scikit-learn.org/stable/", None),
    "pyvo": ("https://pyvo.readthedocs.io/en/latest/", None),
})
nitpicky = True
nitpick_ignore = [
    ("py:class", "optional"),
    ("py:class", "callable"),
    ("py:class", "path-like"),
    ("py:class", "array-like"),
]
automodapi_toctreedirnm = "api"

# Model tables come from the packaged cards at every build (see _card_tables.py).
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import _card_tables  # noqa: E402

_card_tables.write(os.path.join(os.path.dirname(__file__), "_generated"))
exclude_patterns = [*globals().get("exclude_patterns", []), "_generated"]
numpydoc_show_class_members = False

# Offline builds (CI reaches only package registries) cannot fetch intersphinx
# inventories; references into these projects are checked only when online.
nitpick_ignore_regex = [
    (r"py:.*", r"(astropy|numpy|scipy|sklearn|pyvo|regions|enum|pandas|dask|distributed)(\..*)?"),
]
if os.environ.get("STELLAR_ML_AGES_DOCS_OFFLINE"):
    intersphinx_mapping.clear()  # noqa: F405
