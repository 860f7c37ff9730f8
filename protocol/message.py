"""A protocol message as the roles see it, and the errors a receiver drops and counts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.kinds import VERSION, Kind


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the receiver drops and counts it."""
    identity: bytes | None = None   # the ROUTER peer it came from, where there is one


class VersionMismatch(ProtocolError):
    def __init__(self, theirs: object, ours: int = VERSION):
        super().__init__(f"protocol version mismatch: peer speaks {repr(theirs)[:32]}, this build speaks {ours}")
        self.theirs, self.ours = theirs, ours


@dataclass(slots=True)
class Message:
    kind: Kind
    src: str = ""               # who sent it: "coordinator", "stage-2", ...
    id: int = -1                # batch or step id; with src it lets duplicates be dropped
    meta: dict[str, Any] = field(default_factory=dict)      # small scalars and strings
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    peer: str | None = None     # set on receipt where CURVE is on: the key the sender's connection proved
