"""Command-line entry point: ``python cli.py --timeout 1h30m``."""

import argparse

from durations import parse_duration


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=parse_duration, default="30s")
    args = parser.parse_args(argv)
    print(f"timeout: {args.timeout} s")


if __name__ == "__main__":
    main()
