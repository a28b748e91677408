"""The fault suite's checker: what the database says was answered, against the contract.

The groups a conversation should have are computed from the recorded arrival times of its
INBOUND messages alone (`split_groups`: a new group at every gap of 5 s or more); the
replies written must be exactly those groups, each once, in order, never before its quiet
window and within the lateness bound. `evaluate` is pure (rows in, a Report out) and has
its own unit tests; `load` and `wait_answered` read the private database.
"""

import threading
import time
from dataclasses import dataclass, field

import psycopg2

from service.domain.clock import to_us

HEADER = "Mensagens recebidas:"
US = 1_000_000
QUIET = 5 * US
ON_TIME = 1.5  # seconds of lateness allowed for a group due outside a fault
AFTER_FAULT = 10.0  # seconds after a fault's end by which its groups are answered
SLOW_REQUEST = 10.0  # seconds: no HTTP answer may take longer


def split_groups(arrivals, quiet=QUIET):
    """The groups of (message_id, arrival) pairs: ids in arrival order, split at every gap of
    `quiet` or more (same unit as the arrivals)."""
    groups, last = [], None
    for message_id, at in sorted(arrivals, key=lambda pair: (pair[1], pair[0])):
        if last is None or at - last >= quiet:
            groups.append([])
        groups[-1].append(message_id)
        last = at
    return groups


def listed_ids(content):
    """The message ids a reply's content lists, or None when it is not a reply's content."""
    header, *ids = content.split("\n")
    if header != HEADER or not ids or ids[-1] != "":
        return None
    return ids[:-1]


@dataclass(frozen=True)
class Window:
    """A fault, from its start to the moment it was repaired (wall clock seconds)."""

    name: str
    start: float
    end: float


@dataclass
class Report:
    accepted: int = 0
    stored: int = 0
    answered_once: int = 0
    answered_twice: int = 0
    never: int = 0  # accepted (or stored) and in no reply
    lost: int = 0  # accepted and not stored at all
    groups: int = 0
    replies: int = 0
    merged: int = 0  # replies that answer more than one group
    split: int = 0  # groups answered by more than one reply
    wrong_content: int = 0  # content does not list exactly its linked messages in order
    early: int = 0  # replies before their group's quiet window ended
    out_of_order: int = 0  # conversations whose replies are not in group order
    late: int = 0  # groups due outside a fault answered more than ON_TIME late
    late_after_fault: int = 0  # groups of a fault answered later than AFTER_FAULT past its end
    max_lateness: float = 0.0
    max_lateness_outside: float = 0.0
    requests: int = 0
    status_5xx: int = 0
    no_answer: int = 0  # connection errors and client timeouts
    slow: int = 0  # HTTP answers slower than SLOW_REQUEST
    slowest: float = 0.0
    exited: list = field(default_factory=list)  # processes that died on their own
    notes: list = field(default_factory=list)

    def problems(self):
        found = [
            f"{n} {what}"
            for n, what in (
                (self.lost, "accepted messages not stored"),
                (self.never, "messages never answered"),
                (self.answered_twice, "messages answered twice"),
                (self.merged, "replies merging groups"),
                (self.split, "groups split over replies"),
                (self.wrong_content, "replies with the wrong content"),
                (self.early, "replies before their quiet window"),
                (self.out_of_order, "conversations with replies out of order"),
                (self.late, f"groups more than {ON_TIME}s late outside a fault"),
                (self.late_after_fault, f"groups answered over {AFTER_FAULT}s after the fault"),
                (self.slow, f"HTTP answers slower than {SLOW_REQUEST}s"),
            )
            if n
        ]
        if self.exited:
            found.append(f"processes exited: {', '.join(self.exited)}")
        return found

    def summary(self):
        return (
            f"accepted {self.accepted}, once {self.answered_once}, twice {self.answered_twice}, "
            f"never {self.never}, lost {self.lost}, groups {self.groups}, replies {self.replies}, "
            f"merged {self.merged}, split {self.split}, early {self.early}, "
            f"max lateness {self.max_lateness:.2f}s (outside faults "
            f"{self.max_lateness_outside:.2f}s), late {self.late}+{self.late_after_fault}, "
            f"requests {self.requests}, 5xx {self.status_5xx}, no answer {self.no_answer}, "
            f"slowest {self.slowest:.2f}s"
        )


def _fault_bound(windows, last_us, due_us):
    """The latest moment (us) the group may be answered if a fault touched it, else None.

    A fault touches a group whose last message came before the fault was repaired and which
    was due after the fault started, or at most ON_TIME before: such a group was not late yet
    when the fault struck (its flush may have been on its way). It must be answered within
    AFTER_FAULT of the repair (or of its due time).
    """
    ends = [
        max(round(w.end * US), due_us)
        for w in windows
        if due_us >= round((w.start - ON_TIME) * US) and last_us < round(w.end * US)
    ]
    return max(ends) + round(AFTER_FAULT * US) if ends else None


def evaluate(inbound, replies, accepted, windows=(), attempts=(), seen=None, seen_slack=0.25):
    """Check the rows of one run.

    inbound: (conversation_id, message_id, received_us, reply_id) of every INBOUND message;
    replies: (conversation_id, reply_id, received_us, content) of every OUTBOUND one;
    accepted: the message ids the sender saw accepted; windows: the faults (Window);
    attempts: the HTTP attempts (objects with .status and .seconds); seen: {reply_id: wall
    clock seconds when the reply was first seen committed}, so a reply stamped early but
    committed late counts as late (less `seen_slack`, the polling interval).
    """
    seen = seen or {}
    report = Report(accepted=len(accepted), stored=len(inbound), replies=len(replies))
    stored = {m: (c, at, r) for c, m, at, r in inbound}
    report.lost = sum(1 for m in accepted if m not in stored)

    reply_at = {}
    listing = {}  # message id -> replies whose content lists it
    for _, r, at, content in replies:
        moment = at
        if r in seen:
            moment = max(at, round((seen[r] - seen_slack) * US))
        reply_at[r] = (at, moment)
        for m in listed_ids(content) or []:
            listing.setdefault(m, []).append(r)
    linked = {}  # reply id -> its messages, in arrival order
    for m, (_, _at, r) in sorted(stored.items(), key=lambda kv: (kv[1][1], kv[0])):
        if r is not None:
            linked.setdefault(r, []).append(m)
    for _, r, _, content in replies:
        if listed_ids(content) != linked.get(r, []):
            report.wrong_content += 1

    for m in set(stored) | set(accepted):
        answers = set(listing.get(m, []))
        if m in stored and stored[m][2] is not None:
            answers.add(stored[m][2])
        count = len(answers)
        if count == 0:
            report.never += 1
        elif count == 1:
            report.answered_once += 1
        else:
            report.answered_twice += 1

    by_conversation = {}
    for m, (c, at, _) in stored.items():
        by_conversation.setdefault(c, []).append((m, at))
    group_of = {}
    for c, arrivals in by_conversation.items():
        at_of = dict(arrivals)
        for group in split_groups(arrivals):
            report.groups += 1
            for m in group:
                group_of[m] = (c, report.groups)
            answers = {stored[m][2] for m in group} - {None}
            if len(answers) > 1:
                report.split += 1
            if not answers:
                continue
            last = at_of[group[-1]]
            due = last + QUIET
            if any(reply_at[r][0] < due for r in answers if r in reply_at):
                report.early += 1
            moment = max(reply_at[r][1] for r in answers if r in reply_at)
            lateness = (moment - due) / US
            report.max_lateness = max(report.max_lateness, lateness)
            bound = _fault_bound(windows, last, due)
            if bound is None:
                report.max_lateness_outside = max(report.max_lateness_outside, lateness)
                if lateness > ON_TIME:
                    report.late += 1
            elif moment > bound:
                report.late_after_fault += 1
    for messages in linked.values():
        if len({group_of[m] for m in messages}) > 1:
            report.merged += 1
    order = {}
    for c, r, _, _ in sorted(replies, key=lambda row: (row[2], row[1])):
        if linked.get(r):
            order.setdefault(c, []).append(min(stored[m][1] for m in linked[r]))
    report.out_of_order = sum(1 for firsts in order.values() if firsts != sorted(firsts))

    for attempt in attempts:
        report.requests += 1
        if attempt.status is None:
            report.no_answer += 1
        elif attempt.status >= 500:
            report.status_5xx += 1
        report.slowest = max(report.slowest, attempt.seconds)
        if attempt.seconds > SLOW_REQUEST:
            report.slow += 1
    return report


# --- the database ---------------------------------------------------------------------


def load(dsn, conversation_ids):
    """(inbound, replies) rows of these conversations, as `evaluate` takes them."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT conversation_id::text, id::text, type, received_at, reply_id::text, content"
            " FROM messages WHERE conversation_id = ANY(%s::uuid[])",
            (list(conversation_ids),),
        )
        rows = cur.fetchall()
    conn.close()
    inbound = [(c, m, to_us(at), r) for c, m, t, at, r, _ in rows if t == "INBOUND"]
    replies = [(c, m, to_us(at), content) for c, m, t, at, _, content in rows if t == "OUTBOUND"]
    return inbound, replies


def settled(dsn, conversation_ids, accepted):
    """Every accepted message is stored and no INBOUND message waits for its reply."""
    with psycopg2.connect(dsn, connect_timeout=2) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE reply_id IS NULL),"
            " count(*) FILTER (WHERE id = ANY(%s::uuid[]))"
            " FROM messages WHERE conversation_id = ANY(%s::uuid[]) AND type = 'INBOUND'",
            (list(accepted), list(conversation_ids)),
        )
        waiting, found = cur.fetchone()
    conn.close()
    return waiting == 0 and found == len(accepted)


def wait_answered(dsn, conversation_ids, accepted, deadline):
    """Poll until `settled` or the deadline (wall clock); returns whether it settled."""
    while True:
        try:
            if settled(dsn, conversation_ids, accepted):
                return True
        except psycopg2.Error:
            pass  # the database is still coming back
        if time.time() > deadline:
            return False
        time.sleep(0.2)


class ReplyWatcher:
    """Notes when each reply of the given conversations is first seen committed."""

    def __init__(self, dsn, conversation_ids, interval=0.2):
        self.dsn = dsn
        self.conversation_ids = conversation_ids  # a list the run may append to
        self.interval = interval
        self.seen = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self):
        conn = None
        while not self._stop.wait(self.interval):
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=1)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT id::text FROM messages WHERE type = 'OUTBOUND'"
                        " AND conversation_id = ANY(%s::uuid[])",
                        (list(self.conversation_ids),),
                    )
                    now = time.time()
                    for (reply,) in cur.fetchall():
                        self.seen.setdefault(reply, now)
            except psycopg2.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
