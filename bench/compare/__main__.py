"""``python -m compare`` (with bench/ on the path), what ``ukedge bench compare`` runs."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends the run through KeyboardInterrupt, so every started instance is stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ukedge bench compare",
        description="The same app as unikernel (cold and resumed), container (runc, crun, "
        "podman), full VM (Debian + systemd) and host process, side by side: report.md, PNG "
        "plots and results.json (the raw runs) in --out.",
    )
    parser.add_argument(
        "--app", type=Path, default=ROOT / "examples" / "sensor-agg", help="app directory"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="sampled runs per form (5; --short: 3)"
    )
    parser.add_argument("--out", type=Path, default=Path("compare-out"), help="output directory")
    parser.add_argument(
        "--short",
        action="store_true",
        help="process, unikernel and runc only, 3 runs, density of 2 (the CI mode)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="render OUT/results.json again instead of measuring",
    )
    opts = parser.parse_args(argv)
    runs = opts.runs if opts.runs is not None else (3 if opts.short else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")

    from compare import Settings, run_compare, write_report
    from compare._measure import nice_self

    if opts.report_only:
        import json

        data = json.loads((opts.out / "results.json").read_text())
        print(write_report(data, opts.out))
        return 0
    if not (opts.app / "Ukfile").is_file():
        parser.error(f"--app {opts.app}: no Ukfile there")
    nice_self()
    _interrupt_on_sigterm()
    settings = Settings(app=opts.app.resolve(), runs=runs, out=opts.out.resolve(), short=opts.short)
    try:
        data = run_compare(settings, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted; every instance started was stopped", file=sys.stderr)
        return 130
    report = write_report(data, settings.out)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
