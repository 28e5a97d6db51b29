"""The training log's progress line: one per interval, with loss, top-1, learning rate, images/s, time left."""
import time


def duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (hours, minutes, seconds)


class ProgressLog(object):
    """One line per interval: epoch, step, loss, top-1, learning rate, images/s, time left."""

    def __init__(self, total_steps, steps_per_epoch, global_batch, first_step):
        self.total_steps, self.steps_per_epoch, self.global_batch = total_steps, steps_per_epoch, global_batch
        self.mark_step, self.mark_time = first_step, time.time()
        self.timed_steps, self.timed_seconds = 0, 0.0
        self.warm = False
        self.losses, self.accuracies = [], []
        self.last_accuracy = None

    def add(self, loss, accuracy):
        self.losses.append(loss)
        self.accuracies.append(accuracy)

    def pause(self, seconds):
        """Leaves `seconds` spent outside training (validation) out of the speed and time-left figures."""
        self.mark_time += seconds

    def images_per_second(self):
        if self.timed_seconds <= 0:
            return None
        return self.timed_steps * self.global_batch / self.timed_seconds

    def line(self, step, learning_rate):
        now = time.time()
        steps, seconds = step - self.mark_step, now - self.mark_time
        rate = steps * self.global_batch / seconds if seconds > 0 else 0.0
        if self.warm:
            self.timed_steps += steps
            self.timed_seconds += seconds
        self.warm = True
        self.mark_step, self.mark_time = step, now
        loss = sum(self.losses) / max(1, len(self.losses))
        self.last_accuracy = sum(self.accuracies) / max(1, len(self.accuracies))
        self.losses, self.accuracies = [], []
        seconds_per_step = seconds / steps if steps else 0.0
        return ("epoch %.2f step %d/%d loss %.4f top1 %.4f lr %.3g images/s %.1f time left %s" % (
            step / self.steps_per_epoch, step, self.total_steps, loss, self.last_accuracy, learning_rate, rate,
            duration(seconds_per_step * (self.total_steps - step))))
