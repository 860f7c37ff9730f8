"""What could a linear synthesizer of (h, y) reach on a conv stage at best? Least squares on a checkpoint's net.

usage: python benchmarks/conv_synth_ceiling.py RUN_DIR [--fit 60] [--test 30] [--kernel 3] [--synth-lr 0.3]
                                                    [--json FILE]
The net of RUN_DIR's checkpoint is held fixed, as in benchmarks/conv_synth_fit.py. Each form is solved in closed
form (ridge-regularised least squares) on the true dL/dh of --fit batches, then scored on --test other batches:
the cosine of its prediction to the true gradient, and of the stage's weight gradient made from it to the true one.
Forms: `class map` (a learned map per class: the class-conditional mean gradient), `conv + class map` (cdni's
conv M), `per-class conv + class map` (one kernel per label: a bilinear h x y term); and, for comparison, cdni's
conv M as a stage fits it (Adam at --synth-lr, one pass over the same --fit batches, from zero).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.conv_synth_fit import load_net, true_gradients  # noqa: E402
from workers.numerics import optimizers  # noqa: E402
from workers.numerics.conv import Conv2D, stage_filters, stage_maps, stage_pools  # noqa: E402
from workers.numerics.conv_synthesizer import ConvSynthesizer  # noqa: E402
from workers.numerics.inflight import cosine  # noqa: E402

RIDGE = 1e-3   # relative to the mean diagonal of X'X: only keeps the solve well posed


def windows(h: np.ndarray, shape: tuple[int, int, int], kernel: int) -> np.ndarray:
    """The (n, H*W, K*K*C) windows of h's maps, plus a constant 1 (float64)."""
    conv = Conv2D(shape, 1, kernel, None)
    cols = np.concatenate([conv.im2col(h[s:e].reshape(e - s, *shape)).astype(np.float64)
                           for s, e in conv.chunks(len(h))])
    cols = cols.reshape(len(h), shape[0] * shape[1], -1)
    return np.concatenate([cols, np.ones((*cols.shape[:2], 1))], axis=2)


def solve(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    ridge = RIDGE * np.trace(xtx) / len(xtx)
    return np.linalg.solve(xtx + ridge * np.eye(len(xtx)), xty)


def fit(batches: list, shape, kernel: int, n_classes: int) -> dict:
    """Each form's predictor: a function of (h, y) -> (n, H*W, C_out) gradient."""
    positions, out = shape[0] * shape[1], shape[2]
    count = np.zeros(n_classes)
    sum_x = sum_y = 0
    for h, g, y in batches:   # pass 1: the class-conditional means at every position (what a class map absorbs)
        x, t = windows(h, shape, kernel), g.reshape(len(g), positions, out).astype(np.float64)
        one_hot = np.eye(n_classes)[y]
        count += one_hot.sum(0)
        sum_x = sum_x + np.einsum("nc,npd->cpd", one_hot, x)
        sum_y = sum_y + np.einsum("nc,npd->cpd", one_hot, t)
    mean_x, mean_y = sum_x / count[:, None, None], sum_y / count[:, None, None]
    dim = mean_x.shape[2]
    xtx, xty = np.zeros((n_classes, dim, dim)), np.zeros((n_classes, dim, out))
    for h, g, y in batches:   # pass 2: the kernel on what the class maps leave (Frisch-Waugh), per class
        x = windows(h, shape, kernel) - mean_x[y]
        t = g.reshape(len(g), positions, out) - mean_y[y]
        for c in np.unique(y):
            xc, tc = x[y == c].reshape(-1, dim), t[y == c].reshape(-1, out)
            xtx[c] += xc.T @ xc
            xty[c] += xc.T @ tc
    shared = solve(xtx.sum(0), xty.sum(0))
    per_class = np.stack([solve(xtx[c], xty[c]) for c in range(n_classes)])

    def conv_form(kernels):
        return lambda h, y: mean_y[y] + np.einsum("npd,ndo->npo", windows(h, shape, kernel) - mean_x[y], kernels[y])

    return {"class map": lambda h, y: mean_y[y],
            "conv + class map": conv_form(np.broadcast_to(shared, (n_classes, *shared.shape))),
            "per-class conv + class map": conv_form(per_class)}


def adam_fit(batches: list, shape, n_classes: int, lr: float):
    """cdni's conv M fitted as a stage fits it, one Adam step a batch; its prediction as a function of (h, y)."""
    synth = ConvSynthesizer(shape, np.random.default_rng(0), n_classes)
    opt = optimizers.make("adam", synth.params, lr)
    for h, g, y in batches:
        opt.step(synth.params, synth.fit_grads(h, y, g)[1])
    return synth.gradient


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--fit", type=int, default=60)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--synth-lr", type=float, default=0.3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    cfg, net, data = load_net(args.run)
    total = args.fit + args.test
    order = np.random.default_rng(1).permutation(len(data.x_train))[:total * 128].reshape(total, 128)
    filters = stage_filters(cfg.conv)
    maps = stage_maps(cfg.image, filters, stage_pools(cfg.pool, len(filters)))
    rows = []
    for stage in range(1, len(maps)):
        layer = net[stage - 1].layer
        batches = [(*true_gradients(net, data.x_train[i], data.y_train[i], stage), data.y_train[i]) for i in order]
        fitting = [(h, g, y) for _, h, _, g, y in batches[:args.fit]]
        forms = fit(fitting, maps[stage], args.kernel, cfg.sizes[-1])
        forms[f"conv + class map, Adam at {args.synth_lr:g}"] = adam_fit(fitting, maps[stage], cfg.sizes[-1],
                                                                         args.synth_lr)
        for form, predict in forms.items():
            element, weight = [], []
            for x, h, route, g, y in batches[args.fit:]:
                g_hat = predict(h, y).reshape(g.shape).astype(g.dtype)
                element.append(cosine(g_hat, g))
                true_w = layer.backward(x, h, g, need_dx=False, route=route)[0]["W"]
                weight.append(cosine(layer.backward(x, h, g_hat, need_dx=False, route=route)[0]["W"], true_w))
            r = {"stage": stage, "form": form, "kernel": args.kernel, "element_cosine": float(np.mean(element)),
                 "weight_cosine": float(np.mean(weight))}
            rows.append(r)
            print(f"stage {stage} {form:33} cosine {r['element_cosine']:.3f}  "
                  f"weight-gradient cosine {r['weight_cosine']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "fit_batches": args.fit, "test_batches": args.test,
                                         "fits": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
