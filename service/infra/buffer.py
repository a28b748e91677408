"""The per-conversation reply buffer in Redis: a sorted set of message ids by arrival time.

It takes its Redis client as an argument and imports no Flask (the app's buffer is
`service.pipeline.groups.reply_buffer()`). Each decision is one Lua script, so concurrent
web processes and workers never see a half-made change. A conversation's keys share the hash
tag `{<id>}`; an ADD that also schedules its flush touches the scheduler's sorted set too (RQ
and rq-scheduler use keys of many slots anyway: the service runs on one Redis server, with
Sentinel for failover, not on Redis Cluster). The buffer is only the fast
path: the database stays the record of which messages were answered, and `reconcile_groups`
rebuilds the buffer from it.

Scores are arrival times in integer microseconds (see `service.domain.clock`). The `armed`
key holds the due time of the flush pending for the conversation, so there is one per open
group, not one per message; a flush that finds its group still active re-arms for the
group's new end.
"""

from dataclasses import dataclass

# Arrivals per ADD call (two Lua values each).
ADD_CHUNK = 1000
# Both keys expire `key_ttl_ms` after their last use, so a worker that dies between answering a
# group and clearing its buffer leaves nothing behind for long (the database still knows).
# The `armed` key holds the due time (microseconds) of the conversation's pending flush.

# KEYS: buffer, armed[, schedule]. ARGV: ttl_ms, channel, notice, now, quiet, grace, entry,
# score1, member1, ...
# Publishes `notice` on `channel` when given (saves the caller a round trip). Arms a flush
# for newest + quiet unless one is pending; a pending flush more than `grace` past its due
# time is taken as lost (its worker died, its transaction failed) and armed again, so a
# failed flush never leaves a busy conversation waiting for reconciliation. With a schedule
# key, an armed flush is also put in the schedule there: `entry` at its due time in seconds
# (the scheduler's sorted set, service.infra.queueing), saving the caller that round trip too.
# Returns {armed (1 when the flush was armed), newest_score, scheduled (1 when it was put in
# the schedule; otherwise the caller schedules an armed flush)}.
ADD = """
local ttl = table.remove(ARGV, 1)
local channel = table.remove(ARGV, 1)
local notice = table.remove(ARGV, 1)
local now = tonumber(table.remove(ARGV, 1))
local quiet = tonumber(table.remove(ARGV, 1))
local grace = tonumber(table.remove(ARGV, 1))
local entry = table.remove(ARGV, 1)
if notice ~= '' then redis.call('PUBLISH', channel, notice) end
redis.call('ZADD', KEYS[1], 'NX', unpack(ARGV))
redis.call('PEXPIRE', KEYS[1], ttl)
local newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
local due = tonumber(redis.call('GET', KEYS[2]))
local armed, scheduled = 0, 0
if due == nil or due + grace < now then
  redis.call('SET', KEYS[2], string.format('%.0f', newest + quiet), 'PX', ttl)
  armed = 1
  if KEYS[3] then
    redis.call('ZADD', KEYS[3], string.format('%.6f', (newest + quiet) / 1000000), entry)
    scheduled = 1
  end
end
return {armed, string.format('%.0f', newest), scheduled}
"""

# KEYS: buffer, armed. ARGV: member. Undoes an ADD whose database write failed.
WITHDRAW = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: buffer, armed. ARGV: ttl_ms, now, quiet.
# The oldest group ends at the first gap of `quiet` or more between arrivals; when no gap is
# found, it ends with the newest message and is complete only once `quiet` has passed since.
# So a flush that runs late never merges two groups, and one that runs early re-arms.
# Returns {'empty'}, {'wait', due} (the flush is armed for `due`) or {'ready', newest of the
# group}.
DECIDE = """
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #rows == 0 then
  redis.call('DEL', KEYS[2])
  return {'empty'}
end
local quiet = tonumber(ARGV[3])
local last = tonumber(rows[2])
for i = 4, #rows, 2 do
  local score = tonumber(rows[i])
  if score - last >= quiet then return {'ready', string.format('%.0f', last)} end
  last = score
end
if tonumber(ARGV[2]) < last + quiet then
  redis.call('SET', KEYS[2], string.format('%.0f', last + quiet), 'PX', ARGV[1])
  return {'wait', string.format('%.0f', last + quiet)}
end
return {'ready', string.format('%.0f', last)}
"""

# KEYS: buffer, armed. ARGV: ttl_ms, newest answered score, now.
# Drops the answered groups; returns the newest remaining score (a flush is armed for now,
# which the caller schedules), or nil when none is left.
ACK = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return false
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return newest[2]
"""


def keys(conversation_id):
    """The buffer's keys for one conversation, under one hash tag."""
    tag = f"conv:{{{conversation_id}}}"
    return [f"{tag}:buffer", f"{tag}:armed"]


@dataclass(frozen=True)
class Added:
    armed: bool  # this add armed the conversation's flush
    newest_us: int
    scheduled: bool = False  # and put it in the schedule itself

    @property
    def must_schedule(self):
        """The flush was armed here and is the caller's to schedule."""
        return self.armed and not self.scheduled


@dataclass(frozen=True)
class Decision:
    action: str  # "empty", "wait" or "ready"
    at_us: int | None = None  # due time when waiting; the group's newest arrival when ready


class ReplyBuffer:
    """Grouping state of open conversations, over a Redis client.

    `quiet_us` is the debounce window; a pending flush more than `grace_us` past its due time
    counts as lost; keys expire `key_ttl_ms` after their last use.
    """

    def __init__(self, client, quiet_us, grace_us, key_ttl_ms=60_000):
        self.client = client
        self.quiet_us = int(quiet_us)
        self.grace_us = int(grace_us)
        self.key_ttl_ms = int(key_ttl_ms)
        self._add = client.register_script(ADD)
        self._withdraw = client.register_script(WITHDRAW)
        self._decide = client.register_script(DECIDE)
        self._ack = client.register_script(ACK)

    def add(self, conversation_id, arrivals, now_us, notice=None, schedule=None):
        """Add (message_id, arrival_us) pairs; arm a flush unless one is pending on time.

        `notice`, a (channel, text) pair, is published in the same round trip.
        `schedule`, a (sorted set key, entry) pair, puts an armed flush in that schedule in
        the same round trip too, at its due time in seconds; the returned Added then does not
        ask the caller to schedule it. Only for a single add (at most ADD_CHUNK arrivals),
        whose due time is the group's.
        """
        if not arrivals:
            raise ValueError("nothing to add")
        if schedule is not None and len(arrivals) > ADD_CHUNK:
            raise ValueError(f"a scheduling add takes at most {ADD_CHUNK} arrivals")
        channel, text = notice or ("", "")
        key_list = keys(conversation_id)
        entry = ""
        if schedule is not None:
            schedule_key, entry = schedule
            key_list = [*key_list, schedule_key]
        armed = scheduled = False
        # Lua's unpack() takes a few thousand values at most: a long backlog goes in chunks.
        for start in range(0, len(arrivals), ADD_CHUNK):
            argv = [self.key_ttl_ms, channel, text, int(now_us), self.quiet_us, self.grace_us]
            argv.append(entry)
            for message_id, arrival_us in arrivals[start : start + ADD_CHUNK]:
                argv += [int(arrival_us), str(message_id)]
            chunk_armed, newest, chunk_scheduled = self._add(keys=key_list, args=argv)
            armed = armed or bool(chunk_armed)
            scheduled = scheduled or bool(chunk_scheduled)
            channel, text = "", ""
        return Added(armed, int(newest), scheduled)

    def withdraw(self, conversation_id, message_id):
        """Take back a message whose database write did not commit."""
        self._withdraw(keys=keys(conversation_id), args=[str(message_id)])

    def pipeline(self):
        """A pipeline (not a transaction) on the buffer's client, for calls queued with `pipe`."""
        return self.client.pipeline(transaction=False)

    def decide(self, conversation_id, now_us, pipe=None):
        """Whether the conversation's oldest buffered group is quiet enough to answer now: a
        Decision.

        When it is not, a flush is armed for its due time, which the caller schedules. With
        `pipe` (from `pipeline()`) the call is only queued, returns None, and `decision(answer)`
        reads its answer among the pipeline's results.
        """
        args = [self.key_ttl_ms, int(now_us), self.quiet_us]
        if pipe is not None:
            self._decide(keys=keys(conversation_id), args=args, client=pipe)
            return None
        return self.decision(self._decide(keys=keys(conversation_id), args=args))

    def decide_many(self, conversation_ids, now_us):
        """`decide` for several conversations at one clock reading, in one round trip.

        Returns {conversation_id: Decision}; raises the RedisError of the round trip.
        """
        with self.pipeline() as pipe:
            for conversation_id in conversation_ids:
                self.decide(conversation_id, now_us, pipe)
            answers = pipe.execute()
        return {c: self.decision(a) for c, a in zip(conversation_ids, answers, strict=True)}

    @staticmethod
    def decision(answer):
        """The Decision of a DECIDE call's raw answer."""
        action = answer[0].decode()
        at = int(answer[1]) if len(answer) > 1 else None
        return Decision(action, at)

    def ack(self, conversation_id, newest_us, now_us, pipe=None):
        """Forget arrivals up to `newest_us` (answered); return the newest arrival still
        buffered, if any, in which case a flush is armed for `now_us` (the caller schedules it).

        With `pipe` (from `pipeline()`) the call is only queued, returns None, and
        `remaining(answer)` reads its answer among the pipeline's results.
        """
        args = [self.key_ttl_ms, int(newest_us), int(now_us)]
        if pipe is not None:
            self._ack(keys=keys(conversation_id), args=args, client=pipe)
            return None
        return self.remaining(self._ack(keys=keys(conversation_id), args=args))

    @staticmethod
    def remaining(answer):
        """The newest arrival still buffered (us), or None, from an ACK call's raw answer."""
        return None if answer is None else int(float(answer))

    def discard(self, conversation_id):
        """Drop a closed conversation's buffer."""
        self.client.delete(*keys(conversation_id))

    def pending(self, conversation_id):
        """The buffered (message_id, arrival_us) pairs, oldest first."""
        rows = self.client.zrange(keys(conversation_id)[0], 0, -1, withscores=True)
        return [(member.decode(), int(score)) for member, score in rows]
