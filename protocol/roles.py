"""The roles a worker can be assigned, and how logs and errors name a worker by its role."""
from __future__ import annotations

LAYER, HEAD = "layer", "head"     # feed-forward: a hidden layer, the top layer with the loss
BOX, PARAMS = "box", "params"     # recurrent: a time box, the parameter service of tied weights


def title(role: str | None, stage: int) -> str:
    """A worker by what it does, where the stage number alone would mislead."""
    if role == PARAMS:
        return "the parameter service"
    return f"{'time box' if role == BOX else 'stage'} {stage}"


def worker_name(role: str | None, stage: int) -> str:
    """The name a worker signs its messages with, and its neighbours expect data from."""
    if role == PARAMS:
        return "params"
    return f"{'box' if role == BOX else 'stage'}-{stage}"
