"""Point-cloud projections: clouds/s of each, their share of a ViT-B-32 forward, and batched V1 vs per-point numpy.

    .venv/bin/python benchmarks/pointcloud.py [--arch ViT-B-32] [--clouds 32] [--points 1024] [--repeats 3] [--threads N]

Measured in one run, interleaved, median of the repeats:

* PointCLIP V1 (batched torch, 6 views, 128x128) and V2 (10 views, realistic projection), each followed
  by the resize to the model input (224): clouds/s for a batch of ``--clouds`` clouds;
* the model forward of the resulting images in batches of ``--forward-batch`` (32) on a random-init
  ``--arch`` (time does not depend on the weights): one batch is timed, a batch of clouds needs V of them;
  the projection share is projection / (projection + forward);
* V1 against the straightforward per-point Python/numpy reference used by the tests
  (tests/test_projection.py), on ``--reference-clouds`` clouds, and whether both give the same maps.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from clipbench.data.projection import PROJECTIONS, depth_to_images
from clipbench.models import load_model
from clipbench.results.table import format_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from falip_rec import interleaved  # noqa: E402  (the benchmarks' interleaved median timer)
from test_projection import numpy_reference_v1  # noqa: E402  (the tests' independent reference)


def random_clouds(n: int, points: int, seed: int = 0) -> np.ndarray:
    """Anisotropic Gaussian blobs in [-1, 1], like normalised ModelNet shapes."""
    rng = np.random.default_rng(seed)
    clouds = rng.normal(0, 1, (n, points, 3)) * rng.uniform(0.1, 0.5, (n, 1, 3))
    return np.clip(clouds, -1, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--clouds", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--reference-clouds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    warnings.filterwarnings("ignore")
    model = load_model(args.arch, None, device="cpu")
    size = model.geometry.image_size
    clouds = torch.from_numpy(random_clouds(args.clouds, args.points))
    batch_images = torch.rand(args.forward_batch, 3, size, size)

    def projection(name: str, resize: bool):
        spec = PROJECTIONS[name]
        if resize:
            return lambda: depth_to_images(spec.project(clouds), size)
        return lambda: spec.project(clouds)

    few = clouds[: args.reference_clouds]
    paths = {
        "pointclip_v1": projection("pointclip_v1", True),
        "pointclip_v1 (no resize)": projection("pointclip_v1", False),
        "pointclip_v2": projection("pointclip_v2", True),
        "pointclip_v2 (no resize)": projection("pointclip_v2", False),
        "forward": lambda: model.encode_image(batch_images),
        "v1_batched_few": lambda: PROJECTIONS["pointclip_v1"].project(few),
        "v1_numpy_reference": lambda: [numpy_reference_v1(c) for c in few.numpy()],
    }
    seconds = interleaved(paths, args.repeats)

    def forward_seconds(name: str) -> float:
        return seconds["forward"] * args.clouds * len(PROJECTIONS[name].views) / args.forward_batch

    rows = []
    for name in ("pointclip_v1", "pointclip_v2"):
        for label, key in ((f"{name} + resize to {size}", name), (f"{name} projection only", f"{name} (no resize)")):
            share = seconds[key] / (seconds[key] + forward_seconds(name))
            rows.append({
                "path": label, "clouds": args.clouds, "seconds": round(seconds[key], 4),
                "clouds_per_s": round(args.clouds / seconds[key], 1),
                "forward_s": round(forward_seconds(name), 2), "projection_share": f"{100 * share:.1f}%",
            })
    for name in ("v1_batched_few", "v1_numpy_reference"):
        rows.append({
            "path": name, "clouds": args.reference_clouds, "seconds": round(seconds[name], 4),
            "clouds_per_s": round(args.reference_clouds / seconds[name], 1), "forward_s": "", "projection_share": "",
        })
    print(f"{args.arch} random init, {size}px, forward batch {args.forward_batch}: "
          f"{seconds['forward']:.3f} s/batch (forward_s = the V batches a batch of clouds needs); "
          f"torch threads {torch.get_num_threads()}")
    print(format_table(rows, list(rows[0])))

    same = all(
        np.array_equal(PROJECTIONS["pointclip_v1"].project(c[None])[0].numpy() > 0, numpy_reference_v1(c.numpy()) > 0)
        for c in few
    )
    print(f"V1 batched vs per-point numpy reference on the same {args.reference_clouds} clouds: "
          f"{seconds['v1_numpy_reference'] / seconds['v1_batched_few']:.1f}x faster; per cloud at batch {args.clouds}: "
          f"{seconds['v1_numpy_reference'] / args.reference_clouds / (seconds['pointclip_v1 (no resize)'] / args.clouds):.1f}x; "
          f"same filled pixels: {same}")
    for name in ("pointclip_v1", "pointclip_v2"):
        share = seconds[name] / (seconds[name] + forward_seconds(name))
        print(f"{name}: projection + resize take {share:.1%} of projection + forward (goal < 10%); per cloud "
              f"{seconds[name] / args.clouds * 1000:.1f} ms vs {forward_seconds(name) / args.clouds * 1000:.0f} ms forward")


if __name__ == "__main__":
    main()
