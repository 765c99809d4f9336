"""Screenshot of TOPCAT showing an annotated table, for the docs.

Run with the SAMP peers started by ``ci/samp/start_samp_peers.sh`` (it prints the
SAMP_HUB and DISPLAY to export), and ``xdotool`` and ImageMagick installed::

    eval "$(bash ci/samp/start_samp_peers.sh /tmp/samp python3)"
    python tools/topcat_screenshot.py docs/_static/topcat_mass_age.png
    bash ci/samp/stop_samp_peers.sh /tmp/samp

The table is sent with `stellar_ml_ages.samp.send`, exactly as a user would;
xdotool then opens TOPCAT's table browser and column-metadata windows and lays
them out (Xvfb has no window manager), and ImageMagick's ``import`` grabs the
screen.
"""
import subprocess
import sys
import time

from stellar_ml_ages import add_mass_age, demo_table
from stellar_ml_ages.samp import send

COLUMNS = ["ID", "TEFF", "LOGG", "FE_H", "DNU", "mass", "mass_p16", "mass_p84",
           "age", "age_p16", "age_p84", "mass_age_flag"]
# Toolbar buttons of TOPCAT 4.8's control window (x, y in screen pixels).
TABLE_BROWSER, COLUMN_INFO = (160, 40), (233, 40)


def xdotool(*args):
    return subprocess.run(["xdotool", *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.split()


def window(title_part, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title_part],
                               capture_output=True, text=True).stdout.split()
        if found:
            return found[-1]
        time.sleep(0.3)
    raise RuntimeError(f"no TOPCAT window titled like {title_part!r} appeared")


def main(output):
    stars = demo_table()
    annotated = add_mass_age(stars[stars["POPULATION"] == "red_clump"], model="red-clump")
    delivery = send(annotated[COLUMNS], to="topcat", name="red clump, mass and age")
    print(f"sent {len(annotated)} rows; TOPCAT replied "
          f"{[r['samp.status'] for r in delivery.replies.values()]} in {delivery.seconds:.3f} s")
    time.sleep(1.0)
    xdotool("mousemove", *TABLE_BROWSER, "click", "1")
    browser = window("Table Browser")
    xdotool("windowsize", browser, 1280, 262)
    xdotool("windowmove", browser, 0, 320)
    xdotool("mousemove", *COLUMN_INFO, "click", "1")
    columns = window("Table Columns")
    xdotool("windowsize", columns, 1280, 318)
    xdotool("windowmove", columns, 0, 582)
    time.sleep(2.0)
    subprocess.run(["import", "-window", "root", output], check=True)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "topcat_mass_age.png")
