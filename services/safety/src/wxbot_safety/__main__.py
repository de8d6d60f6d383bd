"""`python -m wxbot_safety`: run the safety service."""

from wxbot_common.runtime import run_service
from wxbot_safety.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()
