"""The control plane: the hub (the control socket), membership and rejoin of the workers, the pipeline they form."""
from coordinator.control.flush import FlushedPipeline
from coordinator.control.hub import Hub
from coordinator.control.member import Member, WorkerFailed, WorkerLost
from coordinator.control.membership import Membership
from coordinator.control.pipeline import Pipeline, to_stage_one
from coordinator.control.rejoin import Rejoin
from coordinator.control.unlocked import UnlockedPipeline

__all__ = ["FlushedPipeline", "Hub", "Member", "Membership", "Pipeline", "Rejoin", "UnlockedPipeline", "WorkerFailed",
           "WorkerLost", "to_stage_one"]
