"""Runs at the same time never share state: output folders, the feature cache, the generated demo data."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from dogbreed.data.feature_cache import module_digest
from dogbreed.run_dir import claim_new
from dogbreed.train import build

FAST = ["data.num_workers=0", "model=mobilenet_v2", "model.allow_random_init=true", "trainer=cpu"]


def cli(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dogbreed.train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        **kwargs,
    )


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_a_run_never_writes_into_a_folder_another_run_took_in_the_same_second(synthetic_root, tmp_path):
    outputs = tmp_path / "outputs"
    now = dt.datetime.now()
    taken = [outputs / (now + dt.timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(-2, 120)]
    for folder in taken:  # another run holds every name this run could pick from the clock
        folder.mkdir(parents=True)
        (folder / "theirs.txt").write_text("x")
    result = cli([f"data.root={synthetic_root}", *FAST, "debug=fast_dev_run", "logger=none"], tmp_path)
    assert result.returncode == 0, result.stderr
    mine = sorted(set(outputs.iterdir()) - set(taken))
    assert len(mine) == 1 and mine[0].name.endswith("_1"), mine
    assert (mine[0] / ".hydra" / "config.yaml").is_file()
    assert all(sorted(p.name for p in folder.iterdir()) == ["theirs.txt"] for folder in taken)


def test_claiming_the_same_name_twice_gives_two_folders(tmp_path):
    first, second = claim_new(tmp_path / "run"), claim_new(tmp_path / "run")
    assert (first.name, second.name) == ("run", "run_1") and first.is_dir() and second.is_dir()


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_a_folder_a_live_run_writes_into_is_refused(synthetic_root, tmp_path):
    folder = tmp_path / "shared"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; from dogbreed.run_dir import lock; lock({str(folder)!r}); "
            "print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = [f"data.root={synthetic_root}", *FAST, "debug=fast_dev_run", f"paths.output_dir={folder}"]
        refused = cli(args, tmp_path)
        assert refused.returncode == 2
        assert f"{folder} is in use by a run that is still going (pid {holder.pid})" in refused.stderr
        assert not (folder / ".hydra").exists()  # refused before Hydra wrote anything there
    finally:
        holder.kill()
        holder.wait()
    assert cli(args, tmp_path).returncode == 0  # the folder is free again (resuming into it is normal)


def test_random_init_feature_cache_key_follows_the_actual_weights(cfg_factory):
    def key(cfg) -> str:
        if cfg.seed is not None:
            pl.seed_everything(int(cfg.seed))  # as train() does before build()
        objects = build(cfg)
        parts = objects["features"].key_parts
        assert parts["random_init"] == module_digest(objects["model"].backbone)
        return parts["random_init"]

    unseeded = cfg_factory(["model.weights=null", "seed=null"])
    # seed=null: two models drawn one after the other (as a sweep's trials are) are two backbones,
    # so they can never share cached features.
    assert key(unseeded) != key(unseeded)
    seeded = cfg_factory(["model.weights=null", "seed=3"])
    assert key(seeded) == key(seeded)


def test_two_processes_generating_the_demo_data_both_succeed_and_generate_it_once(tmp_path):
    root = tmp_path / "synthetic"
    script = textwrap.dedent(
        f"""
        import os
        from dogbreed.data.synthetic import SPEC_FILE, SyntheticSpec, ensure
        spec = SyntheticSpec(num_classes=3, train_per_class=30, valid_per_class=5, test_per_class=5)
        root = ensure({str(root)!r}, spec)
        print(os.stat(root / SPEC_FILE).st_ino, sum(1 for _ in root.rglob("*.jpg")))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    final = str(os.stat(root / "synthetic.json").st_ino)
    # Both saw the same, complete dataset: neither replaced it under the other's feet.
    assert outs == [[final, str(3 * 40)]] * 2


@pytest.mark.slow  # two subprocesses that each import torch (10 s), beside the other parallel-run tests
def test_two_processes_writing_the_same_feature_cache_entry_both_succeed(synthetic_root, tmp_path):
    workers = 2
    script = textwrap.dedent(
        f"""
        import time, torch
        from pathlib import Path
        from torchvision.transforms import v2
        from dogbreed.data.feature_cache import FeatureCache

        def extractor(batch):
            time.sleep(0.2)  # long enough for the two writers to overlap
            return batch.float().mean(dim=(2, 3))

        tf = v2.Compose([v2.PILToTensor(), v2.Resize((32, 32))])
        paths = sorted(str(p) for p in Path({str(synthetic_root)!r}, "train").rglob("*.jpg"))
        cache = FeatureCache({str(tmp_path / "cache")!r}, {{"backbone": "test"}})
        features = cache.features("train", paths, 1, extractor, tf, tf, 32, batch_size=4)
        torch.save(features, {str(tmp_path)!r} + f"/out{{__import__('os').getpid()}}.pt")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(workers)]
    assert [p.wait(timeout=300) for p in procs] == [0] * workers
    results = [torch.load(p, weights_only=True) for p in sorted(tmp_path.glob("out*.pt"))]
    assert len(results) == workers and all(torch.equal(results[0], r) for r in results)
    entry = next((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in entry.iterdir()) == ["key.json", "train.pt"]  # no temp file left
