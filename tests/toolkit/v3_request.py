"""Run with SDK v3's Python (``.venv-v3``): the CreateTrainingJob that ``launch.train launch.sdk=v3`` sends.

    python tests/toolkit/v3_request.py REQUEST.json OUTPUT_DIR [OVERRIDE ...]

The launcher runs as a user runs it, against ``AWS_ENDPOINT_URL`` (moto_server), with ``launch.sdk=v3`` and
the overrides given; ``jobs.launch_request`` records the request botocore sent (written to REQUEST.json).
ModelTrainer uploads the code and its own driver (``sm_drivers``: ``sm_train.sh``, the Python drivers) as
channels, so the request plus that S3 content is everything a v3 job sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs import launch_request


def main(out_path: str, output_dir: str, overrides: list[str]) -> None:
    sent = launch_request(["launch.sdk=v3", *overrides], Path(output_dir))
    Path(out_path).write_text(json.dumps(sent, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
