"""The per-conversation reply buffer in Redis: a sorted set of message ids by arrival time.

It takes its Redis client as an argument and imports no Flask (the app's buffer is
`service.pipeline.groups.reply_buffer()`). Each decision is one Lua script, so concurrent
web processes and workers never see a half-made change. A conversation's keys share the hash
tag `{<id>}`, so every script touches one Redis Cluster slot. The buffer is only the fast
path: the database stays the record of which messages were answered, and `reconcile_groups`
rebuilds the buffer from it.

Scores are arrival times in integer microseconds (see `service.domain.clock`). The `armed`
key holds the schedule entry of the flush pending for the conversation, so there is one per
open group, not one per message; a flush that finds its group still active re-arms for the
group's new end.
"""

from dataclasses import dataclass

# Both keys expire KEY_TTL after their last use, so a worker that dies between answering a
# group and clearing its buffer leaves nothing behind for long (the database still knows).

# KEYS: buffer, armed. ARGV: ttl_ms, channel, notice, job_id, score1, member1, score2, ...
# Publishes `notice` on `channel` when given (saves the caller a round trip). Arms the flush
# with `job_id` unless one is pending already.
# Returns {armed (1 when job_id is now the pending flush), newest_score}.
ADD = """
local ttl = table.remove(ARGV, 1)
local channel = table.remove(ARGV, 1)
local notice = table.remove(ARGV, 1)
local job = table.remove(ARGV, 1)
if notice ~= '' then redis.call('PUBLISH', channel, notice) end
redis.call('ZADD', KEYS[1], 'NX', unpack(ARGV))
redis.call('PEXPIRE', KEYS[1], ttl)
local armed = redis.call('SET', KEYS[2], job, 'NX', 'PX', ttl) and 1 or 0
return {armed, redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]}
"""

# KEYS: buffer, armed. ARGV: member. Undoes an ADD whose database write failed.
WITHDRAW = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: buffer, armed. ARGV: ttl_ms, now, quiet, next_job_id.
# The oldest group ends at the first gap of `quiet` or more between arrivals; when no gap is
# found, it ends with the newest message and is complete only once `quiet` has passed since.
# So a flush that runs late never merges two groups, and one that runs early re-arms.
# Returns {'empty'}, {'wait', due} (the flush stays armed) or {'ready', newest of the group}.
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
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[1])
  return {'wait', string.format('%.0f', last + quiet)}
end
return {'ready', string.format('%.0f', last)}
"""

# KEYS: buffer, armed. ARGV: ttl_ms, newest score of the answered group, next_job_id.
# Drops the answered group; returns the newest remaining score (the flush stays armed for
# the next group), or nil when none is left.
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
    must_schedule: bool  # the caller's job id armed the flush: schedule it
    newest_us: int
    job: str  # the job id the caller passed


@dataclass(frozen=True)
class Decision:
    action: str  # "empty", "wait" or "ready"
    at_us: int | None = None  # due time when waiting; the group's newest arrival when ready


class ReplyBuffer:
    """Grouping state of open conversations, over a Redis client."""

    def __init__(self, client, key_ttl_ms=60_000):
        self.client = client
        self.key_ttl_ms = int(key_ttl_ms)
        self._add = client.register_script(ADD)
        self._withdraw = client.register_script(WITHDRAW)
        self._decide = client.register_script(DECIDE)
        self._ack = client.register_script(ACK)

    def add(self, conversation_id, arrivals, job_id, notice=None):
        """Add (message_id, arrival_us) pairs; arm the flush with `job_id` if none is pending.

        `notice`, a (channel, text) pair, is published in the same round trip.
        """
        if not arrivals:
            raise ValueError("nothing to add")
        channel, text = notice or ("", "")
        argv = [self.key_ttl_ms, channel, text, job_id]
        for message_id, arrival_us in arrivals:
            argv += [int(arrival_us), str(message_id)]
        armed, newest = self._add(keys=keys(conversation_id), args=argv)
        return Added(bool(armed), int(float(newest)), job_id)

    def withdraw(self, conversation_id, message_id):
        """Take back a message whose database write did not commit."""
        self._withdraw(keys=keys(conversation_id), args=[str(message_id)])

    def decide(self, conversation_id, now_us, quiet_us, next_job_id):
        """Whether the conversation's group is quiet enough to answer now.

        When it is not, the flush stays armed with `next_job_id`, which the caller schedules.
        """
        args = [self.key_ttl_ms, int(now_us), int(quiet_us), next_job_id]
        result = self._decide(keys=keys(conversation_id), args=args)
        action = result[0].decode()
        at = int(float(result[1])) if len(result) > 1 else None
        return Decision(action, at)

    def ack(self, conversation_id, newest_us, next_job_id):
        """Forget an answered group; return the newest arrival still buffered, if any.

        When messages remain, the flush stays armed with `next_job_id`.
        """
        args = [self.key_ttl_ms, int(newest_us), next_job_id]
        newest = self._ack(keys=keys(conversation_id), args=args)
        return None if newest is None else int(float(newest))

    def discard(self, conversation_id):
        """Drop a closed conversation's buffer."""
        self.client.delete(*keys(conversation_id))

    def pending(self, conversation_id):
        """The buffered (message_id, arrival_us) pairs, oldest first."""
        rows = self.client.zrange(keys(conversation_id)[0], 0, -1, withscores=True)
        return [(member.decode(), int(score)) for member, score in rows]
