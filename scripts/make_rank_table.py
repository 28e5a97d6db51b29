"""Writes or checks a CANN rank table (format version 1.0), the RANK_TABLE_FILE that HCCL reads.

One server (device IPs from /etc/hccn.conf, or given):

    python3 scripts/make_rank_table.py --output=rank_table_8p.json [--server_ip=10.0.0.1]
    python3 scripts/make_rank_table.py --output=rank_table_4p.json --devices=0,1,2,3
    python3 scripts/make_rank_table.py --output=rt.json --device_ips=192.168.100.101,192.168.101.101

Several servers: write one table on each server, copy them to one place, merge them in server order
(server k's devices get ranks k*n .. k*n+n-1, so that RANK_ID = n * server_index + i):

    python3 scripts/make_rank_table.py --merge server0.json server1.json --output=rank_table_16p.json

Check a table (the launchers do this before starting any process); prints "rank_id device_id" for
each device of server --server_index:

    python3 scripts/make_rank_table.py --check=rank_table_8p.json --rank_size=8 [--server_index=0]

Every value in the file is a string, as CANN expects. Bad input ends in one line
`error: <what is wrong and the fix>` on stderr and exit code 2; nothing is overwritten.
"""
import argparse
import ipaddress
import json
import os
import re
import socket
import sys

VERSION = "1.0"
DEVICE_COUNTS = (1, 2, 4, 8)
DEVICES_PER_SERVER = 8
HCCN_CONF = "/etc/hccn.conf"
_HCCN_ADDRESS = re.compile(r"^\s*address_(\d+)\s*=\s*(\S+)\s*$")


class RankTableError(ValueError):
    """The input or the table is unusable; the message names the fix."""


def _ip(value, what):
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise RankTableError("%s %r is not an IPv4 address" % (what, value))


def read_hccn_conf(path):
    """{device_id: device_ip} from the address_<i>=<ip> lines of an hccn.conf."""
    if not os.path.isfile(path):
        raise RankTableError("%s not found: run on the Ascend server (hccn_tool writes it), or pass "
                             "--device_ips=IP0,IP1,... or --hccn_conf=PATH" % path)
    addresses = {}
    with open(path) as handle:
        for line in handle:
            match = _HCCN_ADDRESS.match(line)
            if match:
                addresses[int(match.group(1))] = _ip(match.group(2), "%s: address_%s" % (path, match.group(1)))
    if not addresses:
        raise RankTableError("%s has no address_<i>=<ip> lines: configure the device NICs with hccn_tool "
                             "(hccn_tool -i 0 -ip -s address ...) or pass --device_ips" % path)
    return addresses


def _check_count(count, what):
    if count not in DEVICE_COUNTS:
        raise RankTableError("%s has %d devices: a server takes part with 1, 2, 4 or 8 devices"
                             % (what, count))


def _device_ids(text):
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise RankTableError("--devices=%r: give device ids separated by commas, e.g. 0,1,2,3" % text)
    if len(set(ids)) != len(ids) or any(not 0 <= i < DEVICES_PER_SERVER for i in ids):
        raise RankTableError("--devices=%r: give distinct device ids from 0 to %d"
                             % (text, DEVICES_PER_SERVER - 1))
    return ids


def server_entry(server_ip, addresses, device_ids=None, first_rank=0):
    """One server_list entry for `device_ids` (default: every device in `addresses`), ranks from first_rank."""
    device_ids = sorted(addresses) if device_ids is None else device_ids
    missing = [i for i in device_ids if i not in addresses]
    if missing:
        raise RankTableError("no IP address for device(s) %s: add address_<i> lines to the hccn.conf or "
                             "choose other --devices" % ",".join(map(str, missing)))
    _check_count(len(device_ids), "server %s" % server_ip)
    ips = [addresses[i] for i in device_ids]
    if len(set(ips)) != len(ips):
        raise RankTableError("two devices share one IP address (%s): each device NIC needs its own" % ", ".join(ips))
    return {"server_id": server_ip,
            "device": [{"device_id": str(device), "device_ip": ip, "rank_id": str(first_rank + i)}
                       for i, (device, ip) in enumerate(zip(device_ids, ips))]}


def make_table(servers):
    return {"version": VERSION, "server_count": str(len(servers)), "server_list": servers, "status": "completed"}


def _integer(value, what):
    if not isinstance(value, str) or not value.isdigit():
        raise RankTableError("%s is %r: CANN rank tables hold numbers as strings of digits, e.g. \"0\""
                             % (what, value))
    return int(value)


def validate(table, where="the rank table"):
    """Checks a v1.0 table; returns [[(rank_id, device_id), ...] per server], in server order."""
    try:
        return _validate(table, where)
    except RankTableError as error:
        raise RankTableError("%s; write the table with scripts/make_rank_table.py" % error)


def _validate(table, where):
    if not isinstance(table, dict):
        raise RankTableError("%s is not a JSON object" % where)
    if table.get("version") != VERSION:
        raise RankTableError("%s has version %r, not \"1.0\"" % (where, table.get("version")))
    if table.get("status") != "completed":
        raise RankTableError("%s has status %r, not \"completed\"" % (where, table.get("status")))
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        raise RankTableError("%s has no server_list" % where)
    if _integer(table.get("server_count"), "%s: server_count" % where) != len(servers):
        raise RankTableError("%s: server_count is %s but server_list has %d servers"
                             % (where, table.get("server_count"), len(servers)))
    plan, server_ids, device_ips = [], set(), set()
    per_server = None
    for index, server in enumerate(servers):
        what = "%s: server %d" % (where, index)
        if not isinstance(server, dict) or not isinstance(server.get("device"), list):
            raise RankTableError("%s has no device list" % what)
        server_id = server.get("server_id")
        if not server_id or server_id in server_ids:
            raise RankTableError("%s has a missing or repeated server_id %r" % (what, server_id))
        server_ids.add(server_id)
        devices = server["device"]
        _check_count(len(devices), what)
        if per_server is None:
            per_server = len(devices)
        elif len(devices) != per_server:
            raise RankTableError("%s has %d devices, server 0 has %d: every server takes part with the same "
                                 "number" % (what, len(devices), per_server))
        ranks = []
        for device in devices:
            if not isinstance(device, dict):
                raise RankTableError("%s: a device entry is not an object" % what)
            device_id = _integer(device.get("device_id"), "%s: device_id" % what)
            rank_id = _integer(device.get("rank_id"), "%s: rank_id" % what)
            ip = _ip(device.get("device_ip"), "%s: device_ip" % what)
            if device_id >= DEVICES_PER_SERVER:
                raise RankTableError("%s: device_id %d is not 0..%d" % (what, device_id, DEVICES_PER_SERVER - 1))
            if ip in device_ips:
                raise RankTableError("%s: device_ip %s appears twice: each device NIC needs its own" % (what, ip))
            device_ips.add(ip)
            ranks.append((rank_id, device_id))
        if len({device_id for _, device_id in ranks}) != len(ranks):
            raise RankTableError("%s lists a device_id twice" % what)
        expected = list(range(index * per_server, (index + 1) * per_server))
        if sorted(rank_id for rank_id, _ in ranks) != expected:
            raise RankTableError("%s has rank_ids %s; expected %d..%d (server k holds ranks k*n .. k*n+n-1)"
                                 % (what, ",".join(str(r) for r, _ in ranks), expected[0], expected[-1]))
        plan.append(sorted(ranks))
    return plan


def read_table(path):
    if not path:
        raise RankTableError("RANK_TABLE_FILE is not set: write one with python3 scripts/make_rank_table.py "
                             "--output=rank_table.json and export RANK_TABLE_FILE=$PWD/rank_table.json")
    if not os.path.isfile(path):
        raise RankTableError("rank table %s not found: write it with python3 scripts/make_rank_table.py "
                             "--output=%s, or export RANK_TABLE_FILE with the path of yours" % (path, path))
    try:
        with open(path) as handle:
            return json.load(handle)
    except ValueError as error:
        raise RankTableError("rank table %s is not valid JSON (%s): write it with scripts/make_rank_table.py"
                             % (path, error))


def check(path, rank_size, server_index):
    """This server's [(rank_id, device_id)] after checking the table against RANK_SIZE and the server index."""
    plan = validate(read_table(path), "rank table %s" % path)
    total = sum(len(server) for server in plan)
    if rank_size is not None and rank_size != total:
        raise RankTableError("RANK_SIZE=%d but rank table %s lists %d devices: export RANK_SIZE=%d, or write a "
                             "table for %d devices with scripts/make_rank_table.py" % (rank_size, path, total, total,
                                                                                      rank_size))
    if not 0 <= server_index < len(plan):
        raise RankTableError("--server_index=%d but rank table %s has %d server(s): use 0..%d"
                             % (server_index, path, len(plan), len(plan) - 1))
    return plan[server_index]


def merge(paths):
    servers = []
    for path in paths:
        table = read_table(path)
        validate(table, "rank table %s" % path)
        for server in table["server_list"]:
            first = len(servers) * len(server["device"])
            devices = sorted(server["device"], key=lambda d: int(d["rank_id"]))
            servers.append({"server_id": server["server_id"],
                            "device": [dict(d, rank_id=str(first + i)) for i, d in enumerate(devices)]})
    table = make_table(servers)
    validate(table, "the merged table")
    return table


def default_server_ip():
    """This host's address on its default route (no packet is sent), else 127.0.0.1."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, "error: %s (see --help)\n" % message)


def _parser():
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="Path of the table to write (never overwritten).")
    parser.add_argument("--hccn_conf", default=HCCN_CONF, help="Device IPs from this file (default %(default)s).")
    parser.add_argument("--device_ips", help="Device IPs, comma-separated, for devices 0,1,... instead of hccn.conf.")
    parser.add_argument("--devices", help="Device ids to use, e.g. 0,1,2,3 (default: every device with an IP).")
    parser.add_argument("--server_ip", help="This server's IP (server_id); default: its address on the default route.")
    parser.add_argument("--merge", nargs="+", metavar="TABLE", help="Merge one-server tables, in server order.")
    parser.add_argument("--check", metavar="TABLE", help="Check a table and print this server's ranks and devices.")
    parser.add_argument("--rank_size", type=int, help="With --check: the RANK_SIZE the table must match.")
    parser.add_argument("--server_index", type=int, default=0, help="With --check: which server (default 0).")
    return parser


def _write(table, path):
    if os.path.exists(path):
        raise RankTableError("%s already exists: pass another --output or remove it yourself" % path)
    with open(path, "w") as handle:
        json.dump(table, handle, indent=2)
        handle.write("\n")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.check is not None:
            for rank_id, device_id in check(args.check, args.rank_size, args.server_index):
                print(rank_id, device_id)
            return 0
        if not args.output:
            raise RankTableError("--output=PATH is required (or --check=TABLE to check one)")
        if args.merge:
            table = merge(args.merge)
        else:
            if args.device_ips:
                ips = args.device_ips.split(",")
                addresses = {i: _ip(ip.strip(), "--device_ips entry") for i, ip in enumerate(ips)}
            else:
                addresses = read_hccn_conf(args.hccn_conf)
            device_ids = _device_ids(args.devices) if args.devices else None
            server_ip = _ip(args.server_ip, "--server_ip") if args.server_ip else default_server_ip()
            table = make_table([server_entry(server_ip, addresses, device_ids)])
        _write(table, args.output)
    except RankTableError as error:
        sys.stderr.write("error: %s\n" % error)
        return 2
    devices = sum(len(server["device"]) for server in table["server_list"])
    print("wrote %s: %s server(s), %d devices (RANK_SIZE=%d)" % (args.output, table["server_count"], devices, devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
