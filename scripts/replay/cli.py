"""Command line: argument parsing and one function per subcommand.

Exit codes: 0 ok, 1 an answer differed from the expected one (a step's status or error code,
a check of ``--expect``, a load group answered 0 or 2+ times) or a request got no HTTP answer,
2 usage or file error, 130 interrupted.

``scenario``, ``file`` and ``seed`` replace the ids written out in their events by fresh uuid4s
(the same one for the same id within a run) unless ``--keep-ids`` is given, so they can be run
again and again against the same service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .client import Client, ClientPool
from .events import FreshIds, Json, Placeholders, seed_events
from .load import LoadConfig, LoadRunner, load_report_ok, render_load_report
from .player import Step, StepResult, accepted, load_jsonl, play_steps
from .scenarios import DEFAULT_DEADLINE, ScenarioError, list_scenarios, load_scenario, run_scenario

DEFAULT_BASE_URL = "http://localhost:8000"
PROG = "python3 -m scripts.replay"


def _print_json(obj: Json) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _make_client(args: argparse.Namespace) -> Client:
    return Client(args.base_url, args.secret, args.http_timeout, args.retries_503, args.token)


def _fresh_ids(args: argparse.Namespace) -> FreshIds | None:
    return None if args.keep_ids else FreshIds()


def _play_report(results: list[StepResult], ids: FreshIds | None) -> dict:
    """``{"ok", "ids": {original: fresh}, "steps": [step...]}`` of a played file or seed."""
    return {
        "ok": all(result.problem is None for result in results),
        "ids": dict(ids.values) if ids is not None else {},
        "steps": [result.to_dict() for result in results],
    }


def _print_play_summary(report: dict) -> None:
    for original, fresh in report["ids"].items():
        print(f"  {original} -> {fresh}")
    failed = sum(not step["ok"] for step in report["steps"])
    print("PASS" if report["ok"] else f"FAIL ({failed} answer(s) not as expected)")


def _play(args: argparse.Namespace, steps: list[Step], speed: float) -> int:
    """Play ``steps``, print each answer (or the JSON report); 1 unless all were as expected."""
    ids = _fresh_ids(args)
    client = _make_client(args)
    on_result = None if args.json else (lambda r: print(r.render(), flush=True))
    try:
        results = play_steps(client, steps, Placeholders(), speed, on_result=on_result, ids=ids)
    finally:
        client.close()
    report = _play_report(results, ids)
    if args.json:
        _print_json(report)
    else:
        _print_play_summary(report)
    return 0 if report["ok"] else 1


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
            ids=_fresh_ids(args),
        )
    finally:
        client.close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.render_summary())
    return 0 if report.ok else 1


def cmd_file(args: argparse.Namespace) -> int:
    """``file``: replay a JSON-lines file; 1 unless every line got its expected answer (its
    ``expect_status``/``expect_error``, else the accepted status of its event type)."""
    return _play(args, load_jsonl(args.path), args.speed)


def cmd_seed(args: argparse.Namespace) -> int:
    """``seed``: post the seed payloads of the brief, at once; 1 unless each was accepted."""
    steps = [Step(0.0, event, accepted(event)) for event in seed_events(args.close)]
    return _play(args, steps, 0)


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
    common.add_argument(
        "--token",
        default=(os.environ.get("API_TOKEN") or "").split(",")[0].strip() or None,
        help="bearer token for the reads when the service sets API_TOKEN "
        "(default: the first of $API_TOKEN)",
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

    ids_option = argparse.ArgumentParser(add_help=False)
    ids_group = ids_option.add_mutually_exclusive_group()
    ids_group.add_argument(
        "--fresh-ids",
        dest="keep_ids",
        action="store_false",
        help="replace each id written out in the events by a new uuid4, the same one for the "
        "same id within this run (the default), so a run can be repeated",
    )
    ids_group.add_argument(
        "--keep-ids",
        dest="keep_ids",
        action="store_true",
        help="send the ids as written (a second run then gets 400 conversation_exists)",
    )
    ids_option.set_defaults(keep_ids=False)

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay webhook events against the WhatsApp webhook receiver.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    scenario = sub.add_parser(
        "scenario", parents=[common, ids_option], help="play a scenario from scenarios/ (or a path)"
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

    replay_file = sub.add_parser(
        "file", parents=[common, ids_option], help="replay a JSON-lines file"
    )
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

    seed = sub.add_parser(
        "seed", parents=[common, ids_option], help="post the seed payloads of the brief"
    )
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
