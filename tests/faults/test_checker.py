"""The fault suite's checker on hand-made rows (no services)."""

from types import SimpleNamespace

from tests.faults.checker import US, Window, evaluate, listed_ids, split_groups

T0 = 1_750_000_000 * US
C, D = "c0000000-0000-0000-0000-000000000000", "d0000000-0000-0000-0000-000000000000"


def at(seconds):
    return T0 + round(seconds * US)


def content(*ids):
    return "Mensagens recebidas:\n" + "".join(f"{i}\n" for i in ids)


def rows(messages, replies, conversation=C):
    """messages: (id, arrival s, reply id); replies: (id, stamp s, listed ids)."""
    inbound = [(conversation, m, at(s), r) for m, s, r in messages]
    outbound = [(conversation, r, at(s), content(*ids)) for r, s, ids in replies]
    return inbound, outbound


def check(messages, replies, accepted=None, **kwargs):
    inbound, outbound = rows(messages, replies)
    accepted = {m for m, _, _ in messages} if accepted is None else accepted
    return evaluate(inbound, outbound, accepted, **kwargs)


# --- split_groups ---------------------------------------------------------------------


def test_split_groups_at_every_gap_of_the_window_or_more():
    arrivals = [("a", 0.0), ("b", 2.0), ("c", 6.99), ("d", 11.99), ("e", 30.0)]
    assert split_groups(arrivals, quiet=5.0) == [["a", "b", "c"], ["d"], ["e"]]


def test_split_groups_orders_by_arrival_then_id():
    assert split_groups([("b", 1), ("a", 1), ("c", 0)], quiet=5) == [["c", "a", "b"]]


def test_split_groups_of_nothing():
    assert split_groups([]) == []


def test_a_gap_just_under_the_window_keeps_one_group():
    assert split_groups([("a", at(0)), ("b", at(4.999999))]) == [["a", "b"]]
    assert split_groups([("a", at(0)), ("b", at(5))]) == [["a"], ["b"]]


def test_listed_ids():
    assert listed_ids(content("a", "b")) == ["a", "b"]
    assert listed_ids("Mensagens recebidas:\na") is None
    assert listed_ids("hello\na\n") is None


# --- evaluate -------------------------------------------------------------------------


def test_a_clean_run():
    report = check(
        [("a", 0, "r1"), ("b", 2, "r1"), ("c", 10, "r2")],
        [("r1", 7.2, ["a", "b"]), ("r2", 15.1, ["c"])],
    )
    assert report.problems() == []
    assert (report.answered_once, report.groups, report.replies) == (3, 2, 2)
    assert round(report.max_lateness, 6) == 0.2


def test_merged_groups():
    report = check([("a", 0, "r1"), ("b", 6, "r1")], [("r1", 11.1, ["a", "b"])])
    assert (report.merged, report.split) == (1, 0)
    assert report.answered_once == 2
    assert "1 replies merging groups" in report.problems()


def test_a_split_group():
    report = check([("a", 0, "r1"), ("b", 2, "r2")], [("r1", 5.1, ["a"]), ("r2", 7.1, ["b"])])
    assert (report.merged, report.split, report.early) == (0, 1, 1)


def test_answered_twice_and_never():
    report = check(
        [("a", 0, "r1"), ("b", 20, None)],
        [("r1", 5.1, ["a"]), ("r2", 5.2, ["a"])],
        accepted={"a", "b", "lost"},
    )
    assert (report.answered_twice, report.never, report.lost) == (1, 2, 1)
    assert report.wrong_content == 1  # r2 lists a message linked to r1


def test_an_early_reply():
    report = check([("a", 0, "r1")], [("r1", 4.9, ["a"])])
    assert report.early == 1


def test_late_outside_a_fault():
    report = check([("a", 0, "r1")], [("r1", 6.6, ["a"])])
    assert report.late == 1 and round(report.max_lateness_outside, 6) == 1.6


def test_a_group_of_the_fault_gets_ten_seconds_after_its_end():
    fault = [Window("x", (T0 + 3 * US) / US, (T0 + 8 * US) / US)]
    within = check([("a", 0, "r1")], [("r1", 17.9, ["a"])], windows=fault)
    assert within.problems() == [] and within.late == 0
    beyond = check([("a", 0, "r1")], [("r1", 18.1, ["a"])], windows=fault)
    assert beyond.late_after_fault == 1


def test_a_group_after_the_fault_is_on_time_again():
    fault = [Window("x", (T0 + 3 * US) / US, (T0 + 8 * US) / US)]
    report = check([("a", 8.5, "r1")], [("r1", 15.5, ["a"])], windows=fault)
    assert report.late == 1 and report.late_after_fault == 0


def test_a_group_due_before_the_fault_is_on_time():
    fault = [Window("x", (T0 + 10 * US) / US, (T0 + 20 * US) / US)]
    report = check([("a", 0, "r1")], [("r1", 7.0, ["a"])], windows=fault)
    assert report.late == 1


def test_a_group_due_just_before_the_fault_belongs_to_it():
    """Due 0.5 s before a 10 s fault: not late yet when it struck, so the fault's bound."""
    fault = [Window("x", (T0 + 5.5 * US) / US, (T0 + 15.5 * US) / US)]
    report = check([("a", 0, "r1")], [("r1", 16.0, ["a"])], windows=fault)
    assert report.problems() == [] and report.late == 0
    earlier = [Window("x", (T0 + 6.6 * US) / US, (T0 + 16.6 * US) / US)]
    report = check([("a", 0, "r1")], [("r1", 17.0, ["a"])], windows=earlier)
    assert report.late == 1


def test_a_reply_committed_late_counts_from_when_it_was_seen():
    seen = {"r1": (T0 + 9 * US) / US}
    report = check([("a", 0, "r1")], [("r1", 5.1, ["a"])], seen=seen, seen_slack=0.25)
    assert round(report.max_lateness, 6) == 3.75 and report.late == 1


def test_replies_out_of_group_order():
    report = check([("a", 0, "r1"), ("b", 10, "r2")], [("r1", 15.2, ["a"]), ("r2", 15.1, ["b"])])
    assert report.out_of_order == 1


def test_wrong_content():
    report = check([("a", 0, "r1"), ("b", 1, "r1")], [("r1", 6.1, ["b", "a"])])
    assert report.wrong_content == 1


def test_conversations_are_grouped_apart():
    inbound = [(C, "a", at(0), "r1"), (D, "b", at(1), "r2")]
    outbound = [(C, "r1", at(5.1), content("a")), (D, "r2", at(6.1), content("b"))]
    report = evaluate(inbound, outbound, {"a", "b"})
    assert report.problems() == [] and report.groups == 2


def test_http_figures():
    attempts = [
        SimpleNamespace(status=202, seconds=0.01),
        SimpleNamespace(status=503, seconds=0.2),
        SimpleNamespace(status=None, seconds=15.0),
    ]
    report = check([], [], attempts=attempts)
    assert (report.requests, report.status_5xx, report.no_answer, report.slow) == (3, 1, 1, 1)
    assert report.slowest == 15.0
    assert report.problems() == ["1 HTTP answers slower than 10.0s"]


def test_an_exited_process_is_a_problem():
    report = check([], [])
    report.exited = ["scheduler-0"]
    assert report.problems() == ["processes exited: scheduler-0"]
