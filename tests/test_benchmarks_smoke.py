"""Smoke test of the load generator (benchmarks/loadgen.py) against a real xmppd.

Not a performance test: nothing here compares a figure with a threshold. It checks that every
scenario group logs in, joins, exchanges traffic and reports a positive figure with the CPU
readings, so the benchmark command keeps working as the server changes.
"""
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, server_env


def loadgen(server, *args, timeout=90):
    cmd = [sys.executable, "-m", "benchmarks.loadgen", *args, "--port", str(server.port),
           "--server-pid", str(server.proc.pid), "--warmup", "0.2", "--settle", "0.2", "--timeout", "60"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"loadgen failed:\n{proc.stderr}\n--- server log ---\n{server.log()}"
    figures = {}
    for line in proc.stdout.splitlines():
        if line.startswith("FIGURE "):
            fig = json.loads(line[len("FIGURE "):])
            figures[fig["key"]] = fig
    return figures


@pytest.fixture
def server(xmppd_server_factory):
    return xmppd_server_factory("--require-encryption", "false")


def assert_rate(fig):
    assert fig["value"] > 0, fig
    assert "server_cpu" in fig and "gen_cpu" in fig and fig["seconds"] > 0, fig


def test_login_group_reports_plain_and_tls_logins_and_memory(server):
    figs = loadgen(server, "login", "--clients", "6", "--concurrency", "3")
    assert figs["logins_plain"]["clients"] == 6 and figs["logins_plain"]["failed"] == 0
    assert figs["logins_tls"]["clients"] == 6 and figs["logins_tls"]["failed"] == 0
    assert_rate(figs["logins_plain"])
    assert_rate(figs["logins_tls"])
    assert figs["mem_idle_conn"]["rss_after_kb"] > 0


def test_chat_group_counts_delivered_messages(server):
    figs = loadgen(server, "chat", "--pairs", "3", "--window", "2", "--duration", "1")
    assert_rate(figs["chat_delivered"])
    assert figs["chat_delivered"]["delivered"] > 0


def test_muc_groups_fill_rooms_and_measure_traffic_and_latency(server):
    figs = loadgen(server, "mucfill", "--rooms", "2", "--per-room", "3", "--prefix", "fill")
    assert_rate(figs["muc_joins"])
    assert figs["mem_occupant"]["occupants"] == 6
    figs = loadgen(server, "muc", "--rooms", "2", "--per-room", "4", "--prefix", "talk",
                   "--duration", "1", "--latency-rate", "40")
    traffic = figs["muc_2x4_delivered"]
    assert_rate(traffic)
    assert traffic["senders"] == 2
    lat = figs["muc_2x4_p99"]
    assert lat["value"] > 0
    # Every probe reaches every occupant of the room (4 per message).
    assert lat["samples"] == lat["expected"]


def test_login_group_with_real_accounts_and_scram(xmppd_server_factory):
    users = [a for i in range(1, 21) for a in ("--user", f"user{i}:password")]
    server = xmppd_server_factory("--require-encryption", "false", *users, insecure_auth=False)
    figs = loadgen(server, "login", "--clients", "6", "--concurrency", "3", "--scram")
    for key in ("logins_plain", "logins_tls", "logins_scram_sha256", "logins_scram_sha1",
                "logins_scram_sha256_tls"):
        assert figs[key]["clients"] == 6 and figs[key]["failed"] == 0, key
        assert_rate(figs[key])
    assert figs["rss_idle"]["value"] > 0
    assert "(SCRAM-SHA-256)" in server.log() and "(SCRAM-SHA-1)" in server.log()


def test_mam_group_pages_a_prefilled_archive(xmppd_server_factory, tmp_path):
    from benchmarks import servers
    data = tmp_path / "mam"
    servers.prepare_archive(data, "user1@localhost", 230)
    server = xmppd_server_factory("--require-encryption", "false", data_dir=data)
    fig = loadgen(server, "mamquery", "--queries", "6", "--page", "50")["mam_page_p95"]
    assert fig["value"] > 0 and fig["queries"] == 6
    # newest page, three more back, the oldest (30: complete), then the newest again
    assert fig["results"] == 50 * 4 + 30 + 50
