"""The profiler's reports: wired into training by default, JSON contents, HTML in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest

from dogbreed.profiler import RULE_DEFAULTS, ProfilerCallback, resolve_params, run_profiler_rules
from dogbreed.profiler.report import write_report


def test_default_config_enables_the_profiler_with_sagemaker_defaults(cfg_factory, tmp_path):
    cfg = cfg_factory()
    node = cfg.callbacks.profiler
    callback = hydra.utils.instantiate(node)
    assert isinstance(callback, ProfilerCallback)
    assert callback.interval_ms == 500
    assert callback.output_dir == Path(cfg.paths.output_dir) / "reports"
    assert callback.rule_params == resolve_params(None) == {k: dict(v) for k, v in RULE_DEFAULTS.items()}
    assert RULE_DEFAULTS["LowGPUUtilization"] == {
        "threshold_p95": 70,
        "threshold_p5": 10,
        "window": 500,
        "patience": 1000,
    }
    off = hydra.utils.instantiate(
        cfg_factory(["callbacks.profiler.rules.StepOutlier=null"]).callbacks.profiler
    )
    assert off.rule_params["StepOutlier"] is None


def test_training_run_writes_both_reports(trained_run):
    reports = Path(trained_run["output_dir"]) / "reports"
    report = json.loads((reports / "profiler.json").read_text())
    assert [r["name"] for r in report["rules"]] == list(RULE_DEFAULTS)
    assert all(r["status"] in ("IssuesFound", "NoIssuesFound") for r in report["rules"])
    summary = report["summary"]
    assert summary["steps"] > 0 and summary["epochs"] == 3 and summary["system_samples"] > 0
    assert 0 <= summary["data_wait_share_pct"] <= 100
    assert report["context"]["batch_size"] == 16 and report["context"]["device"] == "cpu"
    assert (
        len(report["steps"]["step"])
        == len(report["steps"]["wait_ms"])
        == summary["steps"] + summary["profiled_steps"]
    )
    assert (reports / "profiler.html").stat().st_size > 10_000


def test_gpu_report_has_gpu_figures_and_rows(tmp_path):
    from test_profiler_rules import synth

    data = synth(gpu_util=35.0, gpu_mem=30.0)
    results = run_profiler_rules(data)
    paths = write_report(tmp_path, data, results, {"rules": resolve_params(None)})
    page = paths["html"].read_text()
    assert "GPU utilisation p95" in page and page.count('class="plot"') == 3
    report = json.loads(paths["json"].read_text())
    assert report["system"]["gpu_util"][0][0] == 35.0 and "LowGPUUtilization" in report["summary"]["issues"]


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(tmp_path):
    from browser import chrome, console_errors
    from test_profiler_callback import Tiny, fit

    fit(
        tmp_path,
        Tiny(),
        steps=30,
        sleep=0.006,
        html=True,
        framework_profile={"start_step": 3, "num_steps": 2},
    )
    page = tmp_path / "reports" / "profiler.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    with chrome() as driver:
        driver.get(page.as_uri())
        assert driver.title == "Profiler report"
        plots = driver.find_elements("css selector", "img.plot")
        assert len(plots) == 3
        assert all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 300", p)
            for p in plots
        )
        headings = [h.text for h in driver.find_elements("css selector", "h2")]
        assert headings[:2] == ["Job summary", "Rules"] and "Top operators (torch.profiler)" in headings
        rows = driver.find_elements("xpath", "//h2[text()='Rules']/following-sibling::table[1]/tbody/tr")
        cells = [row.find_elements("tag name", "td") for row in rows]
        statuses = {c[0].text: c[1].get_attribute("class") for c in cells}
        assert set(statuses) == set(RULE_DEFAULTS) and statuses["IOBottleneck"] == "IssuesFound"
        assert "aten::" in driver.find_element("tag name", "body").text
        driver.save_screenshot(str(tmp_path / "profiler.png"))
        assert not console_errors(driver)
