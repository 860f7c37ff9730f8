"""The whole network in one process, driving the same Stage objects: the transparency reference."""
import numpy as np

from workers.stage import HeadStage, Stage, build


def build_network(cfg: dict) -> list:
    return [build(i, cfg) for i in range(1, len(cfg["sizes"]))]


def step(stages: list, b: int, x: np.ndarray, y: np.ndarray) -> float:
    """One training step on batch b, in the order the distributed pipeline does it; returns the loss."""
    *hidden, head = stages
    if hidden and hidden[0].mode == "backprop":
        for s in hidden:
            x = s.forward_train(b, x, y, 0.0)
        loss, _, grads, g = head.loss_and_grads(x, y)
        head.update(grads)
        for s in reversed(hidden):
            g, _ = s.apply(b, g)
        return loss
    below: Stage | None = None
    for s in hidden:
        x = s.forward_train(b, x, y, 0.0)
        target, _ = s.apply(b, s.synthetic_gradient(b))
        if below is not None:
            below.learn(b, target)
        below = s
    loss, _, grads, g = head.loss_and_grads(x, y)
    head.update(grads)
    if below is not None:
        below.learn(b, g)
    return loss


def evaluate(stages: list, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Test accuracy, batch by batch as the pipeline evaluates (same float32 arithmetic)."""
    correct = 0
    for i in range(0, len(x), batch):
        h = x[i:i + batch]
        for s in stages[:-1]:
            h = s.forward(h)
        head: HeadStage = stages[-1]
        correct += head.evaluate(h, y[i:i + batch])[1]
    return correct / len(x)
