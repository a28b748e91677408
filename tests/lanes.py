"""Lanes of `pytest -n` (make test): which worker runs which tests, and at what priority.

The suite waits far more than it computes (real processes, real windows, real faults), so
`make test` runs it in three lanes at once: two of the fault suite, each on a private stage of
its own, and one of everything else, which shares TEST_DATABASE_URL and TEST_REDIS_URL and so
runs in order on one worker. docs/decisions.md, "Test lanes", has the figures and the reasons.
"""

import os
from collections import OrderedDict

from xdist.scheduler import LoadScopeScheduling

FAULT_LANES = ("faults-1", "faults-2")
OTHER_LANE = "suite"
# Fault tests of the second lane (by name; a module name takes all of its tests), chosen to
# even out the two lanes' time (`pytest --durations`). Tests that read the same experiment
# (tests/faults/experiments.py) belong to the same lane: it runs once per lane that reads it.
SECOND_FAULT_LANE = {
    "test_sentinel.py",
    "test_worker_killed_mid_flush",  # worker_kill
    "test_postgresql_stalled",  # postgres_stall
    "test_redis_stalled",  # redis_stall
    "test_scenario_7_stalled_dependencies_fail_fast",  # both stalls
    "test_two_workers_two_schedulers",  # two_and_two
    "test_scenario_8_a_scheduler_lock_left_behind_delays_nothing",
    "test_graceful_reload_under_load",  # reload_web
    "test_scenario_9_a_graceful_reload_keeps_the_metrics",
}
# Tests that touch neither test database (each starts what it needs), by path prefix: they
# join the second fault lane, to even out the lanes.
SELF_CONTAINED = (
    "tests/unit/",
    "tests/faults/test_checker.py",
    "tests/integration/test_receiver.py",
    "tests/integration/test_run_script.py",
)
# The fault lanes' checks bound lateness (1 s outside a fault); the other lane's timing tests
# only bound what a busy machine still meets, so it yields the CPU to them.
NICENESS = {FAULT_LANES[0]: -10, FAULT_LANES[1]: -10, OTHER_LANE: 10}


def lane_of(nodeid):
    """The lane of a test by its node id: the fault suite's stage tests split in two, with
    the self-contained tests in the second; everything else in one."""
    path, _, name = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1]
    if path.startswith(SELF_CONTAINED):
        return FAULT_LANES[1]
    if not path.startswith("tests/faults/"):
        return OTHER_LANE
    test = name.split("[", 1)[0]
    return FAULT_LANES[1] if {module, test} & SECOND_FAULT_LANE else FAULT_LANES[0]


def set_priority(nodeid):
    """Give this process (and the processes it starts from now on) its lane's niceness;
    raising a priority needs root, and is skipped without."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS[lane_of(nodeid)])
    except OSError:
        pass


class LaneScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with lanes as scopes: each lane is one unit of work, sent whole
    to one worker, in collection order.

    Work is tracked by item index, not node id as in the parent class: schemathesis's tests
    collect several items under one node id, and a map by node id ran only the first of them.
    """

    def _split_scope(self, nodeid):
        return lane_of(nodeid)

    def schedule(self):
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        self.workqueue = OrderedDict()
        for index, nodeid in enumerate(self.collection):
            self.workqueue.setdefault(lane_of(nodeid), {})[index] = False
        # No more workers than lanes; with fewer (`-n 1`, `-n 2`), some run two lanes, one
        # after the other.
        for _ in range(len(self.nodes) - len(self.workqueue)):
            unused, _ = self.assigned_work.popitem()
            unused.shutdown()
        nodes = self.nodes
        for number in range(len(self.workqueue)):
            self._assign_work_unit(nodes[number % len(nodes)])
        for node in nodes:
            node.shutdown()

    def _assign_work_unit(self, node):
        lane, work_unit = self.workqueue.popitem(last=False)
        self.assigned_work.setdefault(node, {})[lane] = work_unit
        node.send_runtest_some([index for index, done in work_unit.items() if not done])

    def mark_test_complete(self, node, item_index, duration=0):
        lane = lane_of(self.collection[item_index])
        self.assigned_work[node][lane][item_index] = True

    def remove_node(self, node):
        crashitem = super().remove_node(node)
        return None if crashitem is None else self.collection[crashitem]
