#!/usr/bin/env python3
"""Speaks to an OpenVPN management socket as openvpn-monitor does.

openvpn-monitor (github.com/furlongm/openvpn-monitor,
vpns/openvpn/management_connection.py and data_collector.py) connects,
drops the >INFO greeting, sends `version`, `state`, `load-stats` and
`status 3`, waiting for each answer the way it does (`END` line, or any
data for load-stats), and parses them with its rules: the version is the
second word after "OpenVPN Version: " and must be a semantic version (the
2.4 columns are read from 2.4.0 on), state's fifth field empty means a
server, CLIENT_LIST rows are popped column by column. This is our own
rendition of those rules, so that vpnsyncd and a stock server are read
alike.

  mgmt_monitor.py monitor SOCKET      the parsed view, as JSON
  mgmt_monitor.py command SOCKET LINE one command, its raw answer line(s)
"""
import json
import re
import socket
import sys


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(3)
        self.s.connect(path)
        self.raw = []

    def recv(self):
        data = self.s.recv(1024)
        if not data:
            raise ConnectionResetError("closed by the server")
        return data.decode("utf-8")

    def send(self, command):
        self.s.send((command + "\n").encode())
        data = ""
        while True:
            chunk = re.sub(">INFO.*\r\n", "", self.recv())
            data += chunk
            if command == "load-stats" and data != "":
                break
            if command.startswith("kill") or command.startswith("client-kill"):
                if data.endswith("\r\n"):
                    break
            elif data.endswith("\nEND\r\n"):
                break
        self.raw.append((command, data))
        return data


def semver(text):
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$", text)
    if not m:
        raise ValueError("not a semantic version: %r" % text)
    return tuple(int(x) for x in m.groups())


def parse_version(data):
    for line in data.splitlines():
        if line.startswith("OpenVPN"):
            return line.replace("OpenVPN Version: ", "")
    raise ValueError("no version line in %r" % data)


def parse_state(data):
    state = {}
    for line in data.splitlines():
        parts = line.split(",")
        if parts[0].startswith((">INFO", "END", ">CLIENT")):
            continue
        state["up_since"] = int(parts[0])
        state["connected"] = parts[1]
        state["success"] = parts[2]
        state["local_ip"] = parts[3]
        state["mode"] = "Client" if parts[4] else "Server"
    return state


def parse_stats(data):
    parts = re.sub("SUCCESS: ", "", data).split(",")
    return {
        "nclients": int(re.sub("nclients=", "", parts[0])),
        "bytesin": int(re.sub("bytesin=", "", parts[1])),
        "bytesout": int(re.sub("bytesout=", "", parts[2]).replace("\r\n", "")),
    }


def parse_status(data, version):
    sessions, stats, client_section, routes_section = {}, {}, False, False
    for line in data.splitlines():
        parts = line.split("\t")
        if parts[0].startswith("END"):
            break
        if parts[0] == "GLOBAL_STATS":
            stats[parts[1]] = parts[2]
            continue
        if parts[0].startswith(("TITLE", "TIME")):
            continue
        if parts[0] == "HEADER":
            client_section = parts[1] == "CLIENT_LIST"
            routes_section = parts[1] == "ROUTING_TABLE"
            continue
        if client_section:
            parts.pop(0)
            s = {"common_name": parts.pop(0)}
            remote, port = parts.pop(0).rsplit(":", 1)
            s["remote_ip"], s["port"] = remote, int(port)
            s["local_ip"] = parts.pop(0)
            if version >= (2, 4, 0):
                s["local_ipv6"] = parts.pop(0)
            s["bytes_recv"] = int(parts.pop(0))
            s["bytes_sent"] = int(parts.pop(0))
            parts.pop(0)
            s["connected_since"] = int(parts.pop(0))
            username = parts.pop(0)
            s["username"] = s["common_name"] if username == "UNDEF" else username
            if version >= (2, 4, 0):
                s["client_id"] = parts.pop(0)
                s["peer_id"] = parts.pop(0)
            sessions[s["local_ip"]] = s
        if routes_section:
            if parts[1] in sessions:
                sessions[parts[1]]["last_seen"] = int(parts[5])
            else:
                raise ValueError("route of an unlisted client: %r" % line)
    return sessions, stats


def monitor(path):
    c = Conn(path)
    release = parse_version(c.send("version"))
    version = semver(release.split(" ")[1])
    state = parse_state(c.send("state"))
    stats = parse_stats(c.send("load-stats"))
    sessions, global_stats = parse_status(c.send("status 3"), version)
    c.s.send(b"quit\n")
    return {
        "release": release,
        "version": list(version),
        "state": state,
        "stats": stats,
        "sessions": sessions,
        "global_stats": global_stats,
    }


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "monitor":
        print(json.dumps(monitor(sys.argv[2]), sort_keys=True))
    elif len(sys.argv) == 4 and sys.argv[1] == "command":
        sys.stdout.write(Conn(sys.argv[2]).send(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
