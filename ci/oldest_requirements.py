"""Pin every ``>=`` lower bound of the project's dependencies (and extras) exactly.

    python ci/oldest_requirements.py [EXTRA ...] > requirements-min.txt

Used by ``tox -e oldestdeps`` so the minimum versions in pyproject.toml are the
ones tested. (The minimum_dependencies tool asks pypi.org's JSON API, which this
CI cannot reach; pip's index is enough here.)
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
requirements = list(project["project"]["dependencies"])
for extra in sys.argv[1:]:
    requirements += project["project"]["optional-dependencies"][extra]
for requirement in dict.fromkeys(requirements):
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*>=\s*([^,;\s]+)", requirement)
    print(f"{match[1]}=={match[2]}" if match else requirement)
