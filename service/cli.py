"""Flask CLI commands: the worker, the scheduler, and operator tools.

An action's command has the name of its job and use case (`flask reconcile_groups`,
`flask expire_held`, `flask prune_held`). May import: `service.pipeline` and below.
Never `service.api`.
"""

import json
import logging
import os

import click
from flask import current_app
from flask.cli import AppGroup

from service.domain import generation
from service.domain.clock import seconds_us
from service.domain.delivery import DEAD, STATUSES
from service.domain.rules import EXPIRED, HELD
from service.infra.database import bound_waits_of_serving_process
from service.infra.queueing import REPLIES, ROLES, get_scheduler, run_worker
from service.pipeline import deliveries, generations, holds, replies
from service.pipeline.queries import (
    get_delivery,
    get_generation,
    list_deliveries,
    list_generations,
    list_held,
)
from service.runtime import freeze_startup_objects

log = logging.getLogger(__name__)

# How much lower the CPU priority of the delivery and generation workers is (nice(2)).
OUTBOUND_NICENESS = 5


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the jobs already queued, then exit.")
@click.option("--name", default=None, help="Worker name (default: generated).")
@click.option(
    "--queue",
    "role",
    type=click.Choice(ROLES),
    default=REPLIES,
    show_default=True,
    help="replies: flush_group and the periodic jobs; deliveries: deliver_replies; "
    "generations: generate_replies.",
)
def worker_command(burst, name, role):
    """Run an RQ worker (warm shutdown on SIGTERM) that waits out Redis outages: by default
    for flush_group and the periodic jobs; with `--queue deliveries` for deliver_replies, which
    needs a worker of its own when REPLY_WEBHOOK_URL is set; with `--queue generations` for
    generate_replies, which needs one when REPLY_GENERATOR_URL is set."""
    # rq logs every job at INFO; our own flush_group lines say what matters.
    level = "DEBUG" if current_app.config["LOG_LEVEL"] == "DEBUG" else "WARNING"
    bound_waits_of_serving_process(current_app)
    freeze_startup_objects()
    if role != REPLIES:
        # Deliveries and generations have seconds to spare, a reply's timing has not: where
        # they share CPUs with a reply worker, the kernel serves the reply worker first.
        os.nice(OUTBOUND_NICENESS)
    run_worker(name, burst=burst, logging_level=level, role=role)


@click.command("scheduler")
@click.option("--burst", is_flag=True, help="Move due jobs to the queue once, then exit.")
def scheduler_command(burst):
    """Run rq-scheduler: moves due flush_group jobs to the queue and keeps the periodic ones
    (expire_held, reconcile_groups) scheduled; it waits out Redis outages."""
    scheduler = get_scheduler()
    freeze_startup_objects()
    scheduler.run(burst=burst)


held_cli = AppGroup("held", help="Messages that arrived before their conversation.")


@held_cli.command("list")
@click.option("--expired", "status", flag_value=EXPIRED, help="Only expired (dropped) ones.")
@click.option("--waiting", "status", flag_value=HELD, help="Only ones still waiting.")
@click.option("--limit", default=100, show_default=True)
def held_list(status, limit):
    """List held and expired messages as JSON lines, newest first."""
    for row in list_held(status=status, limit=limit):
        click.echo(json.dumps({k: str(v) if v is not None else None for k, v in row.items()}))


@click.command("prune_held")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Days since the message expired.",
)
def prune_held(days):
    """Delete records of expired held messages (redeliveries of those ids are then new)."""
    deleted = holds.prune_held(seconds_us(days * 86400))
    click.echo(f"deleted {deleted} expired hold record(s)")


@click.command("reconcile_groups")
def reconcile_groups():
    """Re-arm overdue groups from the database now (after a Redis outage, say)."""
    ids = replies.reconcile_groups()
    click.echo(f"re-armed {len(ids)} conversation(s)")


@click.command("expire_held")
def expire_held():
    """Join or expire held messages whose hold window has passed, now."""
    dropped = holds.expire_held()
    click.echo(f"expired {dropped} held message(s)")


@click.command("deliver_replies")
def deliver_replies():
    """Send the due replies to REPLY_WEBHOOK_URL now (one pass) and print the outcomes."""
    if not deliveries.delivery_on():
        raise click.ClickException("delivery is off: REPLY_WEBHOOK_URL is not set")
    totals = deliveries.deliver_replies()
    click.echo(", ".join(f"{outcome} {count}" for outcome, count in totals.items()))


deliveries_cli = AppGroup("deliveries", help="Deliveries of the replies to REPLY_WEBHOOK_URL.")


def _when(moment):
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


@deliveries_cli.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries in this state.")
@click.option("--conversation", type=click.UUID, help="Only this conversation's replies.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def deliveries_list(status, conversation, limit):
    """List deliveries as a table, newest reply first."""
    rows, _ = list_deliveries(status=status, conversation_id=conversation, limit=limit)
    click.echo(
        f"{'REPLY ID':36}  {'CONVERSATION':36}  {'STATUS':9}  {'ATTEMPTS':>8}  "
        f"{'NEXT ATTEMPT':25}  LAST ERROR"
    )
    for row in rows:
        click.echo(
            f"{row['reply_id']!s:36}  {row['conversation_id']!s:36}  {row['status']:9}  "
            f"{row['attempts']:>8}  {_when(row['next_attempt_at']):25}  {row['last_error'] or '-'}"
        )


@deliveries_cli.command("retry")
@click.argument("reply_ids", nargs=-1, type=click.UUID)
@click.option("--all-dead", is_flag=True, help="Every dead delivery.")
def deliveries_retry(reply_ids, all_dead):
    """Send dead replies again (by reply id, or --all-dead): pending at once, new retry window.

    Exits 1 when some of the given ids were not dead deliveries (unknown, pending or
    delivered); those are left as they are.
    """
    if bool(reply_ids) == all_dead:
        raise click.UsageError("Give reply ids or --all-dead (one of them).")
    # Named before the retry, which reports a count only: an operator wants to know which.
    not_dead = [
        str(reply_id)
        for reply_id in dict.fromkeys(reply_ids)
        if (found := get_delivery(reply_id)) is None or found["status"] != DEAD
    ]
    retried = deliveries.retry_deliveries(reply_ids=list(reply_ids) or None, all_dead=all_dead)
    click.echo(f"retried {retried} dead {'delivery' if retried == 1 else 'deliveries'}")
    if not_dead:
        click.echo(
            f"not dead deliveries, left as they are: {', '.join(not_dead)} (see `deliveries list`)",
            err=True,
        )
        raise SystemExit(1)


@click.command("generate_replies")
def generate_replies():
    """Ask REPLY_GENERATOR_URL for the due groups' replies now (one pass) and print the outcomes."""
    if not generations.generator_on():
        raise click.ClickException("the generator is off: REPLY_GENERATOR_URL is not set")
    totals = generations.generate_replies()
    click.echo(", ".join(f"{outcome} {count}" for outcome, count in totals.items()))


generations_cli = AppGroup(
    "generations", help="Closed groups and their replies from REPLY_GENERATOR_URL."
)


@generations_cli.command("list")
@click.option("--status", type=click.Choice(generation.STATUSES), help="Only groups in this state.")
@click.option("--conversation", type=click.UUID, help="Only this conversation's groups.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def generations_list(status, conversation, limit):
    """List closed groups as a table, newest first."""
    rows, _ = list_generations(status=status, conversation_id=conversation, limit=limit)
    click.echo(
        f"{'REPLY ID':36}  {'CONVERSATION':36}  {'STATUS':7}  {'SOURCE':9}  {'ATTEMPTS':>8}  "
        "LAST ERROR"
    )
    for row in rows:
        click.echo(
            f"{row['reply_id']!s:36}  {row['conversation_id']!s:36}  {row['status']:7}  "
            f"{row['source'] or '-':9}  {row['attempts']:>8}  {row['last_error'] or '-'}"
        )


@generations_cli.command("retry")
@click.argument("reply_ids", nargs=-1, type=click.UUID)
@click.option("--all-failed", is_flag=True, help="Every failed group.")
def generations_retry(reply_ids, all_failed):
    """Ask the generator again for failed groups (by reply id, or --all-failed).

    Exits 1 when some of the given ids were not failed groups; those are left as they are.
    """
    if bool(reply_ids) == all_failed:
        raise click.UsageError("Give reply ids or --all-failed (one of them).")
    not_failed = [
        str(reply_id)
        for reply_id in dict.fromkeys(reply_ids)
        if (found := get_generation(reply_id)) is None or found["status"] != generation.FAILED
    ]
    retried = generations.retry_generations(
        reply_ids=list(reply_ids) or None, all_failed=all_failed
    )
    click.echo(f"retried {retried} failed group{'' if retried == 1 else 's'}")
    if not_failed:
        click.echo(
            f"not failed groups, left as they are: {', '.join(not_failed)} "
            "(see `generations list`)",
            err=True,
        )
        raise SystemExit(1)


def init_app(app):
    app.cli.add_command(worker_command)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(held_cli)
    app.cli.add_command(deliveries_cli)
    app.cli.add_command(generations_cli)
    for command in (prune_held, reconcile_groups, expire_held, deliver_replies, generate_replies):
        app.cli.add_command(command)
