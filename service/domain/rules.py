"""The business rules of the contract (../shared/SPEC.md): statuses, rejections, the reply."""

import uuid

OPEN = "OPEN"
CLOSED = "CLOSED"
INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"
HELD = "HELD"
EXPIRED = "EXPIRED"
RECEIVED = "RECEIVED"
SENT = "SENT"

REPLY_HEADER = "Mensagens recebidas:\n"
# Replies get ids derived from their group's first message, so a group answered twice
# (a job run again, two workers) collides on the primary key instead of adding a row.
REPLY_NAMESPACE = uuid.UUID("0b6f3f0e-6d0a-4d5c-9a57-5b0f2f3e9a11")


class Rejected(Exception):
    """An event the rules refuse; nothing was changed."""

    def __init__(self, error, message):
        super().__init__(message)
        self.error = error
        self.message = message


def duplicate(held=False):
    """The rejection of a message id seen before."""
    where = "is already held" if held else "was already received"
    return Rejected("duplicate_message", f"A message with this id {where}.")


def expired():
    """The rejection of a message id whose hold ran out."""
    return Rejected("message_expired", "This message was dropped: its conversation came too late.")


def check_can_receive(status):
    """A message may join only an open conversation."""
    if status == CLOSED:
        raise Rejected("conversation_closed", "The conversation is closed.")


def check_not_held(held_status):
    """A message id held or dropped before cannot come in again."""
    if held_status == EXPIRED:
        raise expired()
    if held_status is not None:
        raise duplicate(held=True)


def check_can_close(status):
    """Only an open conversation can be closed."""
    if status is None:
        raise Rejected("conversation_not_found", "No conversation with this id.")
    if status == CLOSED:
        raise Rejected("conversation_closed", "The conversation is already closed.")


def message_type(direction):
    """A customer's message is INBOUND; one the business already sent is stored OUTBOUND."""
    return OUTBOUND if direction == SENT else INBOUND


def reply_content(message_ids):
    """The automatic reply listing a group's message ids in arrival order."""
    return REPLY_HEADER + "".join(f"{message_id}\n" for message_id in message_ids)


def reply_id(first_message_id):
    """The deterministic id of the reply to the group starting with this message."""
    return uuid.uuid5(REPLY_NAMESPACE, str(first_message_id))


def flush_due_us(newest_arrival_us, quiet_us):
    """When the group whose newest message arrived then may be answered."""
    return newest_arrival_us + quiet_us


def split_groups(arrivals, quiet_us):
    """Split (message_id, arrival_us) pairs, oldest first, into groups at every gap of
    `quiet_us` or more: the contract's groups (../shared/SPEC.md, "Grouping"), a function of the
    recorded arrival times alone. Returns a list of lists of pairs."""
    groups = []
    last = None
    for pair in arrivals:
        if last is None or pair[1] - last >= quiet_us:
            groups.append([])
        groups[-1].append(pair)
        last = pair[1]
    return groups


def closed_groups(arrivals, now_us, quiet_us, final=False):
    """The groups of `arrivals` (see split_groups) that may be answered at `now_us`: every
    group followed by a gap, and the last one once `quiet_us` has passed since its newest
    arrival, or at once when `final` (a close answers the open group)."""
    groups = split_groups(arrivals, quiet_us)
    if groups and not final and now_us < groups[-1][-1][1] + quiet_us:
        groups.pop()
    return groups


def within_hold(received_us, now_us, hold_us):
    """A held message may still join its conversation."""
    return now_us - received_us <= hold_us
