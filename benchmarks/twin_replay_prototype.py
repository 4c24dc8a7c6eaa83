# Offline prototype (2026-12-04, fifth session; not part of the build or CI): does telling the
# hybrid change model the recorded future meals and boluses ("replay") beat the input-blind model?
# Per participant and horizon, ridge (and with GBM=1 sklearn gradient boosting, blended 1/2 : 1/2 as in
# crates/twin/src/hybrid.rs) refitted at origins every EVERY minutes on the participant's earlier data only
# (last 14 days), with the blind features of hybrid.rs and FUT future-input features (c/i: carbohydrate and
# insulin absorbed by t+h, tau 40/70 min; C/I: tau 20/40; r: totals; x: carbs x hinge below 200).
# MODE=effect: replay = blind + [f(x, plan) - f(x, no inputs)] (an empty plan = no plan, the product's
# semantics); MODE=direct: replay = f(x, plan) (the plan taken as the complete list of inputs).
# Reads the inputs dumped by `MT_DUMP=DIR backtest_uom ...` (DIR/<id>.inputs.csv; whole records).
# Measured (EVERY=360, FUT=ciCIr, 7 T1D-UOM participants, forecasts with an input in the horizon n 157/303/623):
#   ridge only (GBM=0), direct: 0.997 / 0.991 / 0.993 x blind at 30/60/120 min (EVERY=120, FUT=ci; n 593/1121/2015)
#   ridge+GBM, effect: 0.967 / 0.979 / 0.987;  ridge+GBM, direct: 0.969 / 0.972 / 0.949
import csv, sys, math, os
import numpy as np
GB=os.environ.get('GBM','1')=='1'
if GB:
    from sklearn.ensemble import GradientBoostingRegressor as GBR
REFIT=float(os.environ.get('REFIT','4320'))
D=os.environ.get('D','/tmp/lead/dump_blind')
ids=['2301','2302','2305','2306','2308','2313','2401']
H=[30,60,120]
lam=float(os.environ.get('LAM','10'))
TAUC=40.; TAUI=70.
FUT=os.environ.get('FUT','ci')
def cum2(t,tau):
    t=np.maximum(t,0)/tau
    return 1-(1+t)*np.exp(-t)
def load(pid):
    pts=list(csv.DictReader(open(f'{D}/{pid}.csv')))
    inp={}
    for r in csv.DictReader(open(f'{D}/{pid}.inputs.csv')):
        inp.setdefault(r['kind'],[]).append((float(r['t_min']),float(r['value'])))
    return pts,inp
def arr(inp,k):
    a=np.array(inp.get(k,[]),dtype=float).reshape(-1,2); return a[:,0],a[:,1]
def feats(inp):
    ct,cv=arr(inp,'cgm'); mt,mv=arr(inp,'carbs'); bt,bv=arr(inp,'bolus')
    def cg(tq):
        i=np.searchsorted(ct,tq,side='right')-1; return cv[max(i,0)]
    def F(t,h):
        g=cg(t); g15=cg(t-15); g30=cg(t-30); g60=cg(t-60)
        m=mt<=t; b=bt<=t
        cf=np.sum(mv[m]*(cum2(t+h-mt[m],TAUC)-cum2(t-mt[m],TAUC)))
        inf=np.sum(bv[b]*(cum2(t+h-bt[b],TAUI)-cum2(t-bt[b],TAUI)))
        cob=np.sum(mv[m]*(1-cum2(t-mt[m],TAUC))); iob=np.sum(bv[b]*(1-cum2(t-bt[b],TAUI)))
        hod=(t/60)%24
        i0=np.searchsorted(ct,t-1440); i1=np.searchsorted(ct,t,side='right')
        j0=np.searchsorted(ct,t-20); tt=ct[j0:i1]; gg=cv[j0:i1]
        sl=np.polyfit(tt,gg,1)[0] if len(tt)>=3 else 0.0
        base=[1.0,g,g-g15,g-g30,g-g60,cf,inf,cob,iob,math.sin(2*math.pi*hod/24),math.cos(2*math.pi*hod/24),
              max(0,100-g),max(0,g-200),g-np.mean(cv[i0:i1]),sl,(g-g15)*max(0,100-g)/50,(g-g15)*max(0,g-180)/50,
              (g-g15)-(g15-g30),g-cg(t-5),g-cg(t-10),g-cg(t-90),g-cg(t-120)]
        # future (replay) features: inputs in (t, t+h]
        fm=(mt>t)&(mt<=t+h); fb=(bt>t)&(bt<=t+h)
        fut=[]
        if 'c' in FUT: fut.append(np.sum(mv[fm]*cum2(t+h-mt[fm],TAUC)))
        if 'i' in FUT: fut.append(np.sum(bv[fb]*cum2(t+h-bt[fb],TAUI)))
        if 'C' in FUT: fut.append(np.sum(mv[fm]*cum2(t+h-mt[fm],20)))
        if 'I' in FUT: fut.append(np.sum(bv[fb]*cum2(t+h-bt[fb],40)))
        if 'r' in FUT: fut+= [np.sum(mv[fm]), np.sum(bv[fb])]
        if 'x' in FUT: fut.append(np.sum(mv[fm]*cum2(t+h-mt[fm],TAUC))*max(0,200-g)/100)
        has=bool(fm.any() or fb.any())
        return base,fut,g,has
    return F,ct,cv
def ridge(X,y,lam):
    mu=X.mean(0); sd=X.std(0); sd[sd<1e-9]=1
    Z=(X-mu)/sd; Z[:,0]=1
    L=np.eye(Z.shape[1])*lam; L[0,0]=0
    w=np.linalg.solve(Z.T@Z+L*len(y)/100, Z.T@y)
    def p(x):
        z=(np.asarray(x)-mu)/sd; z[0]=1; return z@w
    return p,w,sd
pool={h:[] for h in H}
for pid in ids:
    pts,inp=load(pid)
    F,ct,cv=feats(inp)
    origins=list(np.arange(1440.0, ct[-1]-200, float(os.environ.get('EVERY','120')))); origins=[ct[np.searchsorted(ct,o,side='right')-1] for o in origins]
    tend=max(origins)+200
    for h in H:
        ts=[];last=-1e9
        for s in ct:
            if s>=60 and s-last>=14 and s<=tend: ts.append(s); last=s
        XB=[];XF=[];Y=[];T=[]
        for s in ts:
            j=np.searchsorted(ct,s+h)
            if j<len(ct) and abs(ct[j]-(s+h))<=2.5:
                b,f,g,_=F(s,h); XB.append(b); XF.append(b+f); Y.append(cv[j]-g); T.append(s)
        XB=np.array(XB);XF=np.array(XF);Y=np.array(Y);T=np.array(T)
        cache={}
        for t in origins:
            j=np.searchsorted(ct,t+h)
            if not(j<len(ct) and abs(ct[j]-(t+h))<=2.5): continue
            tr=(T+h<=t)&(T>=t-14*1440)
            if tr.sum()<50: continue
            b,f,g,has=F(t,h)
            lo,hi=np.percentile(Y[tr],[0.5,99.5])
            pb,_,_=ridge(XB[tr],Y[tr],lam); pf,w,sd=ridge(XF[tr],Y[tr],lam)
            db=min(max(pb(b),lo),hi); df=min(max(pf(b+f),lo),hi)
            if not GB:
                df=db+(pf(b+f)-pf(b+[0.0]*len(f))) if os.environ.get('MODE','effect')=='effect' else df
                pool[h].append((pid,has,cv[j],g+db,g+df,g))
                continue
            key=int(t//REFIT)
            if key not in cache:
                gb=GBR(n_estimators=100,max_depth=3,learning_rate=0.1,subsample=0.8,random_state=0).fit(XB[tr],Y[tr])
                gf=GBR(n_estimators=100,max_depth=3,learning_rate=0.1,subsample=0.8,random_state=0).fit(XF[tr],Y[tr])
                cache={key:(gb,gf)}
            gb,gf=cache[key]
            z=[0.0]*len(f)
            eff=0.5*(pf(b+f)-pf(b+z))+0.5*(gf.predict([b+f])[0]-gf.predict([b+z])[0])
            db=min(max(0.5*db+0.5*gb.predict([b])[0],lo),hi)
            df=db+eff if os.environ.get('MODE','effect')=='effect' else min(max(0.5*df+0.5*gf.predict([b+f])[0],lo),hi)
            obs=cv[j]
            pool[h].append((pid,has,obs,g+db,g+df,g))
for h in H:
    rows=pool[h]
    for sub in ['all','inputs']:
        a=[r for r in rows if sub=='all' or r[1]]
        o=np.array([r[2] for r in a]); pb=np.array([r[3] for r in a]); pf=np.array([r[4] for r in a]); pe=np.array([r[5] for r in a])
        rb=np.sqrt(np.mean((pb-o)**2)); rf=np.sqrt(np.mean((pf-o)**2)); rp=np.sqrt(np.mean((pe-o)**2))
        print(h,sub,'n',len(a),'blind %.1f replay %.1f ratio %.3f  pers %.1f'%(rb,rf,rf/rb,rp))
    for pid in ids:
        a=[r for r in rows if r[0]==pid and r[1]]
        if not a: continue
        o=np.array([r[2] for r in a]); pb=np.array([r[3] for r in a]); pf=np.array([r[4] for r in a])
        print('   ',pid,len(a),'%.3f'%(np.sqrt(np.mean((pf-o)**2))/np.sqrt(np.mean((pb-o)**2))))
