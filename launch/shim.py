"""Entry point inside a SageMaker PyTorch training container: SageMaker's conventions → Hydra overrides.

SageMaker runs ``python sagemaker_entry.py --model.lr 0.01 --model.optimizer '"adam"' …`` with ``SM_*``
environment variables. This shim turns that into a ``python -m dogbreed.train`` invocation:

- ``--key value`` / ``--key=value`` hyperparameters (JSON-quoted categoricals decoded; ``model__lr``, how
  SDK v3's driver must receive ``model.lr``, read as ``model.lr``) → ``key=value``;
  SageMaker's own (``sagemaker_*``, ``_tuning_objective_metric``) are dropped; plain ``key=value`` passes
  through;
- ``SM_CHANNEL_TRAIN/VALID/TEST`` → ``data.root`` (one ``SM_CHANNEL_TRAINING`` holding all three works too);
- ``SM_CHANNEL_WEIGHTS`` (a backbone state dict, for network-isolated jobs) → ``model.weights_file``;
- ``SM_OUTPUT_DATA_DIR`` → ``paths.output_dir``; after training the exported model (``model.pt`` +
  ``code/inference.py``) is unpacked into ``SM_MODEL_DIR``, so SageMaker's model.tar.gz deploys as is;
- ``/opt/ml/checkpoints`` (``DOGBREED_CHECKPOINT_DIR``) → the checkpoint dir; its ``last.ckpt`` →
  ``ckpt_path`` (a spot-interrupted job resumes where it stopped);
- ``SM_NUM_GPUS`` / ``SM_HOSTS`` / ``SM_CURRENT_HOST`` → trainer accelerator, devices, nodes (and the
  rendezvous variables Lightning reads when torchrun is not launching us).

Keys the user set explicitly win over derived trainer settings; container paths always win over user paths.
Only the standard library and ``dogbreed`` are imported: the launcher itself is not needed in the job.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launch.overrides import from_hyperparameter, from_v3_hyperparameter_name, hydra_value, split_override

log = logging.getLogger("launch.shim")
CHECKPOINT_DIR = "/opt/ml/checkpoints"
FAILURE_FILE = "/opt/ml/output/failure"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
JOB_MARKER = "dogbreed-job.txt"


@dataclass
class Plan:
    """What the shim will do: Hydra overrides, extra environment, where the model goes."""

    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)
    output_dir: Path | None = None
    model_dir: Path | None = None


def parse_args(argv: Sequence[str]) -> list[str]:
    """``--key value`` / ``--key=value`` / ``key=value`` → Hydra overrides, SageMaker's own keys dropped."""
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            key, value = split_override(token[2:])
            if value is None:
                has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
                value = argv[i + 1] if has_value else "true"
                i += 1 if has_value else 0
            if not (key.startswith("sagemaker_") or key.startswith("_")):
                overrides.append(from_hyperparameter(from_v3_hyperparameter_name(key), value))
        elif "=" in token or token.startswith("~"):
            overrides.append(token)
        else:
            raise SystemExit(
                f"launch.shim: cannot read argument {token!r}; expected --key value or key=value"
            )
        i += 1
    return overrides


def _args_from_sm_hps(env: Mapping[str, str]) -> list[str]:
    hps = json.loads(env.get("SM_HPS") or "{}")
    args: list[str] = []
    for key, value in hps.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _data_root(env: Mapping[str, str], scratch: Path) -> Path | None:
    """The folder holding train/valid/test, from the SageMaker channels (symlinked together if needed)."""
    channels = {
        k[len("SM_CHANNEL_") :].lower(): Path(v) for k, v in env.items() if k.startswith("SM_CHANNEL_")
    }
    if "train" not in channels:
        single = channels.get("training") or channels.get("data")
        return single
    splits = {
        "train": channels["train"],
        "valid": channels.get("valid") or channels.get("val"),
        "test": channels.get("test"),
    }
    missing = [name for name, path in splits.items() if path is None]
    if missing:
        raise SystemExit(
            f"launch.shim: SM_CHANNEL_TRAIN is set but channel(s) {', '.join(missing)} are missing; "
            "pass train, valid and test channels (launch.inputs does)"
        )
    parent = splits["train"].parent
    if all(path == parent / name for name, path in splits.items()):
        return parent
    scratch.mkdir(parents=True, exist_ok=True)
    for name, path in splits.items():
        link = scratch / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path, target_is_directory=True)
    return scratch


def _weights_file(env: Mapping[str, str]) -> Path | None:
    folder = env.get("SM_CHANNEL_WEIGHTS")
    if not folder:
        return None
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(files) != 1:
        raise SystemExit(
            f"launch.shim: the weights channel {folder} must hold exactly one {'/'.join(WEIGHT_SUFFIXES)} "
            f"file, found {len(files)}"
        )
    return files[0]


def _trainer_overrides(env: Mapping[str, str], user_keys: set[str]) -> tuple[list[str], dict[str, str]]:
    """Accelerator, devices and nodes from SM_NUM_GPUS/SM_HOSTS;
    rendezvous env for multi-host without torchrun."""
    gpus = int(env.get("SM_NUM_GPUS") or 0)
    hosts = json.loads(env.get("SM_HOSTS") or "[]") or [env.get("SM_CURRENT_HOST") or "localhost"]
    derived: list[tuple[str, str]] = []
    if gpus > 1 or len(hosts) > 1:
        derived.append(("trainer", "ddp" if gpus else "cpu"))
        derived += [("++trainer.strategy", "ddp"), ("++trainer.num_nodes", str(len(hosts)))]
        derived.append(("trainer.devices", str(max(gpus, 1))))
    elif "SM_NUM_GPUS" in env:
        derived.append(("trainer", "gpu" if gpus else "cpu"))
    if "trainer" in user_keys:  # the user picked a trainer config: it is theirs to get right
        derived = []
    overrides = [f"{k}={v}" for k, v in derived if k.lstrip("+") not in user_keys]
    extra_env: dict[str, str] = {}
    if len(hosts) > 1 and "WORLD_SIZE" not in env:
        current = env.get("SM_CURRENT_HOST") or hosts[0]
        extra_env = {
            "MASTER_ADDR": hosts[0],
            "MASTER_PORT": env.get("MASTER_PORT", "29500"),
            "NODE_RANK": str(hosts.index(current)),
        }
    return overrides, extra_env


def _same_job(ckpt_dir: Path, env: Mapping[str, str]) -> bool:
    """Resume only this job's checkpoints (a restarted spot job keeps its name;
    another job must not resume)."""
    marker = ckpt_dir / JOB_MARKER
    job = env.get("TRAINING_JOB_NAME")
    if job and marker.is_file() and marker.read_text().strip() != job:
        log.warning(
            "launch.shim: %s holds checkpoints of job %s, not %s: starting fresh",
            ckpt_dir,
            marker.read_text().strip(),
            job,
        )
        return False
    return True


def translate(argv: Sequence[str], env: Mapping[str, str]) -> Plan:
    """SageMaker's argv + environment → the Hydra overrides for ``dogbreed.train`` (pure, for tests)."""
    args = list(argv) if argv else _args_from_sm_hps(env)
    user = parse_args(args)
    forced: list[str] = []
    output_dir = Path(env["SM_OUTPUT_DATA_DIR"]) if env.get("SM_OUTPUT_DATA_DIR") else None
    if output_dir is not None:
        forced.append(f"paths.output_dir={hydra_value(str(output_dir))}")
    root = _data_root(env, Path(tempfile.gettempdir()) / "dogbreed-channels")
    if root is not None:
        # Data from channels is read as is, never generated (data=synthetic would otherwise regenerate it).
        forced += [f"data.root={hydra_value(str(root))}", "++data.synthetic=null"]
    weights = _weights_file(env)
    if weights is not None:
        forced.append(f"model.weights_file={hydra_value(str(weights))}")
    ckpt_dir = Path(env.get("DOGBREED_CHECKPOINT_DIR", CHECKPOINT_DIR))
    if ckpt_dir.is_dir():
        forced.append(f"callbacks.model_checkpoint.dirpath={hydra_value(str(ckpt_dir))}")
        if (ckpt_dir / "last.ckpt").is_file() and _same_job(ckpt_dir, env):
            forced.append(f"ckpt_path={hydra_value(str(ckpt_dir / 'last.ckpt'))}")
    forced_keys = {split_override(o)[0].lstrip("+") for o in forced}
    kept = []
    for override in user:
        key = split_override(override)[0].lstrip("+~")
        if key in forced_keys:
            log.warning("launch.shim: ignoring %s (set by the SageMaker environment)", override)
        else:
            kept.append(override)
    user_keys = {split_override(o)[0].lstrip("+~") for o in kept}
    trainer, extra_env = _trainer_overrides(env, user_keys)
    model_dir = Path(env["SM_MODEL_DIR"]) if env.get("SM_MODEL_DIR") else None
    return Plan(
        overrides=[*trainer, *kept, *forced], env=extra_env, output_dir=output_dir, model_dir=model_dir
    )


def unpack_model(output_dir: Path, model_dir: Path) -> list[Path]:
    """Unpack ``<run>/model/model.tar.gz`` into SageMaker's model dir
    (what SageMaker uploads as the artifact)."""
    tar_path = output_dir / "model" / "model.tar.gz"
    if not tar_path.is_file():
        return []
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        tar.extractall(model_dir, filter="data")
    return [model_dir / n for n in names]


class _ErrorRecorder(logging.Handler):
    """Keeps the last ERROR message logged during training (for the failure file)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def _write_failure(message: str) -> None:
    """SageMaker shows the content of /opt/ml/output/failure as the job's FailureReason."""
    failure = Path(os.environ.get("DOGBREED_FAILURE_FILE", FAILURE_FILE))
    if failure.parent.is_dir():
        failure.write_text(message[:1024])


def main(argv: Sequence[str] | None = None) -> int:
    """Translate, run ``dogbreed.train``'s ``@hydra.main`` with the overrides, then fill SM_MODEL_DIR."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = translate(sys.argv[1:] if argv is None else argv, os.environ)
    os.environ.update(plan.env)
    ckpt_dir = Path(os.environ.get("DOGBREED_CHECKPOINT_DIR", CHECKPOINT_DIR))
    if ckpt_dir.is_dir() and os.environ.get("TRAINING_JOB_NAME"):
        (ckpt_dir / JOB_MARKER).write_text(os.environ["TRAINING_JOB_NAME"])
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let the exception reach us, for the failure file
    print("launch.shim: python -m dogbreed.train " + " ".join(plan.overrides), flush=True)
    from dogbreed import train as train_module

    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *plan.overrides]
    errors = _ErrorRecorder()
    logging.getLogger("dogbreed").addHandler(errors)  # Hydra reconfigures the root logger
    try:
        train_module.main()
    except SystemExit as exc:  # dogbreed.train reports a user error and exits non-zero
        if exc.code not in (0, None):
            _write_failure(errors.last or f"dogbreed.train exited with status {exc.code}")
        raise
    except Exception as exc:
        _write_failure(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        sys.argv = saved_argv
        logging.getLogger("dogbreed").removeHandler(errors)
    if plan.model_dir is not None and plan.output_dir is not None:
        for path in unpack_model(plan.output_dir, plan.model_dir):
            print(f"launch.shim: model file {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
