import time, sys, numpy as np, tensorflow as tf
from iwae_tf import model as M, rng, evaluation as E
shape=(28,28,1)
m = M.build_model("iwae", data_shape=shape)
N=int(sys.argv[1]); K=int(sys.argv[2])
x = (np.random.RandomState(0).rand(N, *shape) > 0.5).astype(np.float32)
ds = tf.data.Dataset.from_tensor_slices(x).batch(100)
for rep in range(2):
    t=time.perf_counter(); e = E.estimate_log_likelihood(m, ds, K, seed=0); dt=time.perf_counter()-t
    print(f"rep {rep}: {dt:.2f} s, {dt/(N*K)*1e6:.3f} us/row, nll {e.nll:.3f}")
