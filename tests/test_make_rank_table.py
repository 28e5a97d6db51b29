"""scripts/make_rank_table.py: CANN v1.0 rank tables for 1 server x 8 devices and 2 servers x 8, and
the one-line errors for bad input (in-process calls of main(), no TensorFlow)."""
import importlib.util
import json
import os

import pytest

from conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("make_rank_table",
                                               os.path.join(REPO_ROOT, "scripts", "make_rank_table.py"))
make_rank_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_rank_table)

# The device NIC addresses of an Atlas 800 training server as hccn_tool writes them (ModelZoo's defaults).
SERVER0_IPS = ["192.168.100.101", "192.168.101.101", "192.168.102.101", "192.168.103.101",
               "192.168.100.100", "192.168.101.100", "192.168.102.100", "192.168.103.100"]
SERVER1_IPS = [ip.replace("192.168.", "192.169.") for ip in SERVER0_IPS]


def hccn_conf(path, ips):
    lines = []
    for i, ip in enumerate(ips):
        lines += ["address_%d=%s" % (i, ip), "netmask_%d=255.255.255.0" % i, "netdetect_%d=192.168.1.1" % i]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(capsys, *args):
    """(exit code, stdout, stderr) of make_rank_table.main(args)."""
    try:
        code = make_rank_table.main([str(a) for a in args])
    except SystemExit as stop:  # argparse
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(capsys, *args):
    code, out, err = run(capsys, *args)
    assert code == 2 and not out.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture
def table_8p(tmp_path, capsys):
    conf = hccn_conf(tmp_path / "hccn.conf", SERVER0_IPS)
    output = tmp_path / "rank_table_8p.json"
    code, out, _ = run(capsys, "--hccn_conf=%s" % conf, "--server_ip=10.0.0.1", "--output=%s" % output)
    assert code == 0 and "8 devices (RANK_SIZE=8)" in out
    return output


def test_one_server_of_8_from_hccn_conf(table_8p, capsys):
    table = json.loads(table_8p.read_text())
    assert table == {
        "version": "1.0", "server_count": "1", "status": "completed",
        "server_list": [{"server_id": "10.0.0.1", "device": [
            {"device_id": str(i), "device_ip": SERVER0_IPS[i], "rank_id": str(i)} for i in range(8)]}]}
    code, out, _ = run(capsys, "--check=%s" % table_8p, "--rank_size=8")
    assert code == 0
    assert out.splitlines() == ["%d %d" % (i, i) for i in range(8)]


def test_two_servers_of_8_merged_in_server_order(tmp_path, table_8p, capsys):
    conf1 = hccn_conf(tmp_path / "hccn1.conf", SERVER1_IPS)
    server1 = tmp_path / "server1.json"
    assert run(capsys, "--hccn_conf=%s" % conf1, "--server_ip=10.0.0.2", "--output=%s" % server1)[0] == 0
    merged = tmp_path / "rank_table_16p.json"
    code, out, _ = run(capsys, "--merge", table_8p, server1, "--output=%s" % merged)
    assert code == 0 and "2 server(s), 16 devices (RANK_SIZE=16)" in out
    table = json.loads(merged.read_text())
    assert table["server_count"] == "2" and table["version"] == "1.0"
    assert [s["server_id"] for s in table["server_list"]] == ["10.0.0.1", "10.0.0.2"]
    second = table["server_list"][1]["device"]
    assert [(d["device_id"], d["rank_id"], d["device_ip"]) for d in second] == [
        (str(i), str(8 + i), SERVER1_IPS[i]) for i in range(8)]
    # RANK_ID = devices_per_server * server_index + i, with the device of each rank.
    code, out, _ = run(capsys, "--check=%s" % merged, "--rank_size=16", "--server_index=1")
    assert code == 0 and out.splitlines() == ["%d %d" % (8 + i, i) for i in range(8)]
    err = one_error(capsys, "--check=%s" % merged, "--rank_size=8")
    assert "RANK_SIZE=8 but rank table" in err and "lists 16 devices" in err and "export RANK_SIZE=16" in err
    err = one_error(capsys, "--check=%s" % merged, "--rank_size=16", "--server_index=2")
    assert "--server_index=2" in err and "use 0..1" in err


def test_chosen_devices_and_given_ips(tmp_path, capsys):
    conf = hccn_conf(tmp_path / "hccn.conf", SERVER0_IPS)
    output = tmp_path / "rank_table_4p.json"
    assert run(capsys, "--hccn_conf=%s" % conf, "--devices=4,5,6,7", "--server_ip=10.0.0.1",
               "--output=%s" % output)[0] == 0
    devices = json.loads(output.read_text())["server_list"][0]["device"]
    assert [(d["device_id"], d["rank_id"]) for d in devices] == [("4", "0"), ("5", "1"), ("6", "2"), ("7", "3")]
    output = tmp_path / "rank_table_2p.json"
    assert run(capsys, "--device_ips=192.168.100.101,192.168.101.101", "--server_ip=10.0.0.1",
               "--output=%s" % output)[0] == 0
    code, out, _ = run(capsys, "--check=%s" % output, "--rank_size=2")
    assert code == 0 and out.splitlines() == ["0 0", "1 1"]


def test_bad_inputs_are_one_line_errors(tmp_path, table_8p, capsys):
    conf = hccn_conf(tmp_path / "hccn.conf", SERVER0_IPS)
    output = "--output=%s" % (tmp_path / "a.json")
    missing = tmp_path / "missing.conf"
    assert "not found" in one_error(capsys, "--hccn_conf=%s" % missing, output)
    empty = tmp_path / "empty.conf"
    empty.write_text("netmask_0=255.255.255.0\n")
    assert "no address_<i>=<ip> lines" in one_error(capsys, "--hccn_conf=%s" % empty, output)
    assert "3 devices" in one_error(capsys, "--hccn_conf=%s" % conf, "--devices=0,1,2", output)
    assert "distinct device ids" in one_error(capsys, "--hccn_conf=%s" % conf, "--devices=0,0", output)
    assert "not an IPv4 address" in one_error(capsys, "--device_ips=192.168.1.1,bad", output)
    assert "share one IP" in one_error(capsys, "--device_ips=192.168.1.1,192.168.1.1", output)
    # Nothing is overwritten.
    before = table_8p.read_text()
    assert "already exists" in one_error(capsys, "--hccn_conf=%s" % conf, "--output=%s" % table_8p)
    assert table_8p.read_text() == before
    assert "--output=PATH is required" in one_error(capsys, "--hccn_conf=%s" % conf)
    assert "unrecognized arguments" in one_error(capsys, "--bogus")
    assert not (tmp_path / "a.json").exists()


def _broken(tmp_path, name, edit):
    table = make_rank_table.make_table([make_rank_table.server_entry("10.0.0.1", dict(enumerate(SERVER0_IPS)))])
    edit(table)
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(version="1.1"), "version '1.1', not \"1.0\""),
    (lambda t: t.update(status="initializing"), "status 'initializing'"),
    (lambda t: t.update(server_count=1), "numbers as strings"),
    (lambda t: t.update(server_count="2"), "server_count is 2 but server_list has 1"),
    (lambda t: t["server_list"][0]["device"].pop(), "server 0 has 7 devices"),
    (lambda t: t["server_list"][0]["device"][3].update(rank_id="9"), "expected 0..7"),
    (lambda t: t["server_list"][0]["device"][3].update(device_id="2"), "lists a device_id twice"),
    (lambda t: t["server_list"][0]["device"][3].update(device_ip="192.168.100.101"), "appears twice"),
    (lambda t: t["server_list"][0]["device"][3].pop("device_ip"), "not an IPv4 address"),
    (lambda t: t.pop("server_list"), "has no server_list"),
])
def test_malformed_tables_are_rejected(tmp_path, capsys, edit, message):
    path = _broken(tmp_path, "broken.json", edit)
    err = one_error(capsys, "--check=%s" % path, "--rank_size=8")
    assert message in err and "make_rank_table.py" in err and str(path) in err


def test_unreadable_or_unset_table(tmp_path, capsys):
    assert "RANK_TABLE_FILE is not set" in one_error(capsys, "--check=", "--rank_size=8")
    assert "not found" in one_error(capsys, "--check=%s" % (tmp_path / "none.json"))
    text = tmp_path / "text.json"
    text.write_text("{not json")
    assert "is not valid JSON" in one_error(capsys, "--check=%s" % text)
