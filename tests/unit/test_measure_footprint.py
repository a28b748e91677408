"""scripts/measure_footprint.py's pure parts: reading the kernel's TCP table, naming key
patterns, and per-unit arithmetic. The measurement itself runs by hand (docs/scaling.md)."""

import os
import socket

from scripts.measure_footprint import connections_to, key_pattern, per, socket_inodes, tcp_peers

# /proc/net/tcp's layout: a header, then one line per socket; the ports are hex.
TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   109        0 100 1
   1: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 200 1
   2: 0100007F:C351 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 300 1
   3: 0100007F:C352 0100007F:1538 06 00000000:00000000 00:00000000 00000000     0        0 400 1
"""


def test_tcp_peers_maps_established_sockets_to_their_remote_port(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(TCP_TABLE)

    peers = tcp_peers([str(table), str(tmp_path / "missing")])

    # The listening socket (0A) and the one in TIME_WAIT (06) hold no connection.
    assert peers == {200: 5432, 300: 6379}


def test_connections_to_counts_this_process_connections_to_a_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with (
            socket.create_connection(("127.0.0.1", port)),
            socket.create_connection(("127.0.0.1", port)),
        ):
            assert connections_to(os.getpid(), tcp_peers(), port) == 2
        assert socket_inodes(os.getpid())


def test_key_pattern_hides_ids():
    conversation = "0b7f8e6a-2f5c-4e0b-9a57-3f1c8f0c2d11"

    assert key_pattern(f"conv:{{{conversation}}}:buffer".encode()) == "conv:{*}:buffer"
    assert key_pattern("rq:scheduler:scheduled_jobs") == "rq:scheduler:scheduled_jobs"


def test_per_rounds_and_has_no_value_without_units():
    assert per(1000, 3) == 333
    assert per(-10, 4) == -2
    assert per(100, 0) is None
