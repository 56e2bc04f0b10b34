"""The learning-rate schedule of Burda, Grosse & Salakhutdinov (2016), Section 5.

The paper trains with Adam (beta1 = 0.9, beta2 = 0.999, epsilon = 1e-4, minibatch 20) in
stages: for i = 0, ..., 7 it makes 3^i passes over the training data at learning rate

    r_i = 0.001 * 10^(-i/7),

so 3280 passes in all (sum_{i<8} 3^i = (3^8 - 1) / 2), the rate falling by 10x over the whole
run. Stage i covers epochs [(3^i - 1) / 2, (3^(i+1) - 1) / 2), which puts its first epoch at
0, 1, 4, 13, 40, 121, 364, 1093. Truncating to `stages` < 8 keeps the first stages unchanged
(the rates do not depend on how many stages are run), which is how a shorter budget is stated.

`BurdaSchedule` maps the optimizer's step to that rate, epoch = step // steps_per_epoch. Being
keyed by `optimizer.iterations` rather than by a callback's epoch counter, it resumes
correctly when Keras' BackupAndRestore restores the optimizer's step, and it is computed in
the graph (integer division, comparisons, a gather) so it runs inside an XLA train step.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

SCHEDULES: tuple[str, ...] = ("constant", "burda")
"""Schedule names accepted by `make_learning_rate` (and `TrainConfig.schedule`)."""

PAPER_STAGES = 8
PAPER_BASE_RATE = 1e-3
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-4


def _check_stages(stages: int) -> None:
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")


def stage_start_epochs(stages: int = PAPER_STAGES) -> list[int]:
    """First epoch of every stage: (3^i - 1) / 2 for i = 0..stages-1 (0, 1, 4, 13, ...)."""
    _check_stages(stages)
    return [(3**i - 1) // 2 for i in range(stages)]


def stage_rates(base_rate: float = PAPER_BASE_RATE, stages: int = PAPER_STAGES) -> list[float]:
    """Learning rate of every stage: base_rate * 10^(-i/7) for i = 0..stages-1."""
    _check_stages(stages)
    return [base_rate * 10.0 ** (-i / 7.0) for i in range(stages)]


def burda_epochs(stages: int = PAPER_STAGES) -> int:
    """Total passes of the schedule: sum_{i<stages} 3^i = (3^stages - 1) / 2 (3280 for 8)."""
    _check_stages(stages)
    return (3**stages - 1) // 2


def burda_stage(epoch: int, stages: int = PAPER_STAGES) -> int:
    """The stage i (0-based) that a 0-based epoch falls in.

    Epochs past the last stage stay in the last stage, as `BurdaSchedule` does.

    Raises:
      ValueError: epoch < 0 or stages < 1.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return sum(1 for start in stage_start_epochs(stages)[1:] if epoch >= start)


def burda_learning_rate(
    epoch: int, base_rate: float = PAPER_BASE_RATE, stages: int = PAPER_STAGES
) -> float:
    """The learning rate of a 0-based epoch: base_rate * 10^(-i/7) in stage i.

    Args:
      epoch: 0-based epoch; past the last stage, the last stage's rate.
      base_rate: The first stage's rate (0.001 in the paper).
      stages: Number of stages run (8 in the paper).

    Returns:
      The rate, a Python float.
    """
    return stage_rates(base_rate, stages)[burda_stage(epoch, stages)]


@keras.saving.register_keras_serializable(package="iwae_tf")
class BurdaSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Burda et al.'s staged rate, as a function of the optimizer step.

    Step s is in epoch e = s // steps_per_epoch, which is in stage i (3^i passes each) and gets
    rate base_rate * 10^(-i/7). Steps past the last stage keep the last stage's rate.
    """

    def __init__(
        self,
        steps_per_epoch: int,
        base_rate: float = PAPER_BASE_RATE,
        stages: int = PAPER_STAGES,
        name: str | None = None,
    ) -> None:
        """Builds the schedule.

        Args:
          steps_per_epoch: Optimizer steps per pass over the training data.
          base_rate: Rate of the first stage.
          stages: Number of stages (8 in the paper; fewer truncates the run).
          name: Optional name scope of the ops.
        """
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if not base_rate > 0:
            raise ValueError(f"base_rate must be > 0, got {base_rate}")
        _check_stages(stages)
        self.steps_per_epoch = int(steps_per_epoch)
        self.base_rate = float(base_rate)
        self.stages = int(stages)
        self.name = name

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole schedule: burda_epochs(stages) * steps_per_epoch."""
        return burda_epochs(self.stages) * self.steps_per_epoch

    def __call__(self, step: tf.Tensor | int) -> tf.Tensor:
        with tf.name_scope(self.name or "BurdaSchedule"):
            step = tf.cast(step, tf.int64)
            epoch = step // self.steps_per_epoch
            # The stage is the count of later stages' first epochs already reached: a
            # comparison and a sum, no Python branching on tensors, so it traces under XLA.
            starts = tf.constant(stage_start_epochs(self.stages)[1:], tf.int64)
            stage = tf.reduce_sum(tf.cast(epoch >= starts, tf.int32))
            # Gathering the rates computed in Python gives exactly `burda_learning_rate`'s
            # values (rounded to float32), rather than a float32 re-computation of 10^(-i/7).
            rates = tf.constant(stage_rates(self.base_rate, self.stages), tf.float32)
            return tf.gather(rates, stage)

    def get_config(self) -> dict[str, Any]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "base_rate": self.base_rate,
            "stages": self.stages,
            "name": self.name,
        }


def make_learning_rate(
    schedule: str,
    base_rate: float,
    steps_per_epoch: int,
    stages: int = PAPER_STAGES,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The `learning_rate` argument of the optimizer for a named schedule.

    Args:
      schedule: "constant" (base_rate throughout) or "burda" (`BurdaSchedule`).
      base_rate: The (first) learning rate.
      steps_per_epoch: Optimizer steps per epoch, needed by "burda".
      stages: Stages of "burda".

    Returns:
      A float or a LearningRateSchedule.
    """
    if schedule == "constant":
        return float(base_rate)
    if schedule == "burda":
        return BurdaSchedule(steps_per_epoch, base_rate, stages)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def make_optimizer(
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
) -> keras.optimizers.Adam:
    """Adam with the paper's beta1 = 0.9, beta2 = 0.999 and epsilon = 1e-4."""
    return keras.optimizers.Adam(
        learning_rate, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON
    )


def num_epochs(schedule: str, epochs: int, stages: int = PAPER_STAGES) -> int:
    """Epochs a run trains: burda_epochs(stages) for "burda", else `epochs`."""
    if schedule == "burda":
        return burda_epochs(stages)
    if schedule == "constant":
        return epochs
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
