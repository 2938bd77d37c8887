"""Dataset tooling: ``python -m dogbreed.data {download,check,show}``.

download  fetch the dog dataset (resumable, verified, safely extracted) into data/dogImages
check     decode every image and report problems by path (exit 1 if training would break)
show      write a PNG grid of sample images and a bar chart of images per class
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_ROOT = "data/dogImages"


def _download(args: argparse.Namespace) -> int:
    from dogbreed.data.download import download

    result = download(
        url=args.url,
        dest=args.dest,
        checksum=args.checksum,
        force=args.force,
        keep_archive=args.keep_archive,
        archive=args.archive,
        retries=args.retries,
        progress=not args.quiet,
    )
    print(result.message)
    return 0


def _check(args: argparse.Namespace) -> int:
    from dogbreed.data.check import format_table, run_check

    report = run_check(
        args.root,
        min_size=args.min_size,
        max_imbalance=args.max_imbalance,
        workers=args.workers,
        progress=not (args.quiet or args.json) and sys.stderr.isatty(),
        quarantine=args.quarantine,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_table(report))
    return 1 if report.blocking or (args.strict and report.warnings) else 0


def _show(args: argparse.Namespace) -> int:
    from dogbreed.data.show import show

    result = show(args.root, out=args.out, n=args.n, split=args.split, seed=args.seed)
    print(f"{result.grid}  ({len(result.samples)} {args.split} samples, seed {args.seed})")
    print(f"{result.chart}  (images per class, {len(next(iter(result.counts.values())))} classes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dogbreed.data.download import DEFAULT_URL

    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `python -m dogbreed.data COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{download,check,show}")

    p = sub.add_parser(
        "download",
        help="fetch and extract the dog dataset",
        description=(
            "Download the dataset archive with a progress bar, resume an interrupted transfer (HTTP Range), "
            "verify its checksum (--checksum, or the server's ETag when it is an MD5 as on S3), extract it "
            "safely (absolute paths, '..' entries and symlinks are refused) into a temporary folder and "
            "rename that into DEST/<archive name>. A no-op when the dataset is already there."
        ),
    )
    p.add_argument("--url", default=DEFAULT_URL, help="archive URL (default: %(default)s)")
    p.add_argument(
        "--dest", type=Path, default=Path("data"), help="parent folder of the dataset (default: %(default)s)"
    )
    p.add_argument("--checksum", help="expected ALGO:HEX of the archive, e.g. sha256:9f86d0... or md5:...")
    p.add_argument("--archive", type=Path, help="extract this local zip instead of downloading")
    p.add_argument(
        "--force", action="store_true", help="download and replace the dataset even if it is there"
    )
    p.add_argument("--keep-archive", action="store_true", help="keep DEST/<name>.zip after extracting")
    p.add_argument(
        "--retries", type=int, default=3, help="resume attempts after an interruption (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "check",
        help="decode every image and report problems",
        description=(
            "Scan every split in parallel, fully decoding each image, and report by path: zero-byte files, "
            "non-images, undecodable or truncated images, images smaller than --min-size, unusual modes "
            "(CMYK, 16-bit, alpha, palette with transparency), exact duplicates within and across splits, "
            "class folders missing from a split, empty classes and class imbalance. Exit status 1 when "
            "anything would break training (errors), 0 otherwise."
        ),
    )
    p.add_argument(
        "root", nargs="?", type=Path, default=Path(DEFAULT_ROOT), help="dataset folder (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument(
        "--quarantine",
        type=Path,
        metavar="DIR",
        help=(
            "move broken files (zero-byte, non-image, undecodable, truncated) to DIR, keeping their paths "
            "relative to ROOT; nothing is deleted"
        ),
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=32,
        metavar="PX",
        help="warn about images whose shorter side is below PX (default: %(default)s)",
    )
    p.add_argument(
        "--max-imbalance",
        type=float,
        default=10.0,
        metavar="RATIO",
        help=(
            "warn when a split's largest class has more than RATIO times the images of its smallest "
            "(default: %(default)s)"
        ),
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: one per available core)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "show",
        help="PNG grid of samples and a bar chart of images per class",
        description=(
            "Write OUT/samples_<split>.png (N random images titled with their class) and "
            "OUT/class_counts.png (images per class, stacked by split)."
        ),
    )
    p.add_argument(
        "root", nargs="?", type=Path, default=Path(DEFAULT_ROOT), help="dataset folder (default: %(default)s)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("outputs/data"), help="folder for the PNGs (default: %(default)s)"
    )
    p.add_argument("-n", type=int, default=16, help="number of sample images (default: %(default)s)")
    p.add_argument(
        "--split",
        default="train",
        choices=("train", "valid", "test"),
        help="split to sample (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.set_defaults(func=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand: 0 ok, 1 dataset problems or a failed download, 2 bad options
    (message names which)."""
    from dogbreed.data.download import DownloadError
    from dogbreed.data.layout import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, DownloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) and not isinstance(exc, DatasetError) else 1


if __name__ == "__main__":
    sys.exit(main())
