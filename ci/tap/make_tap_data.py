"""Write the CSV files the local TAP mirror serves (see q.rd).

APOKASC-2: the real Table 5 rows from the training catalogs when they are found
(argument, STELLAR_ML_AGES_DATA, or ../shared/data), else synthetic rows.
LAMOST DD-Payne, SLAM and red-clump rows are always synthetic: labels for APOKASC-2
stars follow from their seismic masses through the toy relations of
stellar_ml_ages.training.synthetic, at their positions plus a sub-arcsecond
offset; field stars and a small cluster around (RA, Dec) = (150, 2) fill the rest.

Usage: python make_tap_data.py OUTDIR [DATA_DIR]
"""

import csv
import os
import sys
import warnings
from pathlib import Path

import numpy as np

ELEMENTS = ["C", "N", "O", "Na", "Mg", "Ti", "Mn", "Co", "Ba"]


def apokasc_rows(data_dir, rng):
    from astropy.table import Table

    path = Path(data_dir) / "apokasc2" / "apokasc2_table5_radec.fits" if data_dir else None
    if path is not None and path.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path)

        def values(name):
            return np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan)

        states = [s.decode() if isinstance(s, bytes) else str(s) for s in table["EVSTATE"]]
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in table["TMASS_ID"]]
        return {"kic": np.asarray(table["KIC"]), "tmass": names, "teff": values("TEFF"),
                "feh": values("FEH"), "numax": values("NUMAX"), "dnu": values("DNU"),
                "es": [s.strip() for s in states], "mass": values("MASS"),
                "logage": values("LOGAGE_MYR"), "ra": values("RA"), "dec": values("DEC")}, "real"
    n = 600
    ra = rng.uniform(280, 300, n)
    dec = rng.uniform(36, 50, n)
    mass = np.exp(rng.normal(np.log(1.2), 0.25, n))
    names = []
    for a, d in zip(ra, dec, strict=True):
        hours = a / 15
        hh, mm = int(hours), int((hours % 1) * 60)
        ss = ((hours * 60) % 1) * 60
        dd, dm = int(d), int((d % 1) * 60)
        ds = ((d * 60) % 1) * 60
        names.append(f"2M{hh:02d}{mm:02d}{int(ss * 100):04d}+{dd:02d}{dm:02d}{int(ds * 10):03d}")
    return {"kic": np.arange(2_000_000, 2_000_000 + n), "tmass": names,
            "teff": rng.normal(4750, 150, n), "feh": rng.normal(0, 0.2, n),
            "numax": rng.uniform(20, 100, n), "dnu": 4.0 * np.sqrt(mass / 1.2),
            "es": list(rng.choice(["RGB", "RC"], n)), "mass": mass,
            "logage": np.log10(1e4 * mass**-2.5), "ra": ra, "dec": dec}, "synthetic"


def labels_from_mass(mass, rng):
    n = len(mass)
    labels = {
        "teff": rng.normal(4750, 150, n), "logg": rng.normal(2.5, 0.25, n) + 0.1 * np.log10(mass),
        "fe_h": rng.normal(-0.1, 0.2, n),
        "c_fe": -0.25 * (mass - 1.2) + rng.normal(0, 0.03, n),
        "n_fe": 0.35 * (mass - 1.2) + 0.25 + rng.normal(0, 0.03, n),
    }
    for element in ELEMENTS:
        labels.setdefault(f"{element.lower()}_fe", rng.normal(0.02, 0.06, n))
    return labels


def write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if isinstance(v, float) and not np.isfinite(v) else v
                             for v in row])


def main(out_dir, data_dir=None):
    rng = np.random.default_rng(20261124)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    apokasc, kind = apokasc_rows(data_dir, rng)
    n = len(apokasc["kic"])
    write(out / "apokasc2.csv", ["kic", "tmass", "teff", "feh", "numax", "dnu", "es", "mass",
                                 "logage"],
          zip(apokasc["kic"], apokasc["tmass"], apokasc["teff"], apokasc["feh"],
              apokasc["numax"], apokasc["dnu"], apokasc["es"], apokasc["mass"],
              apokasc["logage"], strict=True))

    # LAMOST rows for 70% of the APOKASC-2 stars with a mass, 0-1 arcsec away.
    has_mass = np.isfinite(apokasc["mass"]) & np.isfinite(apokasc["ra"])
    observed = has_mass & (rng.uniform(size=n) < 0.7)
    mass = apokasc["mass"][observed]
    offset = rng.uniform(0, 1.0, observed.sum()) / 3600
    angle = rng.uniform(0, 2 * np.pi, observed.sum())
    dec = apokasc["dec"][observed] + offset * np.sin(angle)
    ra = apokasc["ra"][observed] + offset * np.cos(angle) / np.cos(np.radians(dec))
    labels = labels_from_mass(mass, rng)
    # Field stars across the Kepler field, and a tight cluster for cone tests.
    n_field, n_cluster = 3000, 60
    field_ra = np.concatenate([rng.uniform(275, 305, n_field), rng.normal(150, 0.1, n_cluster)])
    field_dec = np.concatenate([rng.uniform(33, 53, n_field), rng.normal(2, 0.1, n_cluster)])
    field_labels = labels_from_mass(np.exp(rng.normal(np.log(1.2), 0.3, len(field_ra))), rng)
    all_ra, all_dec = np.concatenate([ra, field_ra]), np.concatenate([dec, field_dec])
    header = ["source_id", "ra", "dec", "teff", "e_teff", "logg", "e_logg", "fe_h", "e_fe_h"]
    keys = ["teff", "logg", "fe_h"] + [f"{e.lower()}_fe" for e in ELEMENTS]
    for element in ELEMENTS:
        header += [f"{element.lower()}_fe", f"e_{element.lower()}_fe"]
    rows = []
    for i in range(len(all_ra)):
        source = labels if i < len(ra) else field_labels
        j = i if i < len(ra) else i - len(ra)
        row = [i + 1, f"{all_ra[i] % 360:.8f}", f"{all_dec[i]:.8f}"]
        for key in keys:
            error = 50.0 if key == "teff" else 0.05
            row += [f"{source[key][j]:.4f}", f"{error:.3f}"]
        rows.append(row)
    write(out / "ddpayne.csv", header, rows)

    # Ting+2018 red clump: the clump stars among those LAMOST rows, spectroscopic Δν and ΔP.
    clump = np.isin(np.asarray(apokasc["es"])[observed], ["RC", "RC(S)"])
    dnu = apokasc["dnu"][observed][clump] * np.exp(rng.normal(0, 0.03, clump.sum()))
    dpi = 250 + 60 * (mass[clump] - 1.0) + rng.normal(0, 10, clump.sum())
    write(out / "ting2018.csv", ["source_id", "ra", "dec", "dnu", "dpi"],
          ((i + 1, f"{a % 360:.8f}", f"{d:.8f}", f"{v:.4f}", f"{p:.2f}")
           for i, (a, d, v, p) in enumerate(zip(ra[clump], dec[clump], dnu, dpi, strict=True))))
    n_slam = write_slam(out / "slam_giants.csv", out / "slam_sources.csv", rng)
    n_survey = write_survey(out / "survey.csv", rng,
                            int(os.environ.get("STELLAR_ML_AGES_TAP_SURVEY_ROWS", "30000")))
    print(f"wrote {out}: apokasc2 {n} ({kind}), ddpayne {len(rows)}, ting2018 {clump.sum()}, "
          f"slam {n_slam}, survey {n_survey}")


def write_slam(path, decoy_path, rng, n_rows=2000):
    """SLAM-like LAMOST giants (Zhang+2020 labels): the package's synthetic demo giants.

    Labels are drawn from the giants model's training distribution
    (stellar_ml_ages.demo), so most rows are inside its hull; [C/M], [N/M], [M/H]
    carry the demo's [C/Fe], [N/Fe], [Fe/H] ([Fe/H] = [M/H] in the synthetic stars).
    S/N_g spans 15-300; a tenth of the stars has no e_Teff (the fetcher fills it).
    A second table under the same name prefix (slam_sources) has no labels: the
    fetcher must pick the table with the labels.
    """
    from stellar_ml_ages.demo import make_demo_table

    demo = make_demo_table(n_per_population=n_rows, seed=20261201)
    demo = demo[demo["POPULATION"] == "giant"]
    n = len(demo)
    ra = np.concatenate([rng.uniform(275, 305, n - 80), rng.normal(150, 0.1, 80)])
    dec = np.concatenate([rng.uniform(33, 53, n - 80), rng.normal(2, 0.1, 80)])
    snr = np.exp(rng.uniform(np.log(15), np.log(300), n))
    obsid = 101001 + np.sort(rng.choice(585_000_000, n, replace=False))

    def value(name, i):
        x = float(demo[name][i])
        return f"{x:.4f}" if np.isfinite(x) else ""

    rows = []
    for i in range(n):
        e_teff = "" if i % 10 == 3 else f"{max(49.0 * 100 / snr[i] * 0.6, 20.0):.1f}"
        rows.append([int(obsid[i]), f"{ra[i] % 360:.7f}", f"{dec[i]:.7f}", value("TEFF", i),
                     e_teff, value("LOGG", i), "0.080", value("FE_H", i), "0.030",
                     value("ALPHA_M", i), value("C_FE", i), "0.050", value("N_FE", i),
                     "0.090", f"{snr[i]:.1f}"])
    write(path, ["obsid", "ra", "dec", "teff", "e_teff", "logg", "e_logg", "m_h", "e_m_h",
                 "a_m", "c_m", "e_c_m", "n_m", "e_n_m", "snrg"], rows)
    write(decoy_path, ["obsid", "ra", "dec"],
          ([int(obsid[i]), f"{ra[i] % 360:.7f}", f"{dec[i]:.7f}"] for i in range(n)))
    return n


def write_survey(path, rng, n_rows):
    """An allStar-shaped table of giants, paged by a key that 1-3 rows share.

    Written in blocks, so that a benchmark table of millions of rows needs little memory.
    """
    block, written, key = 100_000, 0, 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["obs_key", "apogee_id", "ra", "dec", "teff", "logg", "fe_h",
                         "alpha_m", "c_fe", "n_fe", "aspcapflag"])
        while written < n_rows:
            n = min(block, n_rows - written)
            group = rng.integers(1, 4, n)  # how many rows share each key
            keys = key + np.repeat(np.arange(n), group)[:n] * 7  # gaps between keys too
            key = int(keys[-1]) + 7
            mass = np.exp(rng.normal(np.log(1.2), 0.3, n))
            labels = labels_from_mass(mass, rng)
            flags = np.where(rng.uniform(size=n) < 0.02, 1 << 23, 0)
            ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
            for i in range(n):
                writer.writerow([int(keys[i]), f"2M{written + i:014d}", f"{ra[i]:.7f}",
                                 f"{dec[i]:.7f}", f"{labels['teff'][i]:.1f}",
                                 f"{labels['logg'][i]:.3f}", f"{labels['fe_h'][i]:.3f}",
                                 f"{0.05 - 0.2 * labels['fe_h'][i]:.3f}",
                                 f"{labels['c_fe'][i]:.3f}", f"{labels['n_fe'][i]:.3f}",
                                 int(flags[i])])
            written += n
    return written


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
