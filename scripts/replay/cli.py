"""Command line: argument parsing and one function per subcommand.

Exit codes: 0 ok, 1 a check failed or a request got no HTTP answer, 2 usage or file error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .client import Client, ClientPool
from .events import Json, Placeholders, event_summary, seed_events
from .load import LoadConfig, LoadRunner, load_report_ok, render_load_report
from .player import load_jsonl, play_steps
from .scenarios import DEFAULT_DEADLINE, ScenarioError, list_scenarios, load_scenario, run_scenario

DEFAULT_BASE_URL = "http://localhost:8000"
PROG = "python3 -m scripts.replay"


def _print_json(obj: Json) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _make_client(args: argparse.Namespace) -> Client:
    return Client(args.base_url, args.secret, args.http_timeout, args.retries_503)


def cmd_scenario(args: argparse.Namespace) -> int:
    """``scenario``: list the shipped scenarios, or play one (``--expect``: and verify it)."""
    if args.list or not args.name:
        for path in list_scenarios():
            scenario = load_scenario(path)
            print(f"{path.stem:22} {scenario.description}")
        return 0
    scenario = load_scenario(args.name)
    client = _make_client(args)
    on_result = None if args.json else (lambda r: print(r.render(), flush=True))
    if not args.json:
        print(f"scenario {scenario.name}: {scenario.description}", flush=True)
    try:
        report = run_scenario(
            client,
            scenario,
            verify=args.expect,
            speed=args.speed,
            default_deadline=args.deadline,
            on_result=on_result,
        )
    finally:
        client.close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.render_summary())
    return 0 if report.ok else 1


def cmd_file(args: argparse.Namespace) -> int:
    """``file``: replay a JSON-lines file; 1 if any request got no HTTP answer."""
    steps = load_jsonl(args.path)
    client = _make_client(args)
    on_result = None if args.json else (lambda r: print(r.render(), flush=True))
    try:
        results = play_steps(client, steps, Placeholders(), args.speed, on_result=on_result)
    finally:
        client.close()
    if args.json:
        _print_json([result.to_dict() for result in results])
    return 0 if all(result.status != 0 for result in results) else 1


def cmd_seed(args: argparse.Namespace) -> int:
    """``seed``: post the seed payloads of the brief; 1 if any got no HTTP answer."""
    client = _make_client(args)
    outputs = []
    try:
        for event in seed_events(args.close):
            response = client.post_event(event)
            outputs.append({"event": event, "status": response.status, "body": response.body})
            if not args.json:
                body = json.dumps(response.body, ensure_ascii=False)
                print(f"{event_summary(event)} -> {response.status} {body}", flush=True)
    finally:
        client.close()
    if args.json:
        _print_json(outputs)
    return 0 if all(o["status"] != 0 for o in outputs) else 1


def cmd_load(args: argparse.Namespace) -> int:
    """``load``: run the load, print its report; 1 unless every group was answered once."""
    config = LoadConfig(
        rate=args.rate,
        conversations=args.conversations,
        duration=args.duration,
        messages_per_group=args.messages_per_group,
        gap=args.gap,
        concurrency=args.concurrency,
        margin=args.margin,
        reply_wait=args.reply_wait,
    )
    errors = config.validate()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    if config.rate > config.sustainable_rate:
        print(
            f"warning: --rate {config.rate} exceeds ~{config.sustainable_rate:.2f} groups/s that "
            f"{config.conversations} conversations can sustain; some starts will be skipped",
            file=sys.stderr,
        )
    pool = ClientPool(lambda: _make_client(args))
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.json else None
    report = LoadRunner(pool, config, log).run()
    if args.json:
        _print_json(report)
    else:
        print(render_load_report(report))
    return 0 if load_report_ok(report) else 1


def build_parser() -> argparse.ArgumentParser:
    """The parser; each subcommand's namespace carries its handler as ``func``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=os.environ.get("BASE_URL") or DEFAULT_BASE_URL,
        help="service base URL (default: $BASE_URL or %(default)s)",
    )
    common.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET") or None,
        help="sign bodies with X-Hub-Signature-256 (default: $WEBHOOK_SECRET)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument(
        "--http-timeout", type=float, default=10.0, help="per-request timeout in s (%(default)s)"
    )
    common.add_argument(
        "--retries-503",
        type=int,
        default=0,
        help="retry a 503 up to N times, honouring Retry-After (default: %(default)s)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay webhook events against the WhatsApp webhook receiver.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    scenario = sub.add_parser(
        "scenario", parents=[common], help="play a scenario from scenarios/ (or a path)"
    )
    scenario.add_argument("name", nargs="?", help="scenario name (scenarios/NAME.json) or path")
    scenario.add_argument("--list", action="store_true", help="list the shipped scenarios")
    scenario.add_argument("--expect", action="store_true", help="verify the expectations")
    scenario.add_argument("--speed", type=float, default=1.0, help="time factor (%(default)s)")
    scenario.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="default s after the last step to wait for expectations (%(default)s)",
    )
    scenario.set_defaults(func=cmd_scenario)

    replay_file = sub.add_parser("file", parents=[common], help="replay a JSON-lines file")
    replay_file.add_argument("path", help="events, one per line (bare or {at, event})")
    replay_file.add_argument(
        "--speed", type=float, default=1.0, help="2 = twice as fast, 0 = no waiting (%(default)s)"
    )
    replay_file.set_defaults(func=cmd_file)

    load = sub.add_parser("load", parents=[common], help="sustained load with reply accounting")
    load.add_argument("--rate", type=float, default=1.0, help="groups started per s (%(default)s)")
    load.add_argument("--conversations", type=int, default=10, help="conversations (%(default)s)")
    load.add_argument("--duration", type=float, default=30.0, help="s of sending (%(default)s)")
    load.add_argument(
        "--messages-per-group", type=int, default=3, help="messages per group (%(default)s)"
    )
    load.add_argument("--gap", type=float, default=1.0, help="s between messages (%(default)s)")
    load.add_argument("--concurrency", type=int, default=16, help="worker threads (%(default)s)")
    load.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="extra quiet s beyond 5 s before a conversation's next group (%(default)s)",
    )
    load.add_argument(
        "--reply-wait",
        type=float,
        default=15.0,
        help="s to wait for replies beyond last send + 5 s (%(default)s)",
    )
    load.set_defaults(func=cmd_load)

    seed = sub.add_parser("seed", parents=[common], help="post the seed payloads of the brief")
    seed.add_argument("--close", action="store_true", help="also close the conversation")
    seed.set_defaults(func=cmd_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
