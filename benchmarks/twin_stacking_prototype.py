# Offline prototype (session 2, not part of the build or CI): online stacking of the twin's
# backtest forecasts. For each participant and horizon h, the forecast at origin t is
#   twin median + ridge(features at t),
# the ridge (penalty LAMBDA on standardised features, intercept free) trained on that
# participant's *earlier* origins only (origin + h <= t: outcomes already recorded at t).
# Features (argument 3, letters): 1 intercept, m twin median, p last CGM (persistence),
# s / S / L CGM change over 15 / 30 / 60 min, c / b carbs / bolus in the last 2 h,
# C / B the same over 1 h, w 80 % band width, h / H time-of-day sine / cosine.
# Input: the per-participant dumps of
#   MT_DUMP=/tmp/bt cargo run --release -p medtwin-twin --example backtest_uom -- \
#       ../shared/realdata/T1D-UOM 14 2301 2302 2305 2306 2308 2313 2401
# Usage: python3 twin_stacking_prototype.py 2301,2302,... LAMBDA FEATURES   (needs numpy)
# Measured 2026-11-29 on the seven participants (LAMBDA 3, features 1mpsS): pooled RMSE ratio to
# persistence 30 min 1.026 -> 0.936, 60 min 1.073 -> 0.939, 120 min 1.092 -> 0.892.
import csv, sys, math, bisect
import numpy as np, os
DUMP_DIR = os.environ.get("MT_DUMP", "/tmp/bt")
ids = sys.argv[1].split(',')
lamv = float(sys.argv[2]); fs = sys.argv[3]
def load(pid):
    pts = list(csv.DictReader(open(f'{DUMP_DIR}/{pid}.csv')))
    inp = {'cgm':[], 'carbs':[], 'bolus':[]}
    for r in csv.DictReader(open(f'{DUMP_DIR}/{pid}.inputs.csv')):
        inp[r['kind']].append((float(r['t_min']), float(r['value'])))
    return pts, inp
def feats(t, med, pers, inp, lo80, hi80):
    c = inp['cgm']; ts = [x[0] for x in c]
    def cg(tq):
        i = bisect.bisect_right(ts, tq) - 1
        return c[i][1] if i >= 0 else pers
    g15, g30, g60 = cg(t-15), cg(t-30), cg(t-60)
    carbs2h = sum(v for (tt, v) in inp['carbs'] if t-120 < tt <= t)
    bol2h = sum(v for (tt, v) in inp['bolus'] if t-120 < tt <= t)
    carbs1h = sum(v for (tt, v) in inp['carbs'] if t-60 < tt <= t)
    bol1h = sum(v for (tt, v) in inp['bolus'] if t-60 < tt <= t)
    hod = (t/60.0) % 24
    f = {'1':1.0,'m':med,'p':pers,'s':pers-g15,'S':pers-g30,'L':pers-g60,'c':carbs2h,'b':bol2h,'C':carbs1h,'B':bol1h,'w':hi80-lo80,
         'h':math.sin(2*math.pi*hod/24),'H':math.cos(2*math.pi*hod/24)}
    return [f[k] for k in fs]
pool = {}
for pid in ids:
    pts, inp = load(pid)
    by_h = {}
    for p in pts:
        by_h.setdefault(int(p['horizon_min']), []).append(p)
    for h, ps in by_h.items():
        ps.sort(key=lambda p: float(p['origin_min']))
        X = np.array([feats(float(p['origin_min']), float(p['median_mg_dl']), float(p['persistence_mg_dl']), inp, float(p['lo80']), float(p['hi80'])) for p in ps])
        Y = np.array([float(p['observed_mg_dl']) for p in ps]); T = np.array([float(p['origin_min']) for p in ps])
        M = np.array([float(p['median_mg_dl']) for p in ps])
        P = np.array([float(p['persistence_mg_dl']) for p in ps])
        mu = X.mean(0); sd = X.std(0); sd[sd==0]=1
        for i in range(len(ps)):
            train = T + h <= T[i]
            if train.sum() >= 24:
                A = X[train]; b = Y[train] - M[train]
                mu = A.mean(0); sd = A.std(0); sd[sd < 1e-9] = 1
                Z = (A - mu)/sd; Z[:, 0] = 1
                lam = np.eye(Z.shape[1]) * lamv; lam[0,0] = 0
                w = np.linalg.solve(Z.T @ Z + lam, Z.T @ b)
                z = (X[i]-mu)/sd; z[0] = 1
                yhat = M[i] + z @ w
            else:
                yhat = M[i]
            pool.setdefault(h, []).append((Y[i], M[i], P[i], yhat))
out=[]
for h in sorted(pool):
    a = np.array(pool[h])
    r = lambda k: math.sqrt(np.mean((a[:,k]-a[:,0])**2))
    out.append(f'h={h} twin {r(1)/r(2):.3f} stack {r(3)/r(2):.3f}')
print(fs, lamv, ' | '.join(out))
