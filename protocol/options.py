"""Every run option declared once, as data: its type, default, checks, help, and where it goes."""
from __future__ import annotations

from dataclasses import dataclass

from protocol import liveness

# The sections of --help, in order.
GROUPS = ("data", "network", "synthesizers", "recurrent", "schedule", "failures", "run")
FF, RNN, BOTH = "ff", "rnn", "both"
SYNTHETIC = ("dni", "cdni")   # the feed-forward modes whose stages update from their synthesizers


@dataclass(frozen=True)
class Option:
    """One option: a flag, a Config field and a TOML key; a `wire` option is a WireConfig field too."""
    name: str
    type: type                 # bool | int | float | str
    default: object
    group: str                 # its section of --help: one of GROUPS
    help: str                  # what it does, in a line
    model: str = BOTH          # the model it applies to: ff | rnn | both
    wire: bool = False         # sent to the workers in ASSIGN, saved in config.json with every checkpoint
    saved: bool = False        # not sent, but saved in config.json: `dni eval` needs it to rebuild the task
    summary: bool = False      # reported in summary.json
    resumable: bool = False    # `--resume` may change it
    before: object = None      # what runs saved before the option existed (or was saved) did (None: always saved)
    choices: tuple = ()
    rnn_choices: tuple = ()    # further choices under --model rnn
    ff_choices: tuple = ()     # further choices under --model ff
    low: float | None = None   # the least value allowed
    high: float | None = None  # the greatest value allowed
    positive: bool = False     # above 0 (and finite)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    # data
    Option("data", str, "", "data", "directory with the MNIST IDX files (empty: a generated task)",
           saved=True, resumable=True),
    Option("classes", str, "", "data", "keep only these digits, e.g. 0,1 (empty: all)", saved=True),
    Option("train_subset", int, 0, "data", "train on the first N examples only (0: all)", saved=True,
           before=0, low=0),
    Option("centre", bool, True, "data", "subtract each input feature's training-set mean", model=FF,
           saved=True, before=False),
    Option("feed", str, "coordinator", "data", "who reads the training batches: the coordinator, which sends each "
           "to stage 1, or stage 1 itself, from the same files in the same order (the coordinator sends a batch's "
           "example indices)", model=FF, wire=True, summary=True, resumable=True, before="coordinator",
           choices=("coordinator", "stage")),
    # network
    Option("model", str, "ff", "network", "ff: a process per layer; rnn: a process per time box",
           wire=True, summary=True, before="ff", choices=("ff", "rnn")),
    Option("conv", str, "", "network", "conv stages' filter counts, a worker process each, before the --hidden "
           "ones: each a --kernel conv (same padding), ReLU, --pool max pooling (images only)", model=FF, wire=True,
           summary=True, before=""),
    Option("kernel", int, 5, "network", "the conv stages' kernel: K x K", model=FF, wire=True, before=5, low=1),
    Option("pool", str, "2", "network", "the conv stages' max pooling: P x P windows, stride P (1: none); one P "
           "for every conv stage or one per stage, e.g. 1,2,1,2", model=FF, wire=True, summary=True, before="2"),
    Option("hidden", str, "256,256", "network", "hidden layer sizes, a worker process each", model=FF),
    Option("mode", str, "cdni", "network", "the gradient a stage trains on: synthetic (dni), synthetic "
           "conditioned on the labels (cdni), true (backprop), ff: true, over micro-batches with one update a "
           "batch (gpipe) or 1F1B pipelined with stashed weights (pipedream), or rnn: BPTT cut at box edges "
           "(truncated)", wire=True, summary=True, choices=("dni", "cdni", "backprop"), rnn_choices=("truncated",),
           ff_choices=("gpipe", "pipedream")),
    Option("optimizer", str, "adam", "network", "the layers' optimizer (sgd: with momentum 0.9)",
           wire=True, choices=("sgd", "adam")),
    Option("lr", float, 1e-3, "network", "learning rate of the layers", wire=True, positive=True),
    Option("schedule", str, "cosine", "network", "the layers' rate over the run (cosine: annealed to 0)",
           wire=True, choices=("constant", "cosine")),
    # synthesizers
    Option("synth_hidden", int, 0, "synthesizers", "hidden units: 0 = linear; N = N fixed random ReLU "
           "features of h with a learned linear readout", wire=True, low=0),
    Option("synth_lr", float, 0.3, "synthesizers", "Adam rate of every synthesizer (its targets are scaled "
           "to unit RMS)", wire=True, positive=True),
    Option("bp_lambda", float, 1.0, "synthesizers", "the target a stage sends to the synthesizer below: its "
           "received target (1) or its synthetic gradient (0), or a mix, backpropagated: BP(lambda)",
           model=FF, wire=True, before=0.0, low=0.0, high=1.0),
    Option("p_update", float, 1.0, "synthesizers", "the chance each stage updates on a batch, from its own seeded "
           "stream (dni, cdni): a skipped update still forwards and trains the synthesizers", model=FF, wire=True,
           before=1.0, low=0.0, high=1.0, positive=True),
    Option("synthetic_inputs", bool, False, "synthesizers", "every stage above the first also learns its input "
           "from the network's input, I(x), and updates from it without waiting for the stage below (dni, cdni)",
           model=FF, wire=True, summary=True, before=False),
    Option("ahead_update", str, "again", "synthesizers", "--synthetic-inputs: a stage on a batch fed ahead through a "
           "stall below updates through I(x) at once (once), and again from its real input when that comes (again)",
           model=FF, wire=True, before="once", choices=("once", "again")),
    Option("box_lambda", float, 1.0, "synthesizers", "BP(lambda) between time boxes: the target a box sends to the "
           "synthesizer of the box before, once its own came (1: the true boundary gradient) or at once (0: its "
           "synthetic one)", model=RNN, wire=True, before=0.0, low=0.0, high=1.0),
    Option("shared_synth", bool, False, "synthesizers", "one synthesizer for every box boundary, held and "
           "updated with the tied weights (each box keeps its own target scale)", model=RNN, wire=True,
           summary=True, before=False),
    Option("aux", bool, False, "synthesizers", "DNI + Aux: each box's core also learns to predict, from its last "
           "state, the synthetic gradient one box further ahead (the paper's auxiliary task)", model=RNN, wire=True,
           summary=True, before=False),
    # recurrent
    Option("task", str, "mnist01", "recurrent", "the sequence task", model=RNN, wire=True, summary=True,
           choices=("mnist01", "mnist01-chunks", "seqmnist", "copy", "repeat-copy")),
    Option("boxes", int, 4, "recurrent", "time boxes K, a worker process each", model=RNN, wire=True,
           summary=True, low=1),
    Option("steps_per_box", int, 1, "recurrent", "recurrent steps T in each box (the truncation)", model=RNN,
           wire=True, summary=True, low=1),
    Option("cell", str, "tanh", "recurrent", "the recurrent cell", model=RNN, wire=True, summary=True,
           choices=("tanh", "lstm")),
    Option("units", int, 128, "recurrent", "width of the recurrent cell", model=RNN, wire=True, summary=True,
           low=1),
    Option("untied", bool, False, "recurrent", "each box its own weights (else tied, shared by a parameter "
           "service)", model=RNN, wire=True, summary=True),
    Option("stream", bool, False, "recurrent", "the last box hands each batch's final state to box 1 as the initial "
           "state of the batch --window later, which continues its sequences (copy tasks; reset at each resume)",
           model=RNN, wire=True, summary=True, before=False),
    Option("max_staleness", int, 4, "recurrent", "with tied weights, a box computes with weights at "
           "most this many updates old", model=RNN, wire=True, summary=True, low=0),
    Option("late_step", str, "full", "recurrent", "the parameter service's step on a gradient that lands d "
           "updates late (dni, cdni): at the full rate, or at rate / (1 + d) (inverse: staleness-aware asynchronous "
           "SGD)", model=RNN, wire=True, summary=True, before="full", choices=("full", "inverse")),
    Option("synth_scale", float, 0.1, "recurrent", "factor on the synthetic gradient seeding each box's BPTT",
           model=RNN, wire=True, positive=True),
    Option("copy_length", int, 10, "recurrent", "the copy task's longest sequence, where its "
           "curriculum stops (copy: 2L+1 <= K*T; repeat-copy: (R+1)L+1 <= K*T)", model=RNN, saved=True, low=1),
    Option("copy_repeats", int, 2, "recurrent", "repeat-copy: the most times R a sequence is written (each "
           "sequence draws its own from 1..R)", model=RNN, saved=True, before=2, low=1),
    Option("copy_batches", int, 200, "recurrent", "the copy task's training batches per epoch", model=RNN,
           saved=True, low=1),
    # schedule
    Option("epochs", int, 5, "schedule", "passes over the training set", resumable=True, low=1),
    Option("batch_size", int, 128, "schedule", "training batch size", low=1),
    Option("micro_batches", int, 4, "schedule", "gpipe: micro-batches M a batch is split into (M must divide "
           "--batch-size)", model=FF, wire=True, before=1, low=1),
    Option("eval_batch", int, 1000, "schedule", "evaluation batch size", saved=True, low=1),
    Option("eval_every", int, 0, "schedule", "training batches between evaluations of a validation split, the "
           "last 10,000 training examples held out (0: none; the test set is then read at the end only)",
           saved=True, summary=True, before=0, low=0),
    Option("window", int, 2, "schedule", "batches in flight at most (the credit)", wire=True, before=1, low=1),
    Option("run_ahead", int, 16, "schedule", "--synthetic-inputs: batches the coordinator may feed the stages "
           "above the first before stage 1 takes them (so they keep learning through a stall below them)",
           model=FF, saved=True, before=0, low=0),
    Option("credit", str, "coordinator", "schedule", "who holds --window: the coordinator (until the head "
           "reports a batch; rnn always) or each link (ff: a stage until its next sends the batch's target, or, "
           "taken: until its next takes the batch on, the target free to come later, as BP(1)'s does)",
           wire=True, resumable=True, before="coordinator", choices=("link", "coordinator"), ff_choices=("taken",)),
    Option("seed", int, 0, "schedule", "seed of every initialisation and shuffle", wire=True, low=0),
    # failures
    Option("checkpoint_every", int, 1000, "failures", "steps between checkpoints (0: no limit in steps)",
           resumable=True, low=0),
    Option("checkpoint_seconds", float, 30.0, "failures", "seconds of training between checkpoints (0: no "
           "limit in time; both 0: at the end only)", resumable=True, low=0.0),
    Option("max_restarts", int, 3, "failures", "lost workers to replace (every stage restarts from the last "
           "checkpoint) before the run stops", resumable=True, low=0),
    Option("rejoin_timeout", float, 120.0, "failures", "seconds dni coordinator waits for a replacement "
           "worker to register", resumable=True, positive=True),
    Option("heartbeat", float, 1.0, "failures", "seconds; a peer silent for 3 intervals is dead",
           resumable=True, low=liveness.MIN_HEARTBEAT_S, high=liveness.MAX_HEARTBEAT_S),
    Option("stall_timeout", float, liveness.STALL_TIMEOUT_S, "failures", "seconds the pipeline may make no "
           "progress, every worker alive, before the run stops saying where", resumable=True, positive=True),
    # run
    Option("out", str, "", "run", "run directory (default: runs/<mode>-<time>)"),
    Option("log_every", int, 50, "run", "steps between metric flushes", wire=True, resumable=True, low=1),
    Option("overwrite", bool, False, "run", "reuse an --out directory that holds a run (its files are "
           "replaced)"),
    Option("progress", bool, True, "run", "show a live progress line", resumable=True),
    Option("tensorboard", bool, False, "run", "write TensorBoard event files to RUN_DIR/tensorboard/ (needs the "
           "tensorboard extra)", resumable=True),
)

BY_NAME = {o.name: o for o in OPTIONS}
