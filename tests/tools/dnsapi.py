#!/usr/bin/python3
"""Local stand-ins for DNS providers' HTTP APIs, for orch's tests.

Each implements the requests, responses and authentication the provider documents (the
parts orch uses), checks the credentials as the provider does, and publishes the zone's
records to a real BIND server with nsupdate (for OVH only after a zone refresh), so that
orch's verification at the authoritative server is real too.

    dnsapi.py serve KIND --zone Z --bind ADDR:PORT --key KEYFILE --port-file F [secrets]
    dnsapi.py hook --zone Z --bind ADDR:PORT --key KEYFILE --state FILE ACTION ARGS...

KIND: cloudflare, ovh, gandi, desec, duckdns, dyndns2. `hook` is a program for orch's
`kind = "command"` provider (the interface in orch's README).
"""

import argparse
import base64
import hashlib
import http.server
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()


def quote_txt(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_txt(value):
    value = value.strip()
    if not value.startswith('"'):
        return value
    out, inside, i = [], False, 0
    while i < len(value):
        c = value[i]
        if c == '"':
            inside = not inside
        elif c == "\\" and inside and i + 1 < len(value):
            i += 1
            out.append(value[i])
        elif inside:
            out.append(c)
        i += 1
    return "".join(out)


def valid_value(rtype, value):
    try:
        if rtype == "A":
            return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
        if rtype == "AAAA":
            return isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address)
    except ValueError:
        return False
    return rtype == "TXT"


class Bind:
    """Publishes RRsets to the authoritative server with RFC 2136 updates."""

    def __init__(self, zone, server, key):
        self.zone, self.key = zone, key
        self.addr, self.port = server.rsplit(":", 1)

    def publish(self, fqdn, rtype, ttl, values):
        lines = [
            f"server {self.addr} {self.port}",
            f"zone {self.zone}",
            f"update delete {fqdn}. {rtype}",
        ]
        for v in values:
            data = quote_txt(v) if rtype == "TXT" else v
            lines.append(f"update add {fqdn}. {max(int(ttl), 1)} {rtype} {data}")
        lines.append("send\n")
        out = subprocess.run(
            ["nsupdate", "-k", self.key],
            input="\n".join(lines),
            text=True,
            capture_output=True,
            timeout=20,
        )
        if out.returncode != 0:
            raise RuntimeError(f"nsupdate failed: {out.stderr}")


def in_zone(fqdn, zone):
    fqdn = fqdn.rstrip(".").lower()
    return fqdn == zone or fqdn.endswith("." + zone)


def fqdn_of(sub, zone):
    return zone if sub in ("", "@") else f"{sub}.{zone}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api = None  # set by main

    def log_message(self, fmt, *args):
        sys.stderr.write("dnsapi: " + (fmt % args) + "\n")

    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1 << 20:
            return self.reply(413, {"message": "too large"})
        body = self.rfile.read(length).decode() if length else ""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        q = {k: v[0] for k, v in query.items()}
        with LOCK:
            try:
                self.api.handle(self, self.command, url.path, q, body)
            except Exception as e:  # a bug here must show, not hang the client
                self.reply(500, {"message": f"mock failure: {e!r}"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


class Cloudflare:
    """API v4: Bearer token; envelope {success, errors, messages, result}."""

    def __init__(self, a, bind):
        self.token, self.zone, self.bind = a.token, a.zone, bind
        self.zone_id = "023e105f4ecef8ad9ca31a8372d0c353"
        self.records = []
        self.next_id = 1

    def fail(self, h, status, code, message):
        h.reply(status, {"success": False, "errors": [{"code": code, "message": message}],
                         "messages": [], "result": None})

    def ok(self, h, result, status=200):
        h.reply(status, {"success": True, "errors": [], "messages": [], "result": result})

    def publish(self, name, rtype):
        recs = [r for r in self.records if r["name"] == name and r["type"] == rtype]
        ttl = recs[0]["ttl"] if recs else 60
        values = [unquote_txt(r["content"]) if rtype == "TXT" else r["content"] for r in recs]
        self.bind.publish(name, rtype, 60 if ttl == 1 else ttl, values)

    def check_record(self, h, rec):
        if rec.get("type") not in ("A", "AAAA", "TXT"):
            self.fail(h, 400, 1004, "DNS Validation Error")
            return False
        if not in_zone(rec.get("name", ""), self.zone):
            self.fail(h, 400, 1004, "DNS Validation Error: name is not in the zone")
            return False
        content = rec.get("content", "")
        if not valid_value(rec["type"], content):
            self.fail(h, 400, 9005, f"Content for {rec['type']} record is invalid.")
            return False
        ttl = rec.get("ttl", 1)
        if not (ttl == 1 or 30 <= ttl <= 86400):
            self.fail(h, 400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
            return False
        return True

    def handle(self, h, method, path, q, body):
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return h.reply(400, {"success": False, "errors": [{"code": 6003, "message": "Invalid request headers",
                                 "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}]}],
                                 "messages": [], "result": None})
        if auth[len("Bearer "):] != self.token:
            return self.fail(h, 403, 10000, "Authentication error")
        prefix = "/client/v4"
        if not path.startswith(prefix):
            return self.fail(h, 404, 7003, "Could not route to " + path)
        path = path[len(prefix):]
        if method == "GET" and path == "/zones":
            found = [{"id": self.zone_id, "name": self.zone, "status": "active"}]
            return self.ok(h, found if q.get("name") in (None, self.zone) else [])
        base = f"/zones/{self.zone_id}/dns_records"
        if not path.startswith(base):
            return self.fail(h, 404, 7003, "Could not route to " + path)
        rest = path[len(base):].strip("/")
        if method == "GET" and rest == "":
            out = [r for r in self.records
                   if ("type" not in q or r["type"] == q["type"]) and ("name" not in q or r["name"] == q["name"].rstrip(".").lower())]
            return self.ok(h, out)
        if method == "POST" and rest == "":
            rec = json.loads(body)
            if not self.check_record(h, rec):
                return
            new = {"id": f"{self.next_id:032x}", "zone_id": self.zone_id, "zone_name": self.zone,
                   "name": rec["name"].rstrip(".").lower(), "type": rec["type"], "content": rec["content"],
                   "proxiable": rec["type"] != "TXT", "proxied": bool(rec.get("proxied", False)),
                   "ttl": rec.get("ttl", 1)}
            self.next_id += 1
            self.records.append(new)
            self.publish(new["name"], new["type"])
            return self.ok(h, new)
        match = [r for r in self.records if r["id"] == rest]
        if not match:
            return self.fail(h, 404, 81044, "Record does not exist.")
        old = match[0]
        if method == "PUT":
            rec = json.loads(body)
            if not self.check_record(h, rec):
                return
            names = {(old["name"], old["type"])}
            old.update({"name": rec["name"].rstrip(".").lower(), "type": rec["type"],
                        "content": rec["content"], "ttl": rec.get("ttl", 1)})
            names.add((old["name"], old["type"]))
            for n, t in names:
                self.publish(n, t)
            return self.ok(h, old)
        if method == "DELETE":
            self.records.remove(old)
            self.publish(old["name"], old["type"])
            return self.ok(h, {"id": old["id"]})
        return self.fail(h, 405, 10405, "Method not allowed")


class Ovh:
    """OVHcloud: X-Ovh-* headers and the $1$ SHA-1 signature; records by numeric id;
    nothing is served before POST /domain/zone/{zone}/refresh."""

    def __init__(self, a, bind):
        self.ak, self.asecret, self.ck = a.application_key, a.application_secret, a.consumer_key
        self.zone, self.bind = a.zone, bind
        self.records = {}
        self.next_id = 5000000001
        self.dirty = set()

    def fail(self, h, status, code, message):
        h.reply(status, {"errorCode": code, "httpCode": f"{status} {h.responses[status][0]}", "message": message})

    def handle(self, h, method, path, q, body):
        if not path.startswith("/1.0/"):
            return self.fail(h, 404, "NOT_FOUND", "Got an invalid (or empty) URL")
        path = path[len("/1.0"):]
        if method == "GET" and path == "/auth/time":
            return h.reply(200, int(time.time()))
        if h.headers.get("X-Ovh-Application") != self.ak:
            return self.fail(h, 403, "INVALID_KEY", "This application key is invalid")
        if h.headers.get("X-Ovh-Consumer") != self.ck:
            return self.fail(h, 403, "INVALID_CREDENTIAL", "This credential is not valid")
        ts = h.headers.get("X-Ovh-Timestamp", "")
        if not ts.isdigit() or abs(int(ts) - time.time()) > 180:
            return self.fail(h, 400, "QUERY_TIME_OUT", "Query out of time")
        url = f"http://{h.headers.get('Host')}{h.path}"
        raw = f"{self.asecret}+{self.ck}+{method}+{url}+{body}+{ts}"
        expected = "$1$" + hashlib.sha1(raw.encode()).hexdigest()
        if h.headers.get("X-Ovh-Signature") != expected:
            return self.fail(h, 400, "INVALID_SIGNATURE", "Invalid signature")
        base = f"/domain/zone/{self.zone}"
        if not path.startswith(base):
            return self.fail(h, 404, "NOT_FOUND", f"This service does not exist")
        rest = path[len(base):]
        if method == "POST" and rest == "/refresh":
            for name, rtype in sorted(self.dirty):
                recs = [r for r in self.records.values()
                        if fqdn_of(r["subDomain"], self.zone) == name and r["fieldType"] == rtype]
                ttl = recs[0]["ttl"] if recs else 60
                values = [unquote_txt(r["target"]) if rtype == "TXT" else r["target"] for r in recs]
                self.bind.publish(name, rtype, ttl or 60, values)
            self.dirty.clear()
            return h.reply(200, None)
        if method == "GET" and rest == "/record":
            ids = [r["id"] for r in self.records.values()
                   if ("fieldType" not in q or r["fieldType"] == q["fieldType"])
                   and ("subDomain" not in q or r["subDomain"] == q["subDomain"])]
            return h.reply(200, ids)
        if method == "POST" and rest == "/record":
            rec = json.loads(body)
            if rec.get("fieldType") not in ("A", "AAAA", "TXT"):
                return self.fail(h, 400, "INVALID_ARGUMENT", "Invalid fieldType")
            target = unquote_txt(rec.get("target", "")) if rec["fieldType"] == "TXT" else rec.get("target", "")
            if not valid_value(rec["fieldType"], target):
                return self.fail(h, 400, "INVALID_ARGUMENT", f"Invalid target for {rec['fieldType']}")
            new = {"id": self.next_id, "zone": self.zone, "subDomain": rec.get("subDomain", ""),
                   "fieldType": rec["fieldType"], "target": rec["target"], "ttl": int(rec.get("ttl", 0))}
            self.next_id += 1
            self.records[new["id"]] = new
            self.dirty.add((fqdn_of(new["subDomain"], self.zone), new["fieldType"]))
            return h.reply(200, new)
        if rest.startswith("/record/"):
            try:
                rid = int(rest[len("/record/"):])
            except ValueError:
                return self.fail(h, 400, "INVALID_ARGUMENT", "Invalid id")
            rec = self.records.get(rid)
            if rec is None:
                return self.fail(h, 404, "NOT_FOUND", f"The requested object (id = {rid}) does not exist")
            if method == "GET":
                return h.reply(200, rec)
            self.dirty.add((fqdn_of(rec["subDomain"], self.zone), rec["fieldType"]))
            if method == "PUT":
                change = json.loads(body)
                for k in ("subDomain", "target", "ttl"):
                    if k in change:
                        rec[k] = change[k]
                self.dirty.add((fqdn_of(rec["subDomain"], self.zone), rec["fieldType"]))
                return h.reply(200, None)
            if method == "DELETE":
                del self.records[rid]
                return h.reply(200, None)
        return self.fail(h, 404, "NOT_FOUND", "Got an invalid (or empty) URL")


class RrsetStore:
    """Whole RRsets by (fqdn, type), published at once (Gandi, deSEC)."""

    def __init__(self, zone, bind):
        self.zone, self.bind, self.sets = zone, bind, {}

    def put(self, fqdn, rtype, ttl, values):
        if values:
            self.sets[(fqdn, rtype)] = {"ttl": ttl, "values": values}
        else:
            self.sets.pop((fqdn, rtype), None)
        plain = [unquote_txt(v) if rtype == "TXT" else v for v in values]
        self.bind.publish(fqdn, rtype, ttl, plain)


class Gandi:
    """LiveDNS v5: Bearer personal access token; rrsets by name and type."""

    def __init__(self, a, bind):
        self.token, self.zone = a.token, a.zone
        self.store = RrsetStore(a.zone, bind)

    def handle(self, h, method, path, q, body):
        if h.headers.get("Authorization", "") != f"Bearer {self.token}":
            return h.reply(401, {"object": "HTTPUnauthorized", "cause": "Unauthorized", "code": 401,
                                 "message": "The server could not verify that you are authorized to access the document you requested. Either you supplied the wrong credentials (e.g., bad password), or your browser does not understand how to supply the credentials required."})
        parts = path.strip("/").split("/")
        # v5/livedns/domains/{fqdn}/records/{name}/{type}
        if len(parts) != 7 or parts[:3] != ["v5", "livedns", "domains"] or parts[4] != "records":
            return h.reply(404, {"object": "HTTPNotFound", "cause": "Not Found", "code": 404, "message": "The resource could not be found."})
        domain, name, rtype = parts[3], parts[5], parts[6]
        if domain != self.zone:
            return h.reply(404, {"object": "domain", "cause": "Not Found", "code": 404, "message": "The domain does not exist"})
        fqdn = fqdn_of(name, self.zone)
        key = (fqdn, rtype)
        if method == "GET":
            s = self.store.sets.get(key)
            if s is None:
                return h.reply(404, {"object": "dns-record", "cause": "Not Found", "code": 404,
                                     "message": "Can't find the DNS record for name and type in the zone"})
            return h.reply(200, {"rrset_name": name, "rrset_type": rtype, "rrset_ttl": s["ttl"],
                                 "rrset_values": s["values"],
                                 "rrset_href": f"https://api.gandi.net/v5/livedns/domains/{domain}/records/{name}/{rtype}"})
        if method == "PUT":
            req = json.loads(body)
            values, ttl = req.get("rrset_values", []), int(req.get("rrset_ttl", 10800))
            errors = []
            if ttl < 300:
                errors.append({"location": "body", "name": "rrset_ttl", "description": "rrset_ttl: must be at least 300"})
            for v in values:
                plain = unquote_txt(v) if rtype == "TXT" else v
                if not valid_value(rtype, plain):
                    errors.append({"location": "body", "name": "rrset_values", "description": f"invalid value {v!r}"})
            if errors:
                return h.reply(400, {"object": "HTTPBadRequest", "cause": "Bad Request", "code": 400,
                                     "message": "Bad Request", "errors": errors})
            self.store.put(fqdn, rtype, ttl, values)
            return h.reply(201, {"message": "DNS Record Created"})
        if method == "DELETE":
            if key not in self.store.sets:
                return h.reply(404, {"object": "dns-record", "cause": "Not Found", "code": 404,
                                     "message": "Can't find the DNS record for name and type in the zone"})
            self.store.put(fqdn, rtype, 300, [])
            h.send_response(204)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        return h.reply(405, {"object": "HTTPMethodNotAllowed", "cause": "Method Not Allowed", "code": 405, "message": "Method not allowed"})


class Desec:
    """deSEC: Token auth; GET rrsets/{subname}/{type}/ (@ = apex); bulk PUT rrsets/."""

    def __init__(self, a, bind):
        self.token, self.zone, self.min_ttl = a.token, a.zone, a.min_ttl
        self.store = RrsetStore(a.zone, bind)

    def handle(self, h, method, path, q, body):
        if h.headers.get("Authorization", "") != f"Token {self.token}":
            return h.reply(401, {"detail": "Invalid token."})
        parts = path.strip("/").split("/")
        # api/v1/domains/{name}/rrsets/[{subname}/{type}/]
        if parts[:3] != ["api", "v1", "domains"] or len(parts) < 5 or parts[4] != "rrsets":
            return h.reply(404, {"detail": "Not found."})
        if parts[3] != self.zone:
            return h.reply(404, {"detail": "Not found."})
        if len(parts) == 7 and method == "GET":
            sub = "" if parts[5] == "@" else parts[5]
            s = self.store.sets.get((fqdn_of(sub, self.zone), parts[6]))
            if s is None:
                return h.reply(404, {"detail": "Not found."})
            return h.reply(200, {"created": "2026-01-01T00:00:00Z", "domain": self.zone, "subname": sub,
                                 "name": fqdn_of(sub, self.zone) + ".", "type": parts[6],
                                 "records": s["values"], "ttl": s["ttl"], "touched": "2026-01-01T00:00:00Z"})
        if len(parts) == 5 and method in ("PUT", "PATCH"):
            items = json.loads(body)
            if not isinstance(items, list):
                return h.reply(400, {"non_field_errors": ["Expected a list of items but got type \"dict\"."]})
            errors, any_error = [], False
            for item in items:
                e = {}
                if int(item.get("ttl", 0)) < self.min_ttl:
                    e["ttl"] = [f"Ensure this value is greater than or equal to {self.min_ttl}."]
                for v in item.get("records", []):
                    if item.get("type") == "TXT" and not (v.startswith('"') and v.endswith('"')):
                        e["records"] = [f"Record content for type TXT malformed: {v}"]
                    elif item.get("type") in ("A", "AAAA") and not valid_value(item["type"], v):
                        e["records"] = [f"Record content for type {item['type']} malformed: {v}"]
                errors.append(e)
                any_error = any_error or bool(e)
            if any_error:
                return h.reply(400, errors)
            out = []
            for item in items:
                fqdn = fqdn_of(item.get("subname", ""), self.zone)
                self.store.put(fqdn, item["type"], int(item["ttl"]), item.get("records", []))
                if item.get("records"):
                    out.append({"subname": item.get("subname", ""), "type": item["type"], "ttl": item["ttl"],
                                "records": item["records"], "name": fqdn + ".", "domain": self.zone})
            return h.reply(200, out)
        return h.reply(405, {"detail": f"Method \"{method}\" not allowed."})


class DuckDns:
    """DuckDNS: GET /update?domains=&token=&ip=|ipv6=|txt= -> OK / KO (text)."""

    def __init__(self, a, bind):
        self.token, self.bind, self.domains = a.token, bind, set(a.domains.split(","))

    def handle(self, h, method, path, q, body):
        if method != "GET" or path != "/update":
            return h.reply(404, "Not Found", "text/plain")
        if q.get("token") != self.token or q.get("domains") not in self.domains:
            return h.reply(200, "KO", "text/plain")
        name = f"{q['domains']}.duckdns.org"
        for param, rtype in (("ip", "A"), ("ipv6", "AAAA"), ("txt", "TXT")):
            if param in q:
                value = q[param]
                if value == "" or not valid_value(rtype, value):
                    return h.reply(200, "KO", "text/plain")
                self.bind.publish(name, rtype, 60, [value])
        return h.reply(200, "OK", "text/plain")


class Dyndns2:
    """dyndns2: GET /nic/update?hostname=&myip= with basic auth -> good IP / nochg IP / badauth ..."""

    def __init__(self, a, bind):
        self.user, self.password, self.zone, self.bind = a.username, a.password, a.zone, bind
        self.hosts = set(h for h in a.domains.split(",") if h)  # the account's names
        self.current = {}

    def handle(self, h, method, path, q, body):
        if path != "/nic/update":
            return h.reply(404, "Not Found", "text/plain")
        if not h.headers.get("User-Agent"):
            return h.reply(200, "badagent", "text/plain")
        auth = h.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if auth != expected:
            return h.reply(401, "badauth", "text/plain")
        host = q.get("hostname", "")
        if "." not in host:
            return h.reply(200, "notfqdn", "text/plain")
        if not in_zone(host, self.zone) or (self.hosts and host not in self.hosts):
            return h.reply(200, "nohost", "text/plain")
        ips = [v for v in q.get("myip", "").split(",") if v]
        if not ips or not all(valid_value("A", v) or valid_value("AAAA", v) for v in ips):
            return h.reply(200, "dnserr", "text/plain")
        if self.current.get(host) == ips:
            return h.reply(200, "nochg " + ",".join(ips), "text/plain")
        self.current[host] = ips
        for rtype in ("A", "AAAA"):
            values = [v for v in ips if valid_value(rtype, v)]
            if values:
                self.bind.publish(host, rtype, 60, values)
        return h.reply(200, "good " + ",".join(ips), "text/plain")


def hook(a, bind):
    """orch's `command` provider interface, over a JSON state file."""
    state = json.load(open(a.state)) if os.path.exists(a.state) else {}
    action, name, rtype = a.args[0], a.args[1].rstrip(".").lower(), a.args[2]
    if os.environ.get("ORCH_DNS_ACTION") != action or os.environ.get("ORCH_DNS_TYPE") != rtype:
        print("environment does not match the arguments", file=sys.stderr)
        return 2
    if os.environ.get("HOOK_FAIL"):
        print("the provider said no: " + os.environ["HOOK_FAIL"], file=sys.stderr)
        return 1
    key = f"{name} {rtype}"
    current = state.get(key, [])
    if action == "get":
        print("\n".join(current))
        return 0
    if action == "swap":
        expected = [v for v in os.environ.get("ORCH_DNS_EXPECTED", "").split("\n") if v]
        new = [v for v in os.environ.get("ORCH_DNS_NEW", "").split("\n") if v]
        if sorted(current) != sorted(expected):
            print("\n".join(current))
            return 3
        state[key] = new
        with open(a.state + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(a.state + ".tmp", a.state)
        if not os.environ.get("HOOK_NO_PUBLISH"):  # a provider that accepts and drops
            bind.publish(name, rtype, int(a.args[3]), new)
        return 0
    print(f"unknown action {action}", file=sys.stderr)
    return 2


KINDS = {"cloudflare": Cloudflare, "ovh": Ovh, "gandi": Gandi, "desec": Desec,
         "duckdns": DuckDns, "dyndns2": Dyndns2}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve", "hook"])
    p.add_argument("--kind", choices=sorted(KINDS))
    p.add_argument("--zone", required=True)
    p.add_argument("--bind", required=True, help="ADDR:PORT of the authoritative server")
    p.add_argument("--key", required=True, help="TSIG key file for nsupdate")
    p.add_argument("--port-file")
    p.add_argument("--state")
    p.add_argument("--token")
    p.add_argument("--application-key")
    p.add_argument("--application-secret")
    p.add_argument("--consumer-key")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--domains", default="")
    p.add_argument("--min-ttl", type=int, default=3600)
    p.add_argument("args", nargs="*")
    a = p.parse_intermixed_args()
    bind = Bind(a.zone, a.bind, a.key)
    if a.mode == "hook":
        sys.exit(hook(a, bind))
    Handler.api = KINDS[a.kind](a, bind)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
