"""tf.distribute: a MirroredStrategy step equals a single-device step; multi-worker agrees.

Both run in subprocesses: logical CPU devices and multi-worker collectives must be set up
before TensorFlow initializes, which the test process has already done.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIRRORED_CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import tf_keras as keras
    from iwae_tf import rng
    from iwae_tf.model import build_model

    # Noise-free draws (latent noise 0, weights at their means) make one step deterministic,
    # so a replica split that changed the update would show.
    rng.normal = lambda shape, seed=None: tf.zeros(shape)

    x = (np.random.default_rng(0).random((20, 30)) < 0.3).astype(np.float32)
    arch = dict(latent_sizes=(3,), hidden_sizes=((16,),), data_shape=(30,), init_scale=0.05,
                kl_weight=2.0, num_train_examples=100)

    def one_step(strategy, initial=None):
        with strategy.scope():
            model = build_model("iwaeu", 4, estimator=sys.argv[1], **arch)
            model(x[:1])
            if initial is not None:
                model.set_weights(initial)
            before = model.get_weights()
            # Plain SGD: Adam's first step would hide a wrong gradient scale.
            model.compile(optimizer=keras.optimizers.SGD(0.01), steps_per_execution=1)
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(20), epochs=1, verbose=0)
        return before, model.get_weights(), strategy.num_replicas_in_sync

    start, single, _ = one_step(tf.distribute.get_strategy())
    mirrored_start, mirrored, replicas = one_step(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), start)
    update = [b - a for a, b in zip(start, single)]
    diff = max(float(np.max(np.abs((m - a) - u))) for a, m, u in zip(start, mirrored, update))
    size = max(float(np.max(np.abs(u))) for u in update)
    print(json.dumps({"replicas": replicas, "max_update_diff": diff, "max_update": size}))
    """
)


@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_mirrored_step_equals_single_device_step(estimator):
    # dreg: each network steps along its own surrogate, both averaged over the global batch.
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_CHECK, estimator],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["max_update"] > 1e-4  # the step really moved the weights
    # A loss summed per replica (2x) or a KL counted per replica would differ by ~max_update.
    assert report["max_update_diff"] < 1e-6 + 1e-4 * report["max_update"], report


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_to_identical_weights(mnist_data_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    args = [
        sys.executable,
        os.path.join(REPO, "scripts", "train.py"),
        "--strategy=multi_worker",
        "--model=iwae",
        "--estimator=dreg",  # The step with a surrogate per network, the longer path.
        "--k=2",
        "--epochs=2",
        "--steps_per_epoch=5",
        "--batch_size=20",
        "--eval_k=4",
        "--train_split=train[:400]",
        "--test_split=test[:40]",
        f"--data_dir={mnist_data_dir}",
        f"--output_dir={out}",
        f"--export_dir={tmp_path / 'export'}",
    ]
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]

    import tensorflow as tf

    def weights(run_dir):
        reader = tf.train.load_checkpoint(str(run_dir / "weights" / "model"))
        names = sorted(n for n in reader.get_variable_to_shape_map() if "OPTIMIZER" not in n)
        return {n: reader.get_tensor(n) for n in names if "/.ATTRIBUTES/VARIABLE_VALUE" in n}

    chief, other = weights(out), weights(out / "worker_1")
    assert chief.keys() == other.keys() and len(chief) >= 12
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    metrics = json.loads((out / "metrics.json").read_text())
    # Both workers ran the same 10 global steps.
    assert metrics["train_steps"] == 10
