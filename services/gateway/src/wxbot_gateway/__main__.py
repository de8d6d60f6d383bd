"""`python -m wxbot_gateway`: run the gateway service."""

from wxbot_common.runtime import run_service
from wxbot_gateway.app import main


def run() -> None:
    run_service(main)


if __name__ == "__main__":
    run()
