"""Tests of the Burda et al. learning-rate schedule: epoch -> rate, and inside a real Adam."""

import copy
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from iwae_tf import schedules
from iwae_tf.schedules import BurdaSchedule, burda_epochs, burda_learning_rate

# (first epoch, last epoch) of stage i, written out from "3^i passes" by hand.
STAGE_BOUNDS = [(0, 0), (1, 3), (4, 12), (13, 39), (40, 120), (121, 363), (364, 1092), (1093, 3279)]


def paper_rate(i):
    return 0.001 * 10 ** (-i / 7)


def test_total_epochs_is_3280_and_truncates():
    assert burda_epochs() == burda_epochs(8) == 3280
    assert [burda_epochs(s) for s in range(1, 9)] == [1, 4, 13, 40, 121, 364, 1093, 3280]
    assert burda_epochs(3) == 1 + 3 + 9
    with pytest.raises(ValueError):
        burda_epochs(0)


def test_rate_at_every_stage_boundary():
    for i, (first, last) in enumerate(STAGE_BOUNDS):
        assert last - first + 1 == 3**i
        for epoch in (first, last):
            assert burda_learning_rate(epoch) == pytest.approx(paper_rate(i), rel=1e-12), epoch
            assert schedules.burda_stage(epoch) == i
    # The last stage ends an order of magnitude below the first.
    assert burda_learning_rate(3279) == pytest.approx(1e-4, rel=1e-12)
    assert burda_learning_rate(0, base_rate=3e-3) == 3e-3


def test_truncated_schedule_keeps_the_first_stages_and_then_holds():
    for epoch in range(13):
        assert burda_learning_rate(epoch, stages=3) == burda_learning_rate(epoch, stages=8)
    # Past the last stage of a truncated schedule the rate stays at that stage's.
    assert burda_learning_rate(13, stages=3) == pytest.approx(paper_rate(2))
    assert burda_learning_rate(10_000, stages=3) == pytest.approx(paper_rate(2))
    assert burda_learning_rate(10_000) == pytest.approx(paper_rate(7))
    assert burda_learning_rate(5, stages=1) == 0.001
    with pytest.raises(ValueError):
        burda_learning_rate(-1)


def test_schedule_maps_steps_to_the_epoch_rate():
    steps_per_epoch = 7
    schedule = BurdaSchedule(steps_per_epoch)
    epochs = sorted({e for bounds in STAGE_BOUNDS for e in bounds} | {3280, 5000})
    for epoch in epochs:
        for step in (epoch * steps_per_epoch, epoch * steps_per_epoch + steps_per_epoch - 1):
            got = float(schedule(step))
            assert got == pytest.approx(burda_learning_rate(epoch), rel=1e-6), (epoch, step)
    # Int64 steps, as optimizer.iterations is.
    assert float(schedule(tf.constant(7 * 1093, tf.int64))) == pytest.approx(paper_rate(7))
    assert schedule.total_steps == 3280 * 7


def test_schedule_traces_under_xla_with_a_tensor_step():
    schedule = BurdaSchedule(3, stages=4)
    rate = tf.function(schedule, jit_compile=True)
    for step in (0, 2, 3, 11, 12, 38, 39, 119, 120, 10**6):
        expected = burda_learning_rate(step // 3, stages=4)
        assert float(rate(tf.constant(step, tf.int64))) == pytest.approx(expected, rel=1e-6)


def test_adam_uses_the_scheduled_rate_at_every_step():
    # With a constant gradient g = 1, Keras' Adam moves the variable at step t by
    #   rate_t * sqrt(c_t) / (sqrt(c_t) + epsilon),  c_t = 1 - beta2^t
    # (its m and v are both 1 - beta^t, and epsilon is added before bias correction), so
    # the deltas read off the rate the optimizer used at each step.
    steps_per_epoch, stages = 2, 3
    schedule = BurdaSchedule(steps_per_epoch, stages=stages)
    optimizer = schedules.make_optimizer(schedule)
    assert optimizer.epsilon == 1e-4 and optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.999
    var = tf.Variable(0.0, dtype=tf.float64)
    values = [0.0]
    num_steps = burda_epochs(stages) * steps_per_epoch + 4  # 4 steps past the end.
    for _ in range(num_steps):
        optimizer.apply_gradients([(tf.constant(1.0, tf.float64), var)])
        values.append(float(var.numpy()))
    root_c = np.sqrt(1 - 0.999 ** np.arange(1, num_steps + 1))
    used = -np.diff(values) * (root_c + 1e-4) / root_c
    expected = [
        burda_learning_rate(step // steps_per_epoch, stages=stages) for step in range(num_steps)
    ]
    np.testing.assert_allclose(used, expected, rtol=1e-5)
    assert int(optimizer.iterations) == num_steps
    # The optimizer reports the rate of the last step it took.
    assert float(optimizer.learning_rate) == pytest.approx(paper_rate(2), rel=1e-6)


def test_schedule_resumes_from_a_restored_step():
    # BackupAndRestore restores optimizer.iterations; the rate must follow the step alone.
    optimizer = schedules.make_optimizer(BurdaSchedule(10))
    var = tf.Variable(1.0)
    optimizer.apply_gradients([(tf.constant(1.0), var)])
    optimizer.iterations.assign(10 * 40)  # The start of stage 4.
    optimizer.apply_gradients([(tf.constant(1.0), var)])
    assert float(optimizer.learning_rate) == pytest.approx(paper_rate(4), rel=1e-6)


def test_schedule_serializes_alone_and_inside_adam():
    schedule = BurdaSchedule(3000, base_rate=2e-3, stages=5)
    assert schedule.get_config() == {
        "steps_per_epoch": 3000,
        "base_rate": 2e-3,
        "stages": 5,
        "name": None,
    }
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(restored, BurdaSchedule)
    assert restored.get_config() == schedule.get_config()
    optimizer = schedules.make_optimizer(schedule)
    config = optimizer.get_config()
    assert config["learning_rate"]["registered_name"] == "iwae_tf>BurdaSchedule"
    # from_config deserializes the schedule in place: hand it a copy.
    clone = keras.optimizers.Adam.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    assert clone.epsilon == 1e-4


def test_make_learning_rate_and_num_epochs():
    assert schedules.make_learning_rate("constant", 1e-3, 3000) == 1e-3
    burda = schedules.make_learning_rate("burda", 1e-3, 3000, stages=2)
    assert isinstance(burda, BurdaSchedule) and (burda.steps_per_epoch, burda.stages) == (3000, 2)
    assert schedules.num_epochs("burda", epochs=3, stages=8) == 3280
    assert schedules.num_epochs("constant", epochs=3, stages=8) == 3
    for bad in (lambda: schedules.make_learning_rate("cosine", 1e-3, 1), lambda: BurdaSchedule(0)):
        with pytest.raises(ValueError):
            bad()
    assert math.isclose(schedules.stage_rates()[-1], 1e-3 * 10 ** (-1))
    assert schedules.stage_start_epochs() == [first for first, _ in STAGE_BOUNDS]
