import time, sys, numpy as np, tensorflow as tf
from iwae_tf import model as M, rng
R = 5000
models = {s: M.build_model("iwae", data_shape=s) for s in [(784,), (28,28,1)]}
xs = {s: tf.constant((np.random.RandomState(0).rand(5, *s) > 0.5).astype(np.float32)) for s in models}
fns = {}
for s, m in models.items():
    m.log_weights(xs[s], 2, rng.from_int(0))
    fns[f"lw{s}"] = (tf.function(lambda x, sd, m=m: m.log_weights(x, R // 5, sd), jit_compile=True), (xs[s], rng.from_int(1)))
m = models[(784,)]
dec = m.decoder
W = [tf.random.normal(s) for s in [(50,200),(200,200),(200,784)]]
h = tf.random.normal((R,50)); xx = tf.reshape(xs[(784,)][:1], [1,784])
@tf.function(jit_compile=True)
def chain(h):
    a = tf.tanh(h@W[0]); a = tf.tanh(a@W[1]); return tf.reduce_sum(a@W[2], -1)
@tf.function(jit_compile=True)
def chain_ll(h):
    a = tf.tanh(h@W[0]); a = tf.tanh(a@W[1]); l = a@W[2]
    return tf.reduce_sum(xx*l - tf.nn.softplus(l), -1)
@tf.function(jit_compile=True)
def mm3(h):
    a = h@W[0]; a = a@W[1]; return tf.reduce_sum(a@W[2], -1)
@tf.function(jit_compile=True)
def enc_noise(sd):
    return rng.stateless_normal([R//5, 5, 50], sd)
fns.update(chain=(chain,(h,)), chain_ll=(chain_ll,(h,)), mm3=(mm3,(h,)), noise=(enc_noise,(rng.from_int(3),)))
@tf.function
def probe(a, b): return a@b
A = tf.random.normal((1000,784)); B = tf.random.normal((784,200))
fns["probe"] = (probe, (A,B))
for f,a in fns.values(): f(*a)
res = {k: [] for k in fns}
for r in range(int(sys.argv[1]) if len(sys.argv)>1 else 6):
    for k,(f,a) in fns.items():
        for _ in range(8):
            t=time.perf_counter(); _ = [v.numpy() for v in tf.nest.flatten(f(*a))]; res[k].append(time.perf_counter()-t)
flop = 2*R*(50*200+200*200+200*784)
for k,v in res.items():
    t = np.median(v)
    fl = 2*1000*784*200 if k=="probe" else flop
    print(f"{k:16s} {t*1e3:8.2f} ms  {fl/t/1e9:7.1f} GFLOP/s")
