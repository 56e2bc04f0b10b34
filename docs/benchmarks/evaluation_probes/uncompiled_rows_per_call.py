import time, numpy as np, tensorflow as tf
from iwae_tf import model as M, rng, evaluation as E
m = M.build_model("iwae", data_shape=(28,28,1))
x = tf.constant((np.random.RandomState(0).rand(100,28,28,1) > 0.5).astype(np.float32))
K = tf.constant(1000)
fs = {}
for mr in (50000, 10000, 5000, 2000):
    fs[f"plain{mr}"] = tf.function(lambda x, k, mr=mr: E.score(m, x, k, rng.from_int(0), mr, jit_compile=False))
fs["jit"] = tf.function(lambda x, k: E.score(m, x, k, rng.from_int(0), 50000, jit_compile=True))
for f in fs.values(): f(x, K)
res = {k: [] for k in fs}
for r in range(3):
    for n, f in fs.items():
        t = time.perf_counter(); f(x, K)[0].numpy(); res[n].append(time.perf_counter() - t)
for n in fs: print(n, f"{np.median(res[n]):.2f} s", f"{np.median(res[n])/(100*1000)*1e6:.2f} us/row")
