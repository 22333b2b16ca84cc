"""The ``kubesight`` command: the top layer; one argparse tree in which each area registers its subcommands.

The list of areas below is explicit (no autodiscovery): each module exposes
``register(sub, group)`` -- ``sub`` adds a top-level command, ``group(name, help)`` returns the
shared command group ``name`` (``collect``, ``bench`` ...) -- and sets ``func`` on the parsers it
adds; ``func(args)`` returns the exit code.  Nothing below this module imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it adds) -- in the order of the flow: collectors -> streams -> rules -> alerts
AREAS = (
    "streams.cli_kafka",  # kafka up | down | status
    "deploy.cluster.cli",  # cluster up | down | status
    "streams.cli_run",  # worker, demo
    "streams.bench",  # bench pipeline, bench derived
    "streams.faults",  # bench faults
    "streams.bench_scale",  # bench scale
    "collectors.replay",  # collect replay
    "collectors.kernel.cli",  # collect kernel, bench kernel
    "collectors.cloud.cli",  # collect cloud, bench cloud
    "collectors.kubernetes.cli",  # collect kubernetes, bench kubernetes
    "collectors.metrics.cli",  # collect metrics, bench metrics
    "detectors.cli",  # bench nab
    "rules.cli",  # rules check | test | list, bench rules
    "streams.cli_alerts",  # routes test | check, silences add | list | expire | serve, bench alerts
    "streams.remediation",  # remediate
    "streams.bench_latency",  # bench latency
    "streams.cli_board",  # board, bench board
    "streams.cluster_demo",  # bench cluster (demo --cluster is a flag of streams.cli_run's demo)
    "streams.cli_incidents",  # incidents list | show
    "streams.bench_rca",  # bench rca
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubesight",
        description="Event-streaming anomaly pipeline for Kubernetes: collectors -> Kafka -> detectors + rules -> routed alerts.",
    )
    p.add_argument("--config", help="settings YAML (default: $KUBESIGHT_CONFIG)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}

    def group(name: str, help: str):
        """Get or create a command group (``collect``, ``bench``, ``rules`` ...) shared by several areas."""
        if name not in groups:
            gp = sub.add_parser(name, help=help)
            gp.set_defaults(func=lambda args, gp=gp: (gp.print_help(), 2)[1])
            groups[name] = gp.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        return groups[name]

    for name in AREAS:
        importlib.import_module(name).register(sub, group)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from core.kafkaclient import quiet_startup_noise

    quiet_startup_noise()  # a fresh broker's retried leader/coordinator elections are not the user's errors
    import signal
    import threading

    from streams.cli_run import _interrupt

    # `kill` (SIGTERM) stops every command as Ctrl-C does: through its ``finally`` blocks, which stop the
    # processes it started (a bench's receiver, producer, workers); without it they ran on, some forever.
    # Commands with their own stop (demo, worker, board, serve, collect kernel) install their handler over this one;
    # a caller's own handler (main() called in a test) is back afterwards.
    if threading.current_thread() is not threading.main_thread():
        return _run(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    finally:
        if previous is not None:  # None: a handler not set from Python, nothing to put back
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    """``args.func(args)``, its exceptions as exit codes and one-line messages."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kubesight rules list | head`: the reader is gone, nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as exc:
        msg = user_error(exc)
        if msg is None:
            raise
        print(f"kubesight: {msg}", file=sys.stderr)
        return 2


def user_error(exc: BaseException) -> str | None:
    """The one-line (one line per problem) message for an error the user can fix, else None (a bug: traceback).

    >>> user_error(FileNotFoundError(2, "No such file or directory", "/nonexistent.yaml"))
    '/nonexistent.yaml: No such file or directory'
    >>> user_error(KeyError("x")) is None
    True
    """
    from core.broker import KafkaLaunchError, KafkaUnreachable
    from core.telemetry import ListenError
    from core.yamlconfig import ConfigError

    if isinstance(exc, (ConfigError, KafkaUnreachable, KafkaLaunchError)):
        return str(exc)
    if isinstance(exc, ListenError):  # a port in use: "cannot listen on 127.0.0.1:6066 (web_port): Address ..."
        return exc.strerror
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):  # raised with a message of ours (the path comes first)
        return str(exc)
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return f"writing output: {exc.strerror}"  # `--stdout > file` on a full disk
    if type(exc).__name__ == "ConfigException" and type(exc).__module__.startswith("kubernetes"):
        return (f"Kubernetes client configuration: {exc} (looked at --kubeconfig, $KUBECONFIG, ~/.kube/config, "
                "then the in-cluster service account)")
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc})"
    import yaml

    if isinstance(exc, yaml.YAMLError):
        return f"YAML: {exc}".replace("\n", " ")
    return None


if __name__ == "__main__":
    sys.exit(main())
