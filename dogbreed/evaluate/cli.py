"""``python -m dogbreed.evaluate ckpt=PATH [data=…] [split=test] [output_dir=DIR]``: the evaluation report.

``ckpt`` is a Lightning checkpoint, an exported ``model.pt`` (or its folder), or the ``model.tar.gz`` a
SageMaker job wrote. Without ``data=…`` the dataset is the one the run trained on (read from the run's
``.hydra/config.yaml`` when ``ckpt`` lies inside a run's output directory). Only the evaluated split has
to exist under ``data.root``, so a folder holding just ``test/`` works. The report goes to the run's reports
folder ``<output_dir>/reports/`` (or ``reports/`` beside ``ckpt``) unless ``output_dir=…`` names another.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dogbreed.config import CONFIG_DIR, ConfigError
from dogbreed.data.layout import DatasetError
from dogbreed.evaluate import Report, evaluate, settings_from, split_dir

log = logging.getLogger("dogbreed.evaluate")


def run_output_dir(ckpt: Path) -> Path | None:
    """The output directory of the training run ``ckpt`` belongs to (``<output_dir>/checkpoints/x.ckpt``,
    ``<output_dir>/model/model.pt``), if any."""
    start = ckpt if ckpt.is_dir() else ckpt.parent
    for candidate in (start, start.parent):
        if (candidate / ".hydra" / "config.yaml").is_file():
            return candidate
    return None


def data_config(cfg: DictConfig, output_dir: Path | None) -> tuple[DictConfig, str]:
    """The ``data`` section to use and where it came from (the CLI, or the run's saved config)."""
    if cfg.get("data") is not None:
        return cfg.data, "data=…"
    if output_dir is not None:
        saved = OmegaConf.load(output_dir / ".hydra" / "config.yaml")
        if saved.get("data") is not None:
            return saved.data, str(output_dir / ".hydra" / "config.yaml")
    raise ConfigError(
        f"No dataset for ckpt={cfg.ckpt}: it is not inside a training run's output directory, so pass one, "
        "e.g. data=folder data.root=/path/to/dataset (or data=dogbreed, data=synthetic)"
    )


def run(cfg: DictConfig) -> Report:
    """Resolve model, data and reports folder from ``cfg`` (``conf/eval.yaml``) and write the report."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError(
            "ckpt is required: python -m dogbreed.evaluate ckpt=outputs/…/checkpoints/best….ckpt "
            "(or model.pt / model.tar.gz)"
        )
    ckpt = Path(cfg.ckpt).expanduser()
    if not ckpt.exists():
        raise FileNotFoundError(f"ckpt={ckpt}: no such file or folder")
    output_dir = run_output_dir(ckpt)
    data, origin = data_config(cfg, output_dir)
    if data.get("synthetic") is not None:
        from dogbreed.data.synthetic import SyntheticSpec, ensure

        ensure(data.root, SyntheticSpec(**data.synthetic))
    try:
        folder = split_dir(data.root, cfg.split)
    except DatasetError as exc:
        raise DatasetError(
            f"{exc}\n(data.root from {origin}; choose another with data=folder data.root=…)"
        ) from None
    settings = settings_from(cfg.evaluate)
    beside = ckpt if ckpt.is_dir() else ckpt.parent
    reports_dir = (
        Path(cfg.output_dir).expanduser() if cfg.get("output_dir") else (output_dir or beside) / "reports"
    )
    if data.get("num_workers") is None:
        from dogbreed.data.datamodule import default_num_workers

        num_workers = default_num_workers()
    else:
        num_workers = int(data.num_workers)
    log.info("Evaluating %s on %s", ckpt, folder)
    return evaluate(
        ckpt,
        folder,
        reports_dir,
        settings,
        batch_size=int(data.get("batch_size") or 32),
        num_workers=num_workers,
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> float:
    """CLI entry: writes the report, prints headline numbers and where the report went; returns top-1."""
    report = run(cfg)
    m = report.metrics
    if m.most_confused:
        p = m.most_confused[0]
        print(
            f"Most confused: {p['a']} ↔ {p['b']} ({p['count']} error{'s' if p['count'] != 1 else ''})",
            flush=True,
        )
    print(f"Evaluation report: {report.html}", flush=True)
    for key, value in (
        ("eval_top1", m.top1),
        ("eval_top5", m.top5),
        ("eval_ece", m.calibration["ece"]),
        ("eval_macro_f1", m.macro["f1"]),
    ):
        print(f"{key}={value:.6g}", flush=True)
    return m.top1
