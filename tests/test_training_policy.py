"""training_policy: when to validate, the batch-norm momentum of a run, and the history behind best/ and
early stopping (plain functions, no graph)."""
from effnet.training import training_policy


def test_evaluation_interval():
    # Automatic: up to 5 validations a run for small validation splits, with at least as many images trained
    # as validated in between; none for ImageNet-sized or missing ones.
    assert training_policy.evaluation_interval(None, 0, 44.9, 1000, 359, 32) == 200  # the demo
    assert training_policy.evaluation_interval(None, 0, 6.25, 63, 359, 16) == 23
    assert training_policy.evaluation_interval(None, 0, 5005, 350 * 5005, 50000, 256) == 0
    assert training_policy.evaluation_interval(None, 0, 6.25, 63, 0, 16) == 0
    assert training_policy.evaluation_interval(None, 0, 180, 4, 359, 8) == 0  # 32 images trained, 359 to validate
    assert training_policy.evaluation_interval(2, 0, 6.25, 63, 359, 16) == 12
    assert training_policy.evaluation_interval(0, 0, 6.25, 63, 359, 16) == 0
    assert training_policy.evaluation_interval(2, 5, 6.25, 63, 50000, 16) == 5
    steps = [s for s in range(1, 64) if training_policy.is_evaluation_step(s, 23, 63)]
    assert steps == [23, 46, 63]


def test_batch_norm_momentum_is_official_for_long_runs_and_forgets_in_short_ones():
    assert training_policy.batch_norm_momentum(1000) == 0.99  # the demo recipe keeps the official value
    assert training_policy.batch_norm_momentum(350 * 5005) == 0.99
    momentum = training_policy.batch_norm_momentum(63)
    assert momentum ** 63 < 1e-3 < 0.99 ** 63
    assert training_policy.batch_norm_momentum(1) == 0.5


def test_history_best_and_early_stopping(tmp_path):
    history = [{"step": 10, "top1": 0.5}, {"step": 20, "top1": 0.7}, {"step": 30, "top1": 0.7},
               {"step": 40, "top1": 0.6}]
    training_policy.write_history(str(tmp_path), history)
    assert training_policy.read_history(str(tmp_path), 40) == history
    assert training_policy.read_history(str(tmp_path), 25) == history[:2]  # resumed from step 20
    assert training_policy.best_entry(history)["step"] == 20  # the earliest of equals
    assert training_policy.evaluations_since_best(history) == 2
    assert training_policy.should_stop_early(history, 2)
    assert not training_policy.should_stop_early(history, 3)
    assert not training_policy.should_stop_early(history, 0)
    assert training_policy.read_history(str(tmp_path / "nothing"), 10) == []


def test_log_interval_shows_short_runs_along_the_way():
    assert training_policy.log_interval(None, 350 * 5005) == 100
    assert training_policy.log_interval(None, 24) == 2  # a ten-epoch fine-tuning run on 150 photos
    assert training_policy.log_interval(None, 5) == 1
    assert training_policy.log_interval(7, 24) == 7  # asked for
