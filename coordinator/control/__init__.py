"""The control plane: membership and liveness of the workers, and the driving of the pipeline they form."""
from coordinator.control.membership import Member, Membership, WorkerFailed, WorkerLost
from coordinator.control.pipeline import Pipeline, to_stage_one

__all__ = ["Member", "Membership", "Pipeline", "WorkerFailed", "WorkerLost", "to_stage_one"]
