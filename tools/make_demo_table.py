"""Regenerate the bundled synthetic demo table after the packaged models change."""

from importlib import resources

from stellar_ml_ages.demo import make_demo_table

if __name__ == "__main__":
    target = resources.files("stellar_ml_ages") / "data" / "demo_stars.ecsv"
    make_demo_table().write(str(target), format="ascii.ecsv", overwrite=True)
    print(f"wrote {target}")
