"""`python -m wxbot_context`: run the context service; `python -m wxbot_context rebuild`: rebuild it."""

import sys

from wxbot_common.runtime import run_service
from wxbot_context.app import main


def run() -> None:
    if sys.argv[1:2] == ["rebuild"]:
        from wxbot_context.rebuild import main as rebuild

        rebuild(sys.argv[2:])
        return
    run_service(main)


if __name__ == "__main__":
    run()
