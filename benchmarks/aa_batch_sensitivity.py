"""How much AutoAttack's per-sample result moves with its batch size and with torchrun sharding.

    python benchmarks/aa_batch_sensitivity.py --n 48 --eps 1/255

pyautoattack reseeds its random number generator with the same seed before every batch of every sub-attack,
so an image's random restarts depend on which batch it lands in. This runs standard AutoAttack (through
``cure_zoo.evaluation.autoattack.run_autoattack``, the code ``evaluate()`` calls) on the same images with
the same seed three ways and counts the images whose outcome differs from the one-batch run:

* one batch of all ``n`` images (the reference);
* batch size ``n // 3`` in one process;
* two "ranks": ``run_autoattack`` on each contiguous half (``shard_bounds``), which is exactly what each
  torchrun process of ``evaluate()`` does with its slice.

The model is the tiny fitted CIFAR-10 classifier of ``tests/tiny_models.py`` (about 30% clean accuracy,
cheap enough on a CPU for all four sub-attacks to run on the survivors), at a small eps so that robust and
broken images mix. Results go to ``benchmarks/results/aa_batch_sensitivity.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.evaluation import parse_eps  # noqa: E402
from cure_zoo.evaluation.autoattack import run_autoattack  # noqa: E402
from cure_zoo.evaluation.sharding import shard_bounds  # noqa: E402
from cure_zoo.io import write_json_atomic  # noqa: E402
from cure_zoo.version import library_versions  # noqa: E402
from tests.tiny_models import tiny_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "aa_batch_sensitivity.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    eps = parse_eps(args.eps)
    model = tiny_model()
    data = load_bundled("cifar10", "test", n=args.n)
    x, y, cpu = data.images, data.labels, torch.device("cpu")

    def aa(xs, ys, batch_size):
        out = run_autoattack(model, xs, ys, eps=eps, seed=args.seed, batch_size=batch_size, device=cpu)
        return out.robust, out.accuracy_after, out.flags

    runs = {}
    t0 = time.perf_counter()
    ref, trail, flags = aa(x, y, args.n)
    runs["one_batch"] = {"batch_size": args.n, "robust": int(ref.sum()), "after_each": trail, "flags": flags}
    print("one batch", runs["one_batch"], f"{time.perf_counter() - t0:.0f}s", flush=True)

    small = max(1, args.n // 3)
    mask, trail, flags = aa(x, y, small)
    runs["small_batches"] = {"batch_size": small, "robust": int(mask.sum()), "after_each": trail,
                             "differs_from_one_batch": int((mask != ref).sum()), "flags": flags}  # fmt: skip
    print("small batches", runs["small_batches"], f"{time.perf_counter() - t0:.0f}s", flush=True)

    parts = []
    for rank in range(2):
        a, b = shard_bounds(args.n, rank, 2)
        parts.append(aa(x[a:b], y[a:b], b - a)[0])
    mask = torch.cat(parts)
    runs["two_shards"] = {"shard_sizes": [len(p) for p in parts], "robust": int(mask.sum()),
                          "differs_from_one_batch": int((mask != ref).sum())}  # fmt: skip
    print("two shards", runs["two_shards"], f"{time.perf_counter() - t0:.0f}s", flush=True)

    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    report = {
        "what": "AutoAttack (standard, Linf) per-sample outcome vs batch size and 2-way contiguous sharding",
        "model": "tests/tiny_models.py tiny fitted cifar_resnet18 (widths 8,16,32,64)",
        "images": f"bundled CIFAR-10 test 0-{args.n - 1}",
        "n": args.n,
        "clean_correct": clean,
        "eps": eps,
        "seed": args.seed,
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": library_versions(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
