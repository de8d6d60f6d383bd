"""`python -m wxbot_analytics`: run the analytics service.

Also: `rebuild` (replay the log into an empty read model) and `report` (print a report);
the benchmark is `make bench-analytics` (bench/analytics.py).
"""

import sys

from wxbot_common.runtime import run_service


def run() -> None:
    command, rest = sys.argv[1:2], sys.argv[2:]
    if command == ["rebuild"]:
        from wxbot_analytics.rebuild import main as rebuild

        rebuild(rest)
    elif command == ["report"]:
        from wxbot_analytics.cli import main as report

        report(rest)
    else:
        from wxbot_analytics.app import main

        run_service(main)


if __name__ == "__main__":
    run()
