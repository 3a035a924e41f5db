#!/usr/bin/python3
"""Checks the broker's HTTP admin endpoint from outside, for test_http.c.

    http_check.py full|nostats|limits BASE_URL EXPECT_JSON

Uses only Python's standard library: urllib for HTTP, json for the API, and
a parser of the Prometheus text exposition format (version 0.0.4) written
here from the format's specification. EXPECT_JSON holds what the C test put
into the store and the live counters. When /usr/bin/node exists the
dashboard's script is also run against the live endpoint, with a minimal
stand-in for the browser's DOM, and the tables it renders are checked; when
/usr/bin/chromium exists (Debian's, installed by ./archnet setup) the page is
loaded in it, headless, and the DOM the real browser rendered is checked the
same way.
Exits 0 if every check passes; otherwise prints the first failure, exit 1.
"""
import html.parser
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ["uploading", "queued", "leased", "validating", "accepted", "delivered", "failed",
          "cancelled"]
FORBIDDEN_KEYS = {"secret", "secret_hash", "salt", "token", "hash", "train_x", "train_y",
                  "val_x", "val_y"}

# The live counters: the JSON API's key -> (Prometheus name, labels, type).
LIVE = {
    "connections_accepted": ("archnet_connections_accepted_total", {}, "counter"),
    "connections_closed": ("archnet_connections_closed_total", {}, "counter"),
    "connections_refused": ("archnet_connections_refused_total", {}, "counter"),
    "bytes_received": ("archnet_received_bytes_total", {}, "counter"),
    "bytes_sent": ("archnet_sent_bytes_total", {}, "counter"),
    "auth_failures": ("archnet_auth_failures_total", {}, "counter"),
    "leases_granted": ("archnet_leases_granted_total", {}, "counter"),
    "leases_expired": ("archnet_leases_expired_total", {}, "counter"),
    "uploads_started": ("archnet_uploads_started_total", {}, "counter"),
    "uploads_completed": ("archnet_uploads_completed_total", {}, "counter"),
    "validations_started": ("archnet_validations_started_total", {}, "counter"),
    "validations_accepted": ("archnet_validations_total", {"result": "accepted"}, "counter"),
    "validations_rejected": ("archnet_validations_total", {"result": "rejected"}, "counter"),
    "payouts": ("archnet_payouts_total", {}, "counter"),
    "payout_credits": ("archnet_payout_credits_total", {}, "counter"),
    "connections_open": ("archnet_connections_open", {}, "gauge"),
    "validations_running": ("archnet_validations_running", {}, "gauge"),
}


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


# ---- HTTP ----

def fetch(url, method="GET", headers=None, data=None, timeout=10):
    """(status, headers, body) for any status, 4xx and 5xx included."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, e.headers, body


def get_ok(url, content_type):
    status, headers, body = fetch(url)
    check(status == 200, f"GET {url}: status {status}: {body[:200]!r}")
    check(headers.get("Content-Type") == content_type,
          f"GET {url}: Content-Type {headers.get('Content-Type')!r}, want {content_type!r}")
    check(headers.get("X-Content-Type-Options") == "nosniff", f"GET {url}: no nosniff header")
    check(headers.get("Cache-Control") == "no-store", f"GET {url}: cacheable")
    return headers, body


def get_json(url):
    _, body = get_ok(url, "application/json")
    try:
        return json.loads(body), body
    except ValueError as e:
        raise CheckFailed(f"GET {url}: not JSON ({e}): {body[:200]!r}")


# ---- the Prometheus text format, version 0.0.4 ----

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf")
TIMESTAMP = re.compile(r"-?\d+")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_labels(line, i, where):
    """Parses `{name="value",...}` from line[i] == '{'; returns (labels, next index)."""
    labels = {}
    i += 1
    while True:
        if line[i:i + 1] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(line, i)
        check(m is not None, f"{where}: bad label name at column {i}")
        name = m.group()
        i = m.end()
        check(line[i:i + 2] == '="', f"{where}: label {name} lacks =\"")
        i += 2
        value = []
        while True:
            check(i < len(line), f"{where}: unterminated label value")
            c = line[i]
            if c == "\\":
                esc = line[i + 1:i + 2]
                check(esc in ("\\", '"', "n"), f"{where}: bad escape \\{esc}")
                value.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        check(name not in labels, f"{where}: label {name} twice")
        labels[name] = "".join(value)
        if line[i:i + 1] == ",":
            i += 1
        else:
            check(line[i:i + 1] == "}", f"{where}: expected , or }} after a label")


def parse_metrics(text):
    """Returns ({(name, labels tuple): value}, {name: type}); raises CheckFailed."""
    check(text.endswith("\n"), "metrics: the text does not end with a newline")
    samples, types, helps = {}, {}, {}
    done_families, current = set(), None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"metrics line {n} ({line!r})"
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                check(METRIC_NAME.fullmatch(name) is not None, f"{where}: bad name")
                if parts[1] == "TYPE":
                    check(len(parts) == 4 and parts[3] in TYPES, f"{where}: bad type")
                    check(name not in types, f"{where}: second TYPE for {name}")
                    check(name not in done_families and name != current,
                          f"{where}: TYPE after {name}'s samples")
                    types[name] = parts[3]
                else:
                    check(name not in helps, f"{where}: second HELP for {name}")
                    helps[name] = parts[3] if len(parts) == 4 else ""
            continue
        check(line.strip() != "", f"{where}: blank line")
        m = METRIC_NAME.match(line)
        check(m is not None, f"{where}: no metric name")
        name, i = m.group(), m.end()
        labels = {}
        if line[i:i + 1] == "{":
            labels, i = parse_labels(line, i, where)
        rest = line[i:].split(" ")
        check(rest[0] == "" and len(rest) in (2, 3), f"{where}: expected ' value [timestamp]'")
        check(VALUE.fullmatch(rest[1]) is not None, f"{where}: bad value {rest[1]!r}")
        if len(rest) == 3:
            check(TIMESTAMP.fullmatch(rest[2]) is not None, f"{where}: bad timestamp")
        # Only counters and gauges here, whose samples carry the family's name.
        check(types.get(name) in ("counter", "gauge"), f"{where}: {name} has no TYPE line")
        if name != current:
            check(name not in done_families, f"{where}: {name}'s samples are not together")
            if current:
                done_families.add(current)
            current = name
        key = (name, tuple(sorted(labels.items())))
        check(key not in samples, f"{where}: duplicate sample")
        samples[key] = float(rest[1])
    for name, kind in types.items():
        check(name in helps, f"metrics: {name} has no HELP")
        check(re.fullmatch(r"archnet_[a-z0-9]+(_[a-z0-9]+)*", name) is not None,
              f"metrics: {name} is not snake_case with the archnet_ prefix")
        check(name.endswith("_total") == (kind == "counter"),
              f"metrics: {name} ({kind}): only counters end in _total")
        check(any(s[0] == name for s in samples), f"metrics: {name} has a TYPE but no sample")
    return samples, types


def sample(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    check(key in samples, f"metrics: no sample {name}{labels}")
    return samples[key]


# ---- checks ----

def expected_node_counts(expect):
    counts = {}
    for node in expect["nodes"].values():
        key = (node["role"], "revoked" if node["revoked"] else "active")
        counts[key] = counts.get(key, 0) + 1
    return counts


def check_metrics(base, expect):
    _, body = get_ok(base + "/metrics", METRICS_TYPE)
    samples, types = parse_metrics(body.decode("utf-8"))
    check(sample(samples, "archnet_info", version=sample_version(samples)) == 1, "archnet_info")
    for state in STATES:
        got = sample(samples, "archnet_tasks", state=state)
        check(got == expect["counts"][state],
              f"metrics: archnet_tasks{{state={state}}} = {got}, want {expect['counts'][state]}")
    check(sum(1 for s in samples if s[0] == "archnet_tasks") == len(STATES),
          "metrics: archnet_tasks has states beyond the eight")
    node_counts = expected_node_counts(expect)
    for role in ("publisher", "worker", "admin"):
        for status in ("active", "revoked"):
            got = sample(samples, "archnet_nodes", role=role, status=status)
            want = node_counts.get((role, status), 0)
            check(got == want, f"metrics: archnet_nodes{{{role},{status}}} = {got}, want {want}")
    check(sample(samples, "archnet_escrow_credits") == expect["escrow"],
          f"metrics: escrow {sample(samples, 'archnet_escrow_credits')}, want {expect['escrow']}")
    check(sample(samples, "archnet_node_balance_credits") == expect["balances_total"],
          "metrics: archnet_node_balance_credits")
    check(sample(samples, "archnet_ledger_consistent") == (1 if expect["consistent"] else 0),
          f"metrics: archnet_ledger_consistent, want {expect['consistent']}")
    live_names = {v[0] for v in LIVE.values()}
    if expect["stats"] is None:
        check(not live_names & set(types), "metrics: live counters without stats")
    else:
        for key, (name, labels, kind) in LIVE.items():
            check(types.get(name) == kind, f"metrics: {name} is {types.get(name)}, want {kind}")
            got = sample(samples, name, **labels)
            check(got == expect["stats"][key],
                  f"metrics: {name}{labels} = {got}, want {expect['stats'][key]}")
    return body


def sample_version(samples):
    versions = [dict(k[1]).get("version") for k in samples if k[0] == "archnet_info"]
    check(len(versions) == 1 and versions[0], "metrics: archnet_info needs one version label")
    return versions[0]


def check_no_forbidden_keys(value, where):
    if isinstance(value, dict):
        for k, v in value.items():
            check(k not in FORBIDDEN_KEYS, f"{where}: key {k!r} must not be shown")
            check_no_forbidden_keys(v, where)
    elif isinstance(value, list):
        for v in value:
            check_no_forbidden_keys(v, where)


def check_tasks(base, expect):
    api, body = get_json(base + "/api/tasks")
    check_no_forbidden_keys(api, "/api/tasks")
    check(api["counts"] == expect["counts"], f"/api/tasks counts {api['counts']}")
    total = len(expect["tasks"])
    check(api["matched"] == total, f"/api/tasks matched {api['matched']}, want {total}")
    ids = [t["id"] for t in api["tasks"]]
    check(ids == sorted((int(i) for i in expect["tasks"]), reverse=True)[:100],
          f"/api/tasks: ids {ids}, want the newest first")
    for t in api["tasks"]:
        want = expect["tasks"][str(t["id"])]
        for key in ("state", "bounty", "publisher", "worker", "attempts"):
            check(t[key] == want[key], f"/api/tasks: task {t['id']} {key} {t[key]!r}, "
                                       f"want {want[key]!r}")
        check(bool(t["reason"]) == want["has_reason"], f"/api/tasks: task {t['id']} reason")
        check((t["lease_deadline"] is not None) == (t["state"] in ("leased", "validating")),
              f"/api/tasks: task {t['id']} lease_deadline")
        check(t["input"] == [4, 14, 14] and t["classes"] == 10, "/api/tasks: task's shape")
        check(t["state"] != "queued" or t["accuracy"] is None or t["reason"],
              "/api/tasks: accuracy")

    newest, _ = get_json(base + "/api/tasks?limit=2")
    check([t["id"] for t in newest["tasks"]] == ids[:2], "/api/tasks?limit=2")
    queued, _ = get_json(base + "/api/tasks?state=queued&limit=1000")
    check(queued["matched"] == expect["counts"]["queued"] and
          len(queued["tasks"]) == expect["counts"]["queued"] and
          all(t["state"] == "queued" for t in queued["tasks"]), "/api/tasks?state=queued")
    for bad in ("limit=0", "limit=1001", "limit=ten", "limit=", "limit=5x", "state=paid"):
        status, _, _ = fetch(base + "/api/tasks?" + bad)
        check(status == 400, f"/api/tasks?{bad}: status {status}, want 400")
    return body


def check_nodes(base, expect):
    api, body = get_json(base + "/api/nodes")
    check_no_forbidden_keys(api, "/api/nodes")
    got = {str(n["id"]): n for n in api["nodes"]}
    check(sorted(got) == sorted(expect["nodes"]), f"/api/nodes ids {sorted(got)}")
    for node_id, want in expect["nodes"].items():
        n = got[node_id]
        for key in ("name", "role", "revoked", "balance"):
            check(n[key] == want[key], f"/api/nodes: node {node_id} {key} {n[key]!r}, "
                                       f"want {want[key]!r}")
        check(sorted(n["holding"]) == sorted(want["holding"]),
              f"/api/nodes: node {node_id} holds {n['holding']}, want {want['holding']}")
    return body


def check_ledger(base, expect):
    api, body = get_json(base + "/api/ledger")
    check_no_forbidden_keys(api, "/api/ledger")
    if expect["consistent"]:
        check(api["consistent"] is True and api["violation"] is None,
              f"/api/ledger: {api['consistent']} {api['violation']}")
    else:
        check(api["consistent"] is False and isinstance(api["violation"], str) and
              api["violation"], f"/api/ledger: a violation unreported: {api}")
    check(api["escrow"] == expect["escrow"], f"/api/ledger escrow {api['escrow']}")
    check(api["balances_total"] == expect["balances_total"], "/api/ledger balances_total")
    got = {str(b["node"]): b for b in api["balances"]}
    check(sorted(got) == sorted(expect["nodes"]), "/api/ledger: one balance per node")
    for node_id, want in expect["nodes"].items():
        check(got[node_id]["balance"] == want["balance"] and got[node_id]["name"] == want["name"]
              and got[node_id]["role"] == want["role"], f"/api/ledger: node {node_id}")
    return body


def check_stats(base, expect):
    api, body = get_json(base + "/api/stats")
    if expect["stats"] is None:
        check(api["available"] is False and set(api) == {"now", "available"},
              f"/api/stats without stats: {api}")
    else:
        check(api["available"] is True, "/api/stats: not available")
        for key, want in expect["stats"].items():
            check(api.get(key) == want, f"/api/stats {key} = {api.get(key)}, want {want}")
    return body


class TagBalance(html.parser.HTMLParser):
    """Every element the page opens is closed, in order (void elements aside)."""
    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "wbr", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.problems = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def check_dashboard(base, expect):
    headers, body = get_ok(base + "/", "text/html; charset=utf-8")
    html = body.decode("utf-8")
    csp = headers.get("Content-Security-Policy", "")
    check("default-src 'none'" in csp and "connect-src 'self'" in csp, f"dashboard CSP {csp!r}")
    for needle in ("<!doctype html>", "<script>", "</script>", "api/tasks", "api/nodes",
                   "api/ledger", "id='tasks'", "id='workers'", "id='balances'", "textContent"):
        check(needle in html, f"dashboard: {needle!r} missing")
    # Self-contained: nothing loaded from anywhere.
    for pattern in (r"\b(src|href)\s*=", r"https?:", r"@import", r"url\("):
        check(re.search(pattern, html) is None, f"dashboard: external resource ({pattern})")
    check("innerHTML" not in html, "dashboard: innerHTML would render clients' text as markup")
    balance = TagBalance()
    balance.feed(html)
    balance.close()
    check(not balance.problems and not balance.open,
          f"dashboard markup: {balance.problems[:3]}, left open {balance.open}")
    if os.path.exists("/usr/bin/node"):
        check_dashboard_renders(base, expect, html)
    else:
        print("note: /usr/bin/node not found, the dashboard's script was not run")
    if os.path.exists("/usr/bin/chromium"):
        check_dashboard_in_browser(base, expect)
    else:
        print("note: /usr/bin/chromium not found, the dashboard was not loaded in a browser")
    return body


# A stand-in for the few DOM and browser calls the dashboard makes; the
# first refresh runs against the real endpoint, then the tables are printed.
DOM_STUB = r"""
const fs = require('fs');
const vm = require('vm');
const [base, scriptPath] = process.argv.slice(2);
class Element {
  constructor(tag) { this.tag = tag; this.children = []; this.textContent = ''; this.className = ''; }
  appendChild(c) { this.children.push(c); return c; }
  replaceChildren(...c) { this.children = c; }
  querySelector(sel) {
    if (sel !== 'tbody') throw new Error('unexpected selector ' + sel);
    return this.tbody || (this.tbody = new Element('tbody'));
  }
}
const elements = {};
const table = (id) => elements[id] && elements[id].tbody
  ? elements[id].tbody.children.map((tr) => tr.children.map((td) => td.textContent)) : null;
const text = (id) => elements[id] ? elements[id].children.map((c) => c.textContent) : null;
// The page runs in a context of its own, so that its setTimeout (which
// ends the run) is not the one node's own fetch uses.
const page = vm.createContext({
  document: {
    getElementById: (id) => elements[id] || (elements[id] = new Element('#' + id)),
    createElement: (tag) => new Element(tag),
  },
  fetch: (path, opts) => fetch(new URL(path, base + '/'), opts),
  setTimeout: (fn, ms) => {
    if (ms < 1000) throw new Error('refreshes too often: ' + ms + ' ms');
    console.log(JSON.stringify({
      updated: elements.updated.textContent, updatedClass: elements.updated.className,
      tasks: table('tasks'), workers: table('workers'), balances: table('balances'),
      ledger: text('ledger'), counts: text('counts'), live: text('live'),
    }));
  },
});
vm.runInContext(fs.readFileSync(scriptPath, 'utf8'), page, { filename: 'dashboard.js' });
"""


def check_dashboard_renders(base, expect, html):
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        stub, page = os.path.join(tmp, "stub.js"), os.path.join(tmp, "dashboard.js")
        with open(stub, "w") as f:
            f.write(DOM_STUB)
        with open(page, "w") as f:
            f.write(script)
        run = subprocess.run(["/usr/bin/node", stub, base, page], capture_output=True,
                             text=True, timeout=60)
    check(run.returncode == 0, f"dashboard script failed under node: {run.stderr}")
    try:
        shown = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CheckFailed(f"dashboard stub printed no tables: {run.stdout!r} {run.stderr!r}")
    check_shown(shown, expect, "dashboard")


class RenderedPage(html.parser.HTMLParser):
    """What a browser rendered: the text of the elements the dashboard fills
    (by id), the rows of its tables, and the class of the status line."""
    FILLED = {"updated", "counts", "live", "ledger"}
    TABLES = {"tasks", "workers", "balances"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, id of the filled element or table we are in)
        self.text = {k: [] for k in self.FILLED}
        self.rows = {k: [] for k in self.TABLES}
        self.updated_class = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        inside = self.stack[-1][1] if self.stack else None
        if a.get("id") in self.FILLED or a.get("id") in self.TABLES:
            inside = a["id"]
            if inside == "updated":
                self.updated_class = a.get("class")
        if tag in TagBalance.VOID:
            return
        self.stack.append((tag, inside))
        if inside in self.TABLES and tag == "tr" and self.stack[-2][0] == "tbody":
            self.rows[inside].append([])
        elif inside in self.TABLES and tag == "td" and self.rows[inside]:
            self.cell = []
        elif inside in self.FILLED and inside not in ("updated",) and tag in ("span", "p"):
            self.text[inside].append("")

    def handle_endtag(self, tag):
        if not self.stack:
            return
        _, inside = self.stack.pop()
        if tag == "td" and self.cell is not None and inside in self.TABLES:
            self.rows[inside][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        inside = self.stack[-1][1] if self.stack else None
        if self.cell is not None:
            self.cell.append(data)
        elif inside == "updated":
            self.text["updated"].append(data)
        elif inside in self.FILLED and self.text[inside]:
            self.text[inside][-1] += data


def check_dashboard_in_browser(base, expect):
    """Loads the dashboard in Debian's Chromium (headless), lets its script
    fetch the API and fill the page, and checks the DOM it rendered."""
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            ["/usr/bin/chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
             # Virtual time runs the first refresh (and its fetches) to the
             # end, but not the next one, five seconds later.
             "--virtual-time-budget=4000", "--dump-dom", base + "/"],
            capture_output=True, text=True, timeout=120)
    check(run.returncode == 0 and "</html>" in run.stdout,
          f"chromium could not render the dashboard: {run.stderr[-2000:]}")
    page = RenderedPage()
    page.feed(run.stdout)
    page.close()
    shown = {
        "updated": "".join(page.text["updated"]).strip(),
        "updatedClass": page.updated_class,
        "tasks": page.rows["tasks"], "workers": page.rows["workers"],
        "balances": page.rows["balances"], "ledger": page.text["ledger"],
        "counts": page.text["counts"], "live": page.text["live"],
    }
    check_shown(shown, expect, "dashboard in chromium")


def check_shown(shown, expect, where):
    """The tables and lines the dashboard filled hold what the store has."""
    check(shown["updated"].startswith("updated ") and shown["updatedClass"] == "muted",
          f"{where}: status line: {shown['updated']!r}")
    tasks = sorted(expect["tasks"].items(), key=lambda kv: -int(kv[0]))[:100]
    check([row[0] for row in shown["tasks"]] == [k for k, _ in tasks],
          f"{where}: task ids {[row[0] for row in shown['tasks']]}")
    check([row[1] for row in shown["tasks"]] == [t["state"] for _, t in tasks],
          f"{where}: task states")
    workers = {k: n for k, n in expect["nodes"].items() if n["role"] == "worker"}
    check(sorted(row[0] for row in shown["workers"]) == sorted(workers), f"{where}: workers")
    for row in shown["workers"]:
        want = workers[row[0]]
        # Names are shown as text, exactly, whatever characters they hold.
        check(row[1] == want["name"] and row[4] == str(want["balance"]) and
              row[2] == ("revoked" if want["revoked"] else "active"),
              f"{where}: worker row {row}")
        check(row[3] == ", ".join(str(t) for t in want["holding"]), f"{where}: holding {row}")
    check(sorted(row[0] for row in shown["balances"]) == sorted(expect["nodes"]),
          f"{where}: balances")
    verdict = "Ledger consistent" if expect["consistent"] else "Ledger invariant violated: "
    check(len(shown["ledger"]) == 1 and shown["ledger"][0].startswith(verdict) and
          f"escrow {expect['escrow']}," in shown["ledger"][0], f"{where}: ledger {shown['ledger']}")
    for state in STATES:
        check(f"{state}: {expect['counts'][state]}" in shown["counts"], f"{where}: counts {state}")
    if expect["stats"]:
        check(f"connections open: {expect['stats']['connections_open']}" in shown["live"],
              f"{where}: live counters {shown['live']}")


def check_errors(base):
    for path in ("/nope", "/api", "/api/", "/api/tasks/", "/metrics/x", "/index.html",
                 "/api/secrets"):
        status, _, _ = fetch(base + path)
        check(status == 404, f"GET {path}: status {status}, want 404")
    for method, path, data in (("POST", "/", b"x=1"), ("POST", "/metrics", b"{}"),
                               ("DELETE", "/api/tasks", None), ("PUT", "/api/nodes", b"[]"),
                               ("PATCH", "/nope", b"")):
        status, headers, _ = fetch(base + path, method=method, data=data)
        check(status == 405, f"{method} {path}: status {status}, want 405")
        check(headers.get("Allow") == "GET, HEAD", f"{method} {path}: Allow {headers.get('Allow')}")
    status, headers, body = fetch(base + "/metrics", method="HEAD")
    check(status == 200 and body == b"" and headers.get("Content-Type") == METRICS_TYPE,
          f"HEAD /metrics: {status} {body[:50]!r}")


def check_host_header(base):
    port = urllib.parse.urlsplit(base).port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                 f"[::2]:{port}", f"localhost.evil:{port}"):
        status, _, _ = fetch(base + "/api/nodes", headers={"Host": host})
        check(status == 403, f"Host {host}: status {status}, want 403")
    for host in (f"localhost:{port}", f"LocalHost:{port}", f"127.0.0.1:{port}",
                 f"127.0.0.2:{port}", f"[::1]:{port}", "localhost"):
        status, _, _ = fetch(base + "/api/nodes", headers={"Host": host})
        check(status == 200, f"Host {host}: status {status}, want 200")


def check_concurrent(base):
    """Several clients at once (fewer than the connection limit) all served."""
    paths = ["/metrics", "/api/tasks", "/api/nodes", "/api/ledger", "/api/stats", "/"]
    failures = []

    def client(n):
        for i in range(20):
            path = paths[(n + i) % len(paths)]
            try:
                status, _, _ = fetch(base + path)
                if status != 200:
                    failures.append(f"{path}: {status}")
            except OSError as e:
                failures.append(f"{path}: {e}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not failures, f"concurrent clients: {failures[:5]}")


def check_full(base, expect, nostats):
    bodies = [check_metrics(base, expect), check_tasks(base, expect), check_nodes(base, expect),
              check_ledger(base, expect), check_stats(base, expect),
              check_dashboard(base, expect)]
    for secret in expect["secrets"]:
        for body in bodies:
            check(secret.encode() not in body, "a secret or a dataset digest was shown")
    check_errors(base)
    if not nostats:
        check_host_header(base)
        check_concurrent(base)


def connect(base):
    parts = urllib.parse.urlsplit(base)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def check_limits(base, expect):
    limit, timeout = expect["max_connections"], expect["timeout_seconds"]
    idle = [connect(base) for _ in range(limit)]
    time.sleep(0.3)  # let the endpoint take them in
    try:
        status, _, _ = fetch(base + "/api/stats", timeout=max(0.5, timeout / 2))
        over = f"answered {status}"
    except (OSError, urllib.error.URLError) as e:
        over = None  # refused, reset or left unanswered: the limit held
    check(over is None, f"connection {limit + 1} of a limit of {limit} was {over}")
    for s in idle:
        s.close()
    time.sleep(0.3)
    status, _, _ = fetch(base + "/api/stats")
    check(status == 200, f"after the idle clients left: status {status}")

    # A client that stops half-way through its request is dropped after the
    # timeout, not kept forever.
    s = connect(base)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
    t0 = time.monotonic()
    s.settimeout(timeout + 10)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        raise CheckFailed(f"half a request still open after {timeout + 10} s")
    waited = time.monotonic() - t0
    s.close()
    check(data == b"" or data.startswith(b"HTTP/1.1 408"),
          f"half a request answered with {data[:60]!r}")
    check(timeout * 0.5 <= waited <= timeout + 5,
          f"half a request dropped after {waited:.1f} s, timeout {timeout} s")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("full", "nostats", "limits"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, base, expect_path = sys.argv[1:]
    with open(expect_path) as f:
        expect = json.load(f)
    try:
        if mode == "limits":
            check_limits(base, expect)
        else:
            check_full(base, expect, mode == "nostats")
    except CheckFailed as e:
        print(f"http_check {mode}: {e}", file=sys.stderr)
        return 1
    print(f"http_check {mode}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
