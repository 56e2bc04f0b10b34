import os, time, sys, numpy as np, tensorflow as tf
from iwae_tf import model as M, rng, evaluation as E
shape=(28,28,1)
K=1000
x = tf.constant((np.random.RandomState(0).rand(100, *shape) > 0.5).astype(np.float32))
progs={}
for v in ("old","new"):
    os.environ["SP"]=v
    m = M.build_model("iwae", data_shape=shape); m.log_weights(x[:1], 1, rng.from_int(0))
    progs[v] = E._statistics_program(m, K, E.DEFAULT_MAX_ROWS, 5)
    progs[v](x, rng.from_int(1))
res={k:[] for k in progs}
for r in range(8):
    for k,p in progs.items():
        t=time.perf_counter(); [a.numpy() for a in p(x, rng.from_int(r))]; res[k].append(time.perf_counter()-t)
for k in progs: print(k, f"{np.median(res[k])/(100*K)*1e6:.3f} us/row", " ".join(f"{v:.2f}" for v in res[k]))
