"""`python -m wxbot_context`: run the context service."""

from wxbot_common.runtime import run_service
from wxbot_context.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()
