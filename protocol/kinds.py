"""Protocol constants: the version, every message kind, and the limits a decoder enforces."""
from enum import StrEnum

# Bumped whenever a header field or a kind changes meaning; checked in the first message
# a worker sends, so mismatched builds refuse each other with both versions named.
# 1: a map header. 2: a positional header, version first; ASSIGN carries the recurrent options.
# 3: ASSIGN names each neighbour (the senders a worker takes data from); HEARTBEAT may say a
# worker's progress; BYE may carry why a worker gives up.
# 4: RESET; ASSIGN may carry the checkpointed state to start from; STATE carries counters too.
# 5: TAKEN (link credit: stage 1, not the head, returns the coordinator's credit for a training batch).
# 6: INPUT (--synthetic-inputs: the coordinator sends each stage above the first a batch's network input).
#    PUSH asks for the weights of the box's next unroll (need, bound); PULL and PUSH number the box's requests
# (ask), and PARAMS answers under that number.
# 7: CREDIT (--credit taken: a stage tells the stage below it took a training batch on, before its target);
#    PUSH says how stale the box's read was as it knew it (read): the service counts its staleness from it.
# 8: FORWARD may carry a training batch as its examples' indices (--feed stage: stage 1 holds the training set).
VERSION = 8


class Kind(StrEnum):
    # control plane: worker <-> coordinator
    HELLO = "hello"            # worker -> coordinator: data endpoint, wanted stage, host, pid, key
    ASSIGN = "assign"          # coordinator -> worker: role, stage, wire config, neighbours, members
    REFUSE = "refuse"          # coordinator -> worker: registration refused, with a reason
    READY = "ready"            # worker -> coordinator: sockets connected, parameters built
    HEARTBEAT = "heartbeat"    # either way; any message counts as liveness
    DONE = "done"              # head (last time box) -> coordinator: a training batch finished (a credit,
                               # unless credit is per link)
    TAKEN = "taken"            # stage 1 -> coordinator: it took a training batch on (per-link credit)
    EVALUATED = "evaluated"    # head (last time box) -> coordinator: correct count and loss of an eval batch
    METRICS = "metrics"        # worker -> coordinator: per-step records
    SYNCED = "synced"          # stage 1 (untied box 1, or the parameter service) -> coordinator: drained
    SAVE = "save"              # coordinator -> worker: send your parameters
    STATE = "state"            # worker -> coordinator: parameters as arrays
    STOP = "stop"              # coordinator -> worker: shut down now
    BYE = "bye"                # worker -> coordinator: shutting down, with counters
    RESET = "reset"            # coordinator -> worker: drop your role, rejoin (a stage was lost)
    # data plane: worker <-> worker (and the coordinator feeding stage 1, or every time box its slice)
    FORWARD = "forward"        # activations (and labels) of a training batch, upstream -> downstream
    INPUT = "input"            # coordinator -> a stage above the first (--synthetic-inputs): a training batch's
                               # network input, as the data's own bytes, and labels
    GRAD = "grad"              # gradient for a stage's output: its synthesizer's target (BP(lambda))
    CREDIT = "credit"          # a stage -> the stage below (--credit taken): it took a training batch on
    EVAL = "eval"              # activations of an evaluation batch: forward only, no updates
    SYNC = "sync"              # barrier travelling forward through the pipeline
    SYNC_BACK = "sync_back"    # the same barrier travelling back along the gradient path
    # parameter service (tied recurrent weights)
    PULL = "pull"              # time box -> service: send me the current weights
    PARAMS = "params"          # service -> time box: weights and their version (an answer to a PULL or PUSH)
    PUSH = "push"              # time box -> service: a gradient to apply, and the weights for the next unroll


# Kinds by the socket they travel on: a receiver takes each only on its own socket.
CONTROL = frozenset({Kind.HELLO, Kind.ASSIGN, Kind.REFUSE, Kind.READY, Kind.HEARTBEAT, Kind.DONE, Kind.TAKEN,
                     Kind.EVALUATED, Kind.METRICS, Kind.SYNCED, Kind.SAVE, Kind.STATE, Kind.STOP, Kind.BYE, Kind.RESET})
DATA = frozenset(Kind) - CONTROL

# Decoder limits: a header is small by design (arrays travel in their own frames).
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 64
MAX_NDIM = 4
# Bound on a whole message, also set as zmq.MAXMSGSIZE on every socket.
MAX_FRAME_BYTES = 256 * 1024 * 1024
DTYPES = frozenset({"float32", "float64", "int32", "int64", "uint8"})
