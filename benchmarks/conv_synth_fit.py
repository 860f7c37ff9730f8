"""How well can a synthesizer of each form predict a conv stage's gradient? Fitted offline on a checkpoint's net.

usage: python benchmarks/conv_synth_fit.py RUN_DIR [--batches 120] [--synth-lr 0.3] [--json FILE]
The net of RUN_DIR's checkpoint is held fixed; for each batch of the images it trained on the true dL/dh of every
conv stage is computed, and M is fitted to it as a stage fits it (predict, score, then one Adam step at
--synth-lr), from zero. Printed per stage and form: the cosine of M's prediction to the true gradient, and of the
stage's weight gradient made from it to the true weight gradient, over the last third of the batches.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coordinator import checkpoint, plans  # noqa: E402
from coordinator.config import from_saved  # noqa: E402
from protocol.wireconfig import WireConfig  # noqa: E402
from workers.numerics import optimizers  # noqa: E402
from workers.numerics.conv import stage_filters, stage_maps, stage_pools  # noqa: E402
from workers.numerics.conv_synthesizer import ConvSynthesizer  # noqa: E402
from workers.numerics.inflight import cosine  # noqa: E402
from workers.numerics.reference import build_network  # noqa: E402
from workers.numerics.snapshot import copy_into, part  # noqa: E402
from workers.numerics.synthesizers import Synthesizer  # noqa: E402

DENSE_MAX = 4096   # a dense M over a wider map (6,272 values at stage 1: 39M weights) is left out


def load_net(run: Path):
    """The run's config, its stages with the checkpoint's layer weights (M is fitted afresh), and its dataset."""
    saved, states = checkpoint.load(run)
    cfg = WireConfig.from_meta(saved)
    net = build_network(cfg)
    for stage in net:
        layer = stage.layer if hasattr(stage, "layer") else stage.head
        copy_into(layer.params, part(states[stage.index], "layer"))
    return cfg, net, plans.for_checkpoint(saved).load_task(from_saved(saved, strict=True)).dataset


def true_gradients(net: list, x: np.ndarray, y: np.ndarray, stage: int):
    """(the stage's input, output, pooling route, and dL/dh of the batch-mean loss) for one batch."""
    hs, routes = [x], []
    for s in net[:-1]:
        h, route = s.layer.forward_train(hs[-1])
        hs.append(h)
        routes.append(route)
    g = net[-1].loss_and_grads(hs[-1], y)[3]
    for k in range(len(net) - 2, stage - 1, -1):   # down to the stage's output h_stage = hs[stage]
        g = net[k].layer.input_gradient(hs[k + 1], g, routes[k])
    return hs[stage - 1], hs[stage], routes[stage - 1], g


def fit(batches: list, layer, make, lr: float) -> dict:
    """M fitted batch by batch; the mean cosines over the last third."""
    synth = make()
    opt = optimizers.make("adam", synth.params, lr)
    element, weight = [], []
    for x, h, route, g, y in batches:
        label = y if synth.conditioned else None
        g_hat = synth.gradient(h, label)
        element.append(cosine(g_hat, g))
        true_w = layer.backward(x, h, g, need_dx=False, route=route)[0]["W"]
        weight.append(cosine(layer.backward(x, h, g_hat, need_dx=False, route=route)[0]["W"], true_w))
        opt.step(synth.params, synth.fit_grads(h, label, g)[1])
    last = len(batches) // 3
    return {"element_cosine": float(np.mean(element[-last:])), "weight_cosine": float(np.mean(weight[-last:]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--batches", type=int, default=120)
    p.add_argument("--synth-lr", type=float, default=0.3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    cfg, net, data = load_net(args.run)
    order = np.random.default_rng(1).permutation(len(data.x_train))[:args.batches * 128].reshape(args.batches, 128)
    filters, rows = stage_filters(cfg.conv), []
    maps = stage_maps(cfg.image, filters, stage_pools(cfg.pool, len(filters)))
    for stage in range(1, len(maps)):
        shape, n = maps[stage], int(np.prod(maps[stage]))
        batches = [(*true_gradients(net, data.x_train[i], data.y_train[i], stage), data.y_train[i]) for i in order]
        forms = {"conv": lambda c: ConvSynthesizer(shape, np.random.default_rng(0), c),
                 "dense": lambda c: Synthesizer(n, np.random.default_rng(0), c)}
        for form, make in forms.items():
            for mode, classes in (("cdni", cfg.sizes[-1]), ("dni", 0)):
                if form == "dense" and n > DENSE_MAX:
                    continue
                r = {"stage": stage, "form": form, "mode": mode, "synth_lr": args.synth_lr,
                     **fit(batches, net[stage - 1].layer, lambda: make(classes), args.synth_lr)}
                rows.append(r)
                print(f"stage {stage} {form:5} {mode:4}  cosine {r['element_cosine']:.3f}  "
                      f"weight-gradient cosine {r['weight_cosine']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "batches": args.batches, "fits": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
