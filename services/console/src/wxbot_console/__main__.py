"""`python -m wxbot_console`: run the console."""

from wxbot_common.runtime import run_service
from wxbot_console.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()
