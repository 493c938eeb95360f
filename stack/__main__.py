import argparse
import logging
import sys
import time

from stack import __doc__ as usage
from stack.config import StackConfig
from stack.demo import DemoFailed, run_demo
from stack.lifecycle import Stack
from stack.processes import StartupError


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description=usage,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "demo", "status"])
    command = parser.parse_args().command
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True
    )
    logging.Formatter.converter = time.gmtime
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = StackConfig()
    stack = Stack(config)
    with config.activated():
        return _run(command, stack, config)


def _run(command: str, stack: Stack, config: StackConfig) -> int:
    if command == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if command == "status":
        running = stack.supervisor.running()
        for name, pid in running.items():
            print(f"{name:<16} pid {pid}")
        return 0 if running else 1
    return _up(stack, config, demo=command == "demo")


def _up(stack: Stack, config: StackConfig, demo: bool) -> int:
    started = time.perf_counter()
    try:
        if not (demo and stack.supervisor.running()):
            stack.up()
        print(f"stack ready in {time.perf_counter() - started:.1f} s; logs in {config.dir}/logs")
        print(f"proxy {config.proxy_url}  Prefect UI {config.prefect_ui_url}")
        print(f"clipctl: set -a; . {config.clipctl_env}; set +a; .venv/bin/clipctl agents")
        if demo:
            url = run_demo(config)
            print("the stack is still running: `make down` stops it")
            print(f"DEMO OK {url}")
    except (StartupError, DemoFailed) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
