"""Security options of `dni coordinator` and `dni keys` (the worker's: workers/cli.py): which keys, CURVE or not."""
from __future__ import annotations

import argparse
import logging

from coordinator.config import ConfigError
from protocol import keys
from protocol.auth import is_local

log = logging.getLogger("dni")


def add_coordinator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", metavar="DIR", help="key directory from `dni keys generate`: CURVE on every "
                        "socket; only workers whose public key is in DIR/workers/ may join")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --bind without keys "
                        "(nothing encrypted, anyone who reaches the port may join)")


def coordinator_curve(keys_dir: str | None, insecure: bool, bind: str) -> dict | None:
    """The Coordinator's `curve` argument for these options; refuses an exposed bind without keys."""
    if keys_dir and insecure:
        raise ConfigError("--keys and --insecure contradict each other; pick one")
    if keys_dir:
        return {"server": keys.load_server(keys_dir), "allow": keys.allowed_workers(keys_dir)}
    if not is_local(bind):
        if not insecure:
            raise ConfigError(f"--bind {bind} is reachable from other hosts: give --keys DIR "
                              "(see `dni keys generate`), or --insecure to run unencrypted and open")
        log.warning("--insecure: control and data travel unencrypted, and anyone who reaches %s may join", bind)
    return None


def add_keys_command(sub) -> None:
    cmd = sub.add_parser("keys", help="CURVE certificates for runs across machines")
    actions = cmd.add_subparsers(dest="action", required=True)
    gen = actions.add_parser("generate", help="write a coordinator keypair and N worker keypairs into DIR")
    gen.add_argument("directory", metavar="DIR")
    gen.add_argument("--workers", type=int, default=1, metavar="N", help="worker keypairs (default: %(default)s)")
    gen.set_defaults(func=cmd_keys_generate)


def cmd_keys_generate(args) -> int:
    directory = keys.generate(args.directory, args.workers)
    numbered = "worker-0.key_secret" if args.workers == 1 else f"worker-0..{args.workers - 1}.key_secret"
    # File names only: a key, even a public one, never goes to the terminal or a log.
    print(f"wrote CURVE keys to {directory}/ (secret files mode 0600):\n"
          f"  coordinator.key_secret   stays on the coordinator host:  dni coordinator --keys {directory} ...\n"
          f"  coordinator.key          public: copy to every worker host (--server-key)\n"
          f"  {numbered:24} hand worker i its own file only (--key), over a secure channel\n"
          f"  workers/worker-i.key     the coordinator's allowlist: delete a file to shut that worker out")
    return 0
