"""Independent NCA reference for Theoph subject 1, written from the
textbook definitions with numpy (not from the Rust code), to check crates/models/pk/src/nca.rs.

Definitions (Gabrielsson & Weiner, PK/PD Data Analysis, 5th ed.; PKNCA "lin up/log down"):
  AUC interval: linear trapezoid if C rises/is flat or an end is 0; log trapezoid if it falls.
  AUMC interval: linear (t1 C1 + t2 C2) dt / 2, or for the log case the exact integral of
  t * C1 exp(-k (t - t1)) with k = ln(C1/C2)/dt, computed here by high-order Gauss-Legendre
  quadrature rather than a closed form.
  lambda_z: unweighted regression of ln C on t over the last n >= 3 positive points after Cmax
  (Cmax excluded for extravascular), best adjusted R^2, ties within 1e-4 -> most points.
Run: python3 tests/data/pk/nca_reference.py
"""
import csv
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def auc_interval(t1, c1, t2, c2):
    dt = t2 - t1
    if c2 >= c1 or c1 <= 0 or c2 <= 0:
        return dt * (c1 + c2) / 2, dt * (t1 * c1 + t2 * c2) / 2
    k = np.log(c1 / c2) / dt
    auc = (c1 - c2) / k
    x, w = np.polynomial.legendre.leggauss(40)
    tt = t1 + (x + 1) * dt / 2
    aumc = np.sum(w * tt * c1 * np.exp(-k * (tt - t1))) * dt / 2
    return auc, aumc


def lambda_z(t, c, imax, include_cmax):
    start = imax if include_cmax else imax + 1
    idx = [i for i in range(start, len(c)) if c[i] > 0]
    last_pos = max(i for i in range(len(c)) if c[i] > 0)
    idx = [i for i in idx if i <= last_pos]
    fits = []
    for n in range(3, len(idx) + 1):
        sel = idx[-n:]
        x = np.array([t[i] for i in sel])
        y = np.log(np.array([c[i] for i in sel]))
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (intercept + slope * x)
        r2 = 1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2)
        r2adj = 1 - (1 - r2) * (n - 1) / (n - 2)
        if -slope > 0:
            fits.append((n, -slope, r2adj, x[0]))
    best = max(f[2] for f in fits)
    ok = [f for f in fits if f[2] >= best - 1e-4]
    return max(ok, key=lambda f: f[0])


def nca_ev(t, c, dose):
    """Extravascular single dose, first sample at t = 0."""
    t = list(t)
    c = list(c)
    if t[0] > 0:
        t = [0.0] + t
        c = [0.0] + c
    imax = int(np.argmax(c))
    last = max(i for i in range(len(c)) if c[i] > 0)
    auc = aumc = 0.0
    for i in range(1, last + 1):
        a, m = auc_interval(t[i - 1], c[i - 1], t[i], c[i])
        auc += a
        aumc += m
    n, lz, r2adj, tfirst = lambda_z(t, c, imax, include_cmax=False)
    clast, tlast = c[last], t[last]
    aucinf = auc + clast / lz
    aumcinf = aumc + tlast * clast / lz + clast / lz**2
    return dict(
        cmax=c[imax], tmax=t[imax], clast=clast, tlast=tlast, auc_last=auc, aumc_last=aumc,
        lambda_z=lz, n_lz=n, lz_first=tfirst, r2adj=r2adj, t_half=np.log(2) / lz,
        auc_inf=aucinf, aumc_inf=aumcinf, pct_extrap=100 * (aucinf - auc) / aucinf,
        cl_f=dose / aucinf, vz_f=dose / (lz * aucinf),
    )


def main():
    rows = list(csv.DictReader(open(os.path.join(HERE, "Theoph.csv"))))
    s1 = [r for r in rows if r["Subject"] == "1"]
    t = [float(r["Time"]) for r in s1]
    c = [float(r["conc"]) for r in s1]
    dose = float(s1[0]["Dose"])
    res = nca_ev(t, c, dose)
    print("Theoph subject 1, dose %.2f mg/kg" % dose)
    for k, v in res.items():
        print("  %-10s %.12g" % (k, v))


if __name__ == "__main__":
    main()
