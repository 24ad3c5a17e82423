"""Check that two checkouts of pramloc build the same maps and localize the same way.

    python bench/check_equivalence.py --ref REF_CHECKOUT --new NEW_CHECKOUT --out /tmp/eq
    python bench/check_equivalence.py --compare /tmp/eq/ref /tmp/eq/new   # outputs only

For each scene (Strecha Herz-Jesu, 7-Scenes block split; ``../shared/data``), each
checkout runs ``build-map --no-train`` and ``localize --mode retrieval`` (its own
``cli.py``, ``PYTHONPATH`` set to it). Then every dataset of the two ``map.h5`` files is
compared array by array (h5py, exact) and the results files byte by byte. The recognizer
trainer is checked apart (a full training run is minutes and time-budgeted): each
checkout trains a small model for a fixed number of epochs on seeded synthetic data, and
the two checkpoints' weights, configs and metrics must be equal. Exit status 0 when all
are identical. A refactor that must not change behaviour runs this against the
commit it started from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCENES = {  # name: (dataset, root, map split, query split)
    "strecha": ("strecha", "strecha_herzjesu_P25", "splits/db.txt", "splits/query.txt"),
    "7scenes": ("7scenes", "7scenes_redkitchen", "splits/block_db.txt", "splits/block_query.txt"),
}


def run_checkout(checkout: Path, out: Path, data: Path) -> None:
    """Build and localize every scene with ``checkout``'s code into ``out``."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "GLOG_minloglevel": "2"}
    cli = [sys.executable, str(checkout / "cli.py"), "-q"]
    for name, (dataset, root, db, query) in SCENES.items():
        root = data / root
        subprocess.run([*cli, "build-map", "--dataset", dataset, "--root", root, "--split", root / db,
                        "--out", out / name, "--no-train", "--overwrite"], env=env, check=True)
        subprocess.run([*cli, "localize", out / name, "--mode", "retrieval", "--dataset", dataset, "--root", root,
                        "--queries", root / query, "--out", out / f"{name}_results.txt"], env=env, check=True)


TRAIN_SCRIPT = """
import json, sys
import numpy as np
from pramloc.recognition import TrainingImage
from pramloc.recognition import train
rng = np.random.default_rng(0)
images = []
for i in range(12):
    kp = rng.uniform(0, [640, 480], size=(300, 2)).astype(np.float32)
    desc = rng.normal(size=(300, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    lab = rng.integers(0, 5, size=300)
    images.append(TrainingImage(f"im{i}", kp, desc, lab, (640, 480), points_xy=kp[:100],
                                points_landmark=np.maximum(lab[:100] - 1, 0)))
conf = {"width": 32, "layers": 1, "heads": 2, "train_keypoints": [64, 128], "max_keypoints": 256,
        "batch_size": 4, "epochs": 6, "val_fraction": 0.25, "val_every": 2, "patience": None,
        "warmup_steps": 3, "train_minutes": 5, "num_threads": 1, "seed": 0}
train.main(conf, images, 4, sys.argv[1])
"""


def train_checkout(checkout: Path, out: Path) -> None:
    """A small seeded training run with ``checkout``'s trainer -> ``out/recognizer.pt``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(out / "recognizer.pt")], env=env, check=True,
                   stderr=subprocess.DEVNULL)


def compare_checkpoints(a: Path, b: Path) -> list[str]:
    import torch

    ca, cb = (torch.load(p / "recognizer.pt", map_location="cpu", weights_only=False) for p in (a, b))
    for c in (ca, cb):
        c["metrics"].pop("seconds", None)
    sa, sb = ca["state_dict"], cb["state_dict"]
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    print(f"recognizer.pt: {len(sa)} tensors compared")
    return [f"recognizer.pt: {what} differ" for what, ok in
            (("weights", same), ("configs", ca["config"] == cb["config"]), ("metrics", ca["metrics"] == cb["metrics"]))
            if not ok]


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two output folders of :func:`run_checkout` (empty: identical)."""
    problems = []
    for name in SCENES:
        da, db = _datasets(a / name / "map.h5"), _datasets(b / name / "map.h5")
        if sorted(da) != sorted(db):
            problems.append(f"{name}/map.h5: datasets differ: {sorted(set(da) ^ set(db))}")
        for key in sorted(set(da) & set(db)):
            x, y = da[key], db[key]
            if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
                problems.append(f"{name}/map.h5:{key}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        print(f"{name}/map.h5: {len(da)} datasets compared")
        ra, rb = (p / f"{name}_results.txt" for p in (a, b))
        if ra.read_bytes() != rb.read_bytes():
            problems.append(f"{name}_results.txt differs")
        print(f"{name}_results.txt: {len(ra.read_text().splitlines())} poses compared")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, help="reference checkout (e.g. a git worktree of the base commit)")
    parser.add_argument("--new", type=Path, help="checkout under test")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pramloc-equivalence"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("REF_OUT", "NEW_OUT"),
                        help="only compare two existing output folders")
    args = parser.parse_args()
    if args.compare:
        a, b = args.compare
    else:
        if not (args.ref and args.new):
            parser.error("give --ref and --new, or --compare")
        a, b = args.out / "ref", args.out / "new"
        for checkout, out in ((args.ref, a), (args.new, b)):
            run_checkout(checkout.resolve(), out, args.data)
            train_checkout(checkout.resolve(), out / "trainer")
    problems = compare(a, b)
    if (a / "trainer").is_dir() and (b / "trainer").is_dir():
        problems += compare_checkpoints(a / "trainer", b / "trainer")
    print("\n".join(problems) if problems else "identical: map.h5 datasets, results files (and trainer checkpoints)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
