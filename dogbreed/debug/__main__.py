"""``python -m dogbreed.debug analyze PATH``: run the Debugger rules over an smdebug trial and write the
report.

PATH is an smdebug trial folder: the local one a run writes (``<output_dir>/debug-output``) or a SageMaker
job's Debugger output downloaded from S3 (``aws s3 sync s3://…/<job>/debug-output ./debug-output``).
The reports (``debugger.json``, ``debugger.html``) go to the reports folder ``--output`` (default:
``PATH/reports``).
Rule parameters use SageMaker's names: ``--set Overfit.ratio_threshold=0.2 --set DeadRelu=off``.
Exit status: 0, or 1 with ``--fail-on-issues`` when a rule found issues, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from dogbreed.debug.builtin_rules import RULES, build_rules, run_debugger_rules


def _rule_config(settings: list[str]) -> dict[str, dict[str, Any] | None]:
    """``["Overfit.patience=3", "DeadRelu=off"]`` → ``{"Overfit": {"patience": 3}, "DeadRelu": None, …}``."""
    config: dict[str, dict[str, Any] | None] = {name: {} for name in RULES}
    for item in settings:
        key, sep, raw = item.partition("=")
        rule, _, param = key.partition(".")
        if not sep or rule not in RULES:
            raise ValueError(f"--set {item!r}: use RULE.param=value or RULE=off; rules: {', '.join(RULES)}")
        if not param:
            if raw.lower() not in ("off", "null", "false"):
                raise ValueError(f"--set {item!r}: a rule alone can only be switched off (RULE=off)")
            config[rule] = None
            continue
        if config[rule] is None:
            config[rule] = {}
        config[rule][param] = yaml.safe_load(raw)
    return config


def analyze(
    path: Path, output: Path | None, settings: list[str], html: bool = True
) -> tuple[dict[str, Path], list]:
    """Load the trial, evaluate the rules, write the reports; returns (paths, rule results)."""
    from dogbreed.debug import smdebug_bridge
    from dogbreed.debug.report import write_report

    if not smdebug_bridge.available():
        raise RuntimeError(
            "analyze reads smdebug trials: install the extra with pip install 'dogbreed[smdebug]'"
        )
    rules = build_rules(_rule_config(settings))
    pwi = next((r for r in rules if r.name == "PoorWeightInitialization"), None)
    history = smdebug_bridge.load_trial(
        path,
        first_steps=int(pwi.steps) if pwi else 0,
        input_regex=pwi.activation_inputs_regex if pwi else ".*relu_input",
    )
    results, findings = run_debugger_rules(rules, history)
    reports_dir = output or path / "reports"
    subtitle = f"smdebug trial {path} · {history.last_step or 0} steps"
    paths = write_report(
        reports_dir,
        results,
        rules,
        findings,
        history,
        html=html,
        subtitle=subtitle,
        trial=str(path),
        stopped=None,
    )
    return paths, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.debug",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "analyze", help="run the Debugger rules over an smdebug trial folder", description=analyze.__doc__
    )
    p.add_argument("path", type=Path, help="smdebug trial folder (holds index/ and events/)")
    p.add_argument("-o", "--output", type=Path, default=None, help="reports folder (default: PATH/reports)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="RULE.PARAM=VALUE",
        help="override a rule parameter, or RULE=off; repeatable",
    )
    p.add_argument("--no-html", action="store_true", help="write debugger.json only")
    p.add_argument("--fail-on-issues", action="store_true", help="exit 1 when any rule reports IssuesFound")
    args = parser.parse_args(argv)
    try:
        paths, results = analyze(args.path, args.output, args.settings, html=not args.no_html)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        where = f" at step {result.step}" if result.step is not None else ""
        print(f"{result.name}: {result.status}{where} - {result.message}")
    print(f"report: {paths.get('html', paths['json'])}")
    return 1 if args.fail_on_issues and any(r.status == "IssuesFound" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
