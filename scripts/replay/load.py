"""Load mode: many conversations, message groups started at a fixed rate, then an account of
the replies (each group answered exactly once, and how late) and of the ingest requests.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial

from .client import ClientPool, Response
from .events import Json, Reply, new_conversation_event, new_message_event, parse_iso, replies_of

GROUP_QUIET_SECONDS = 5.0  # the service replies this long after the last message of a group


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Percentile with linear interpolation between closest ranks (numpy's default).

    Returns ``None`` for an empty sequence.
    """
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(
    values: Sequence[float], pcts: Iterable[float] = (50, 95, 99), scale: float = 1.0
) -> dict[str, float | int | None]:
    """``{"count", "min", "p50", ..., "max"}`` of ``values`` multiplied by ``scale``, rounded."""
    summary: dict[str, float | int | None] = {"count": len(values)}
    summary["min"] = round(min(values) * scale, 3) + 0.0 if values else None
    for pct in pcts:
        value = percentile(values, pct)
        summary[f"p{pct:g}"] = None if value is None else round(value * scale, 3) + 0.0
    summary["max"] = round(max(values) * scale, 3) + 0.0 if values else None
    return summary


@dataclass
class LoadConfig:
    """The ``load`` options; times in seconds."""

    rate: float = 1.0  # groups started per second
    conversations: int = 10
    duration: float = 30.0  # of starting groups
    messages_per_group: int = 3
    gap: float = 1.0  # between two messages of a group
    concurrency: int = 16  # worker threads, each with its own connection
    margin: float = 1.0  # quiet beyond the 5 s window before a conversation's next group
    reply_wait: float = 15.0  # beyond last send + 5 s, before unanswered groups count as such
    poll_interval: float = 1.0  # between two reads of the conversations

    def validate(self) -> list[str]:
        """One message per invalid option, naming its flag (empty list: valid)."""
        errors = []
        if self.rate <= 0:
            errors.append("--rate must be > 0")
        if self.conversations < 1:
            errors.append("--conversations must be >= 1")
        if self.duration <= 0:
            errors.append("--duration must be > 0")
        if self.messages_per_group < 1:
            errors.append("--messages-per-group must be >= 1")
        if not 0 <= self.gap < GROUP_QUIET_SECONDS:
            errors.append(f"--gap must be within [0, {GROUP_QUIET_SECONDS:g}) s")
        if self.concurrency < 1:
            errors.append("--concurrency must be >= 1")
        if self.margin <= 0:
            errors.append("--margin must be > 0")
        return errors

    @property
    def sustainable_rate(self) -> float:
        """Highest group rate (per s) the conversations carry without overlapping groups."""
        cycle = (self.messages_per_group - 1) * self.gap + GROUP_QUIET_SECONDS + self.margin
        return self.conversations / cycle


@dataclass
class Group:
    """One message group on one conversation and what its sends got back."""

    index: int
    conversation_id: str
    message_ids: list[str]
    statuses: list[int | None] = field(default_factory=list)  # per message, None until sent
    completed: int = 0
    last_sent: float | None = None  # wall-clock epoch when the last message's send completed
    # The service's own end of the quiet window (the latest `reply_due_at` it answered), so
    # lateness is measured on the server's clock alone.
    reply_due: float | None = None

    @property
    def accepted_ids(self) -> list[str]:
        """Ids of the messages the service took (2xx), in send order: the ones a reply owes."""
        return [
            mid
            for mid, status in zip(self.message_ids, self.statuses, strict=True)
            if status is not None and 200 <= status < 300
        ]


@dataclass
class LoadAnalysis:
    """The replies of a run matched to its groups."""

    answers: dict[int, int]  # group index -> number of replies listing any of its messages
    mismatched: int  # groups whose reply lists a different id set
    lateness: list[float]  # seconds, one per answered group
    replies_seen: int
    foreign_ids: int  # ids in replies not sent by this run

    def count(self, predicate: Callable[[int], bool]) -> int:
        """How many groups have a number of answers for which ``predicate`` holds."""
        return sum(1 for n in self.answers.values() if predicate(n))


def analyze_groups(groups: Sequence[Group], conversations: dict[str, Json]) -> LoadAnalysis:
    """Match the service's replies to the groups that were sent (only groups with accepted ids).

    ``conversations`` maps conversation id to its ``GET /conversations/{id}/`` body. Lateness is
    the reply's ``timestamp`` minus the group's ``reply_due`` (else last send + 5 s), in s.
    """
    expected = [g for g in groups if g.accepted_ids]
    owner = {mid: g for g in expected for mid in g.accepted_ids}
    answers = {g.index: 0 for g in expected}
    reply_for_last: dict[int, Reply] = {}
    mismatched: set[int] = set()
    replies_seen = foreign = 0
    for conv_id in {g.conversation_id for g in expected}:
        for reply in replies_of(conversations.get(conv_id) or {}):
            replies_seen += 1
            hit = {owner[mid].index: owner[mid] for mid in reply.ids if mid in owner}
            foreign += sum(1 for mid in reply.ids if mid not in owner)
            for group in hit.values():
                answers[group.index] += 1
                if set(reply.ids) != set(group.accepted_ids):
                    mismatched.add(group.index)
                if group.accepted_ids[-1] in reply.ids or group.index not in reply_for_last:
                    reply_for_last[group.index] = reply
    lateness = []
    by_index = {g.index: g for g in expected}
    for index, reply in reply_for_last.items():
        group = by_index[index]
        if reply.timestamp and group.reply_due is not None:
            lateness.append(parse_iso(reply.timestamp) - group.reply_due)
        elif reply.timestamp and group.last_sent is not None:
            lateness.append(parse_iso(reply.timestamp) - group.last_sent - GROUP_QUIET_SECONDS)
    return LoadAnalysis(answers, len(mismatched), lateness, replies_seen, foreign)


class RequestStats:
    """Thread-safe ingest request bookkeeping; times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.first_start: float | None = None
        self.last_end: float | None = None

    def record(self, response: Response, started: float, ended: float) -> None:
        """Count one request: its status, its latency (``elapsed``, s) and its time span."""
        with self._lock:
            self.latencies.append(response.elapsed)
            self.statuses[response.status] += 1
            self.first_start = (
                started if self.first_start is None else min(self.first_start, started)
            )
            self.last_end = ended if self.last_end is None else max(self.last_end, ended)

    @property
    def total(self) -> int:
        """Requests recorded."""
        return sum(self.statuses.values())

    @property
    def per_second(self) -> float | None:
        """Requests per second from the first start to the last end (``None``: no span)."""
        if self.first_start is None or self.last_end is None or self.last_end <= self.first_start:
            return None
        return self.total / (self.last_end - self.first_start)


class LoadRunner:
    """Create conversations, start message groups at a fixed rate, then collect the replies."""

    def __init__(
        self,
        pool: ClientPool,
        config: LoadConfig,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.log = log or (lambda _msg: None)
        self.stats = RequestStats()
        self.groups: list[Group] = []
        self.created: list[str] = []
        self.skipped = 0
        self.read_failures = 0  # conversations the last poll for replies could not read
        self._lock = threading.Lock()
        self._idle: list[tuple[float, str]] = []  # (ready at, conversation id), a heap
        self._pending: list[tuple[float, int, Callable[[], None]]] = []  # main thread only
        self._seq = itertools.count()
        self._futures: list[Future] = []

    def run(self) -> dict:
        """Run all phases and return the report, the JSON that ``load --json`` prints.

        ``{"config", "sustainable_rate", "conversations": {"requested", "created"}, "groups":
        {"sent", "skipped", "all_messages_rejected", "answered_once", "unanswered",
        "answered_more_than_once", "mismatched_ids"}, "replies_seen", "foreign_reply_ids",
        "conversation_reads_failed", "reply_lateness_s": summary, "ingest_latency_ms": summary,
        "requests": {"total", "per_second", "by_status"}}`` where a summary is
        :func:`summarize`'s dict.
        """
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="load") as executor:
            self._executor = executor
            self._create_conversations()
            if self.created:
                self._send_groups()
            conversations = self._await_replies()
        self.pool.close()
        return self._report(analyze_groups(self.groups, conversations))

    def _create_conversations(self) -> None:
        ids = [str(uuid.uuid4()) for _ in range(self.config.conversations)]
        responses = list(
            self._executor.map(lambda cid: self._post(new_conversation_event(cid)), ids)
        )
        self.created = [cid for cid, resp in zip(ids, responses, strict=True) if resp.ok]
        now = time.monotonic()
        self._idle = [(now, cid) for cid in self.created]
        heapq.heapify(self._idle)
        self.log(f"created {len(self.created)}/{len(ids)} conversations")

    def _send_groups(self) -> None:
        start = time.monotonic()
        end = start + self.config.duration
        interval = 1.0 / self.config.rate
        next_start = start
        while True:
            now = time.monotonic()
            while now < end and next_start <= now:
                self._start_group(now)
                next_start += interval
            self._dispatch_due(now)
            if now >= end and not self._pending:
                break
            wake = [self._pending[0][0]] if self._pending else []
            if now < end:
                wake += [min(next_start, end)]
            time.sleep(min(max(min(wake) - now, 0.001), 0.05))
        wait(self._futures)
        self.log(f"sent {len(self.groups)} groups ({self.skipped} skipped: no idle conversation)")

    def _await_replies(self) -> dict[str, Json]:
        expected = [g for g in self.groups if g.accepted_ids and g.last_sent is not None]
        if not expected:
            return {}
        last = max(g.last_sent for g in expected if g.last_sent is not None)
        settle_at = last + GROUP_QUIET_SECONDS + self.config.margin
        deadline_at = last + GROUP_QUIET_SECONDS + self.config.reply_wait
        conv_ids = sorted({g.conversation_id for g in expected})
        # A conversation whose last read failed keeps its previous one: replies only ever
        # accumulate, and a failed read must not count its groups as unanswered.
        conversations: dict[str, Json] = {}
        # No read before the last groups' replies are due: a read of every conversation costs
        # the service seconds of CPU, which would slow what is being measured.
        time.sleep(max(settle_at - time.time(), 0))
        while True:
            fetched = self._fetch_conversations(conv_ids)
            self.read_failures = len(conv_ids) - len(fetched)
            conversations.update(fetched)
            analysis = analyze_groups(self.groups, conversations)
            now = time.time()
            if now >= deadline_at or (analysis.count(lambda n: n == 0) == 0 and now >= settle_at):
                return conversations
            time.sleep(min(self.config.poll_interval, max(deadline_at - now, 0.01)))

    def _post(self, event: Json) -> Response:
        started = time.monotonic()
        response = self.pool.get().post_event(event)
        self.stats.record(response, started, time.monotonic())
        return response

    def _start_group(self, now: float) -> None:
        with self._lock:
            if not self._idle or self._idle[0][0] > now:
                self.skipped += 1
                return
            _, conv_id = heapq.heappop(self._idle)
        size = self.config.messages_per_group
        group = Group(
            len(self.groups), conv_id, [str(uuid.uuid4()) for _ in range(size)], [None] * size
        )
        self.groups.append(group)
        for k in range(size):
            due = now + k * self.config.gap
            heapq.heappush(self._pending, (due, next(self._seq), partial(self._send, group, k)))

    def _dispatch_due(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, _, task = heapq.heappop(self._pending)
            self._futures.append(self._executor.submit(task))

    def _send(self, group: Group, k: int) -> None:
        content = f"Mensagem de carga {group.index}.{k + 1}"
        response = self._post(
            new_message_event(group.conversation_id, group.message_ids[k], content)
        )
        done = time.time()
        with self._lock:
            group.statuses[k] = response.status
            group.completed += 1
            group.last_sent = done if group.last_sent is None else max(group.last_sent, done)
            due_at = response.body.get("reply_due_at") if isinstance(response.body, dict) else None
            if due_at:
                due = parse_iso(due_at)
                group.reply_due = due if group.reply_due is None else max(group.reply_due, due)
            if group.completed == len(group.message_ids):
                ready_at = time.monotonic() + GROUP_QUIET_SECONDS + self.config.margin
                heapq.heappush(self._idle, (ready_at, group.conversation_id))

    def _fetch_conversations(self, conv_ids: list[str]) -> dict[str, Json]:
        responses = self._executor.map(lambda cid: self.pool.get().get_conversation(cid), conv_ids)
        return {
            cid: resp.body
            for cid, resp in zip(conv_ids, responses, strict=True)
            if resp.status == 200 and isinstance(resp.body, dict)
        }

    def _report(self, analysis: LoadAnalysis) -> dict:
        failed = sum(1 for g in self.groups if not g.accepted_ids)
        return {
            "config": vars(self.config),
            "sustainable_rate": round(self.config.sustainable_rate, 3),
            "conversations": {"requested": self.config.conversations, "created": len(self.created)},
            "groups": {
                "sent": len(self.groups),
                "skipped": self.skipped,
                "all_messages_rejected": failed,
                "answered_once": analysis.count(lambda n: n == 1),
                "unanswered": analysis.count(lambda n: n == 0),
                "answered_more_than_once": analysis.count(lambda n: n > 1),
                "mismatched_ids": analysis.mismatched,
            },
            "replies_seen": analysis.replies_seen,
            "foreign_reply_ids": analysis.foreign_ids,
            "conversation_reads_failed": self.read_failures,
            "reply_lateness_s": summarize(analysis.lateness),
            "ingest_latency_ms": summarize(self.stats.latencies, (50, 99), scale=1000),
            "requests": {
                "total": self.stats.total,
                "per_second": _round(self.stats.per_second),
                "by_status": {str(k): v for k, v in sorted(self.stats.statuses.items())},
            },
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def load_report_ok(report: dict) -> bool:
    """Every group was answered exactly once (the exit status of ``load``)."""
    groups = report["groups"]
    return groups["unanswered"] == 0 and groups["answered_more_than_once"] == 0


def render_load_report(report: dict) -> str:
    """The report of :meth:`LoadRunner.run` as text, ending in ``PASS`` or ``FAIL``."""
    groups, lat, ingest, req = (
        report["groups"],
        report["reply_lateness_s"],
        report["ingest_latency_ms"],
        report["requests"],
    )
    conv = report["conversations"]
    lines = [
        f"conversations: {conv['created']}/{conv['requested']} created",
        f"groups sent: {groups['sent']} (skipped, no idle conversation: {groups['skipped']}; "
        f"all messages rejected: {groups['all_messages_rejected']})",
        f"replies seen: {report['replies_seen']} (foreign ids: {report['foreign_reply_ids']})",
        f"groups answered once: {groups['answered_once']}, 0 times: {groups['unanswered']}, "
        f"more than once: {groups['answered_more_than_once']}, "
        f"with mismatched ids: {groups['mismatched_ids']}",
        f"reply lateness (s): p50={lat['p50']} p95={lat['p95']} p99={lat['p99']} "
        f"max={lat['max']} (n={lat['count']})",
        f"ingest latency (ms): p50={ingest['p50']} p99={ingest['p99']} max={ingest['max']}",
        f"requests: {req['total']} at {req['per_second']}/s, by status {req['by_status']}",
        "PASS" if load_report_ok(report) else "FAIL",
    ]
    if groups["skipped"]:
        lines.insert(
            2,
            f"warning: rate above what {conv['created']} conversations sustain "
            f"(~{report['sustainable_rate']}/s); raise --conversations",
        )
    return "\n".join(lines)
