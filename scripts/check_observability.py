#!/usr/bin/env python3
"""Helper for scripts/check-observability: dashboard lint and live checks against Prometheus.

Standard library only, so it runs wherever python3 does. Subcommands:

  lint DASHBOARD                 static checks of a Grafana dashboard (see lint_dashboard)
  target URL                     print "scheme host:port metrics_path" for a reaper base URL
  fetch URL                      print the body of URL (the /metrics scrape) to stdout
  free-port                      print a free TCP port on 127.0.0.1
  live --prom URL ...            wait for Prometheus to scrape the target, then query every
                                 dashboard expression and check every alert rule (see live)

Every check collects all of its failures before exiting, so one run lists everything wrong.
"""

import argparse
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Counters and histogram series: only meaningful as a rate.
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RATE_FUNCTIONS = {"rate", "irate", "increase"}
AGGREGATORS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = LABEL_LIST_KEYWORDS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
REQUIRED_FILTERS = {"job": "job", "instance": "instance"}

TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<matchers>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^{}"'])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,@])
    """,
    re.VERBOSE,
)
MATCHER = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')\s*,?""")


def tokenize(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def parse_matchers(block):
    """'{a="x", b=~"y"}' -> [(a, =, x), (b, =~, y)]."""
    inner = block[1:-1]
    pos, out = 0, []
    while inner[pos:].strip():
        m = MATCHER.match(inner, pos)
        if not m:
            raise ValueError(f"cannot parse matchers {block!r}")
        out.append((m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return out


def lint_expr(expr):
    """Problems with one dashboard expression (empty list when fine).

    A lexical check, not a full PromQL parser: every metric name must carry
    {job=~"$job", instance=~"$instance"}; counter and histogram series may appear only as the
    direct argument of rate/irate/increase; and those functions must use [$__rate_interval].
    Whether Prometheus accepts the expression is checked for real by the live mode.
    """
    try:
        tokens = tokenize(expr)
    except ValueError as err:
        return [str(err)]
    problems = []
    stack = []  # one entry per open paren: function name, "LABELS", or "" for grouping
    pending_agg = None  # aggregator whose body paren comes after a by/without label list
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "lparen":
            prev = tokens[i - 1] if i > 0 else (None, None)
            if prev[0] == "ident" and prev[1] in LABEL_LIST_KEYWORDS:
                stack.append("LABELS")
            elif prev[0] == "ident" and prev[1] not in KEYWORDS:
                stack.append(prev[1])
            elif pending_agg and prev[0] == "rparen":
                stack.append(pending_agg)
                pending_agg = None
            else:
                stack.append("")
        elif kind == "rparen":
            if not stack:
                problems.append("unbalanced parentheses")
                break
            if stack.pop() == "LABELS" and i + 1 < len(tokens) and nxt[0] != "lparen":
                pending_agg = None
        elif kind == "ident":
            if stack and stack[-1] == "LABELS":
                continue
            if text in AGGREGATORS and nxt[1] in ("by", "without"):
                pending_agg = text
                continue
            if text in KEYWORDS or nxt[0] == "lparen":
                continue
            # A metric name.
            if nxt[0] != "matchers":
                problems.append(f"{text} has no label matchers (needs job and instance filters)")
            else:
                try:
                    matchers = parse_matchers(nxt[1])
                except ValueError as err:
                    problems.append(str(err))
                    matchers = []
                for label, var in REQUIRED_FILTERS.items():
                    ok = any(
                        name == label and op == "=~" and value in (f"${var}", f"${{{var}}}")
                        for name, op, value in matchers
                    )
                    if not ok:
                        problems.append(f'{text} does not filter {label}=~"${var}"')
            if text.endswith(COUNTER_SUFFIXES):
                func = stack[-1] if stack else ""
                if func not in RATE_FUNCTIONS:
                    problems.append(f"{text} is a counter series used outside rate()/increase()")
        elif kind == "range":
            func = stack[-1] if stack else ""
            if func in RATE_FUNCTIONS and text.replace(" ", "") != "[$__rate_interval]":
                problems.append(f"{func}() uses {text} instead of [$__rate_interval]")
    if stack:
        problems.append("unbalanced parentheses")
    return problems


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def lint_dashboard(path):
    """Every problem in a dashboard file, as human-readable lines."""
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as err:
        return [f"{path}: cannot read dashboard: {err}"]
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion is {dash.get('schemaVersion')!r}, expected >= 36")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append('variable "datasource" missing or not {type: datasource, query: prometheus}')
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v:
            problems.append(f'variable "{name}" missing')
            continue
        if v.get("type") != "query":
            problems.append(f'variable "{name}" is not a query variable')
        if v.get("multi") is not True or v.get("includeAll") is not True:
            problems.append(f'variable "{name}" must have multi and includeAll set')
        if (v.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f'variable "{name}" does not use the ${{datasource}} variable')
    inst_query = variable_query(variables.get("instance") or {})
    if "$job" not in inst_query:
        problems.append('variable "instance" does not depend on $job')

    seen_ids = set()
    exprs = 0
    for p in all_panels(dash.get("panels", [])):
        title = p.get("title") or ""
        where = f'panel {p.get("id")} "{title}"'
        if not title.strip():
            problems.append(f"{where}: no title")
        if p.get("id") in seen_ids:
            problems.append(f"{where}: duplicate id")
        seen_ids.add(p.get("id"))
        if "gridPos" not in p:
            problems.append(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        if not (p.get("description") or "").strip():
            problems.append(f"{where}: no description")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            problems.append(f"{where}: no fieldConfig.defaults.unit")
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        for t in targets:
            expr = t.get("expr") or ""
            twhere = f'{where} query {t.get("refId")}'
            if not expr.strip():
                problems.append(f"{twhere}: empty expr")
                continue
            exprs += 1
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                problems.append(f"{twhere}: datasource is not ${{datasource}}")
            for problem in lint_expr(expr):
                problems.append(f"{twhere}: {problem}")
    if exprs == 0:
        problems.append("dashboard has no queries")
    return problems


def variable_query(v):
    q = v.get("query", "")
    if isinstance(q, dict):
        q = q.get("query", "")
    return q or v.get("definition", "")


def dashboard_exprs(dash):
    for p in all_panels(dash.get("panels", [])):
        for t in p.get("targets") or []:
            if t.get("expr"):
                yield f'panel {p.get("id")} "{p.get("title")}" query {t.get("refId")}', t["expr"]


def promql_regex_escape(value):
    """Escape a value for use inside a PromQL double-quoted regex, as Grafana does."""
    return re.sub(r"([\\.+*?^$()\[\]{}|])", r"\\\\\1", value)


def substitute(expr, values):
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]); unknown ones raise KeyError."""

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(name)
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def query(prom, expr):
    """(ok, result or error message) for an instant query."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = http_json(url)
    except urllib.error.HTTPError as err:
        try:
            body = json.load(err)
        except ValueError:
            return False, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return False, f"query failed: {err}"
    if body.get("status") != "success":
        return False, f'{body.get("errorType")}: {body.get("error")}'
    return True, body["data"]


def wait_for(what, deadline, check, interval=0.5):
    """Poll check() until it returns a truthy value or the deadline passes."""
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = err
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


def scrape_count(prom, job, instance):
    ok, data = query(prom, f'count_over_time(up{{job="{job}", instance="{instance}"}}[10m])')
    if ok and data["result"]:
        return int(float(data["result"][0]["value"][1]))
    return 0


def live(args):
    prom = args.prom.rstrip("/")
    deadline = time.monotonic() + args.timeout
    failures, notes = [], []

    def up():
        ok, data = query(prom, f'up{{job="{args.job}", instance="{args.instance}"}}')
        return ok and data["result"] and data["result"][0]["value"][1] == "1"

    def ready():
        with urllib.request.urlopen(f"{prom}/-/ready", timeout=5) as resp:
            return resp.status == 200

    wait_for("Prometheus to be ready", deadline, ready)
    try:
        wait_for(f"target {args.instance} (job {args.job}) to be up", deadline, up)
    except TimeoutError as err:
        targets = ""
        try:
            targets = "; ".join(
                f'{t["scrapeUrl"]}: {t["health"]} {t["lastError"]}'
                for t in http_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
            )
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        print(f"FAIL: {err}\n  targets: {targets}", file=sys.stderr)
        return 1
    if args.run:
        import subprocess

        print(f"Running scenario: {args.run}", file=sys.stderr)
        started = time.monotonic()
        try:
            rc = subprocess.run(["bash", "-c", args.run], timeout=args.run_timeout).returncode
            if rc != 0:
                failures.append(f"scenario command exited {rc}: {args.run}")
        except subprocess.TimeoutExpired:
            failures.append(f"scenario command killed after {args.run_timeout:g}s: {args.run}")
        print(f"Scenario took {time.monotonic() - started:.1f}s.", file=sys.stderr)
        # The waits after the scenario get their own bound.
        deadline = time.monotonic() + args.timeout
    # Enough samples for rate() over the substituted interval to have two points.
    start = scrape_count(prom, args.job, args.instance)
    wait_for(
        f"{args.min_scrapes} more scrapes of {args.instance}",
        deadline,
        lambda: scrape_count(prom, args.job, args.instance) >= start + args.min_scrapes,
    )

    with open(args.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    values = {
        "job": promql_regex_escape(args.job),
        "instance": promql_regex_escape(args.instance),
        "__rate_interval": args.rate_interval,
        "__interval": "5s",
        "__interval_ms": "5000",
        "__range": "5m",
        "__range_s": "300",
        "__range_ms": "300000",
        "datasource": "prometheus",
    }

    # Variable queries: label_values(selector, label) must list our job and instance.
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for name in ("job", "instance"):
        q = variable_query(variables.get(name) or {})
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            failures.append(f'variable "{name}": cannot check query {q!r}')
            continue
        selector = substitute(m.group(1), values)
        url = f"{prom}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode({"match[]": selector})
        try:
            got = http_json(url).get("data") or []
        except (urllib.error.URLError, OSError, ValueError) as err:
            failures.append(f'variable "{name}": {q} failed: {err}')
            continue
        want = args.job if name == "job" else args.instance
        if want not in got:
            failures.append(f'variable "{name}": {q} lists {got}, not {want!r}')

    checked = 0
    for where, expr in dashboard_exprs(dash):
        checked += 1
        try:
            concrete = substitute(expr, values)
        except KeyError as err:
            failures.append(f"{where}: unknown variable ${err.args[0]} in {expr}")
            continue
        ok, data = query(prom, concrete)
        if not ok:
            failures.append(f"{where}: rejected: {data}\n      {concrete}")
            continue
        # "Returns data" means a non-empty result. A histogram_quantile or a ratio over a window
        # with no observations is NaN: the series exist and the query is right, only nothing
        # happened in the window, so NaN is data unless --fail-on-nan is given.
        if data["resultType"] in ("vector", "matrix"):
            result = data["result"]
            if not result:
                failures.append(f"{where}: returned no data\n      {concrete}")
                continue
            nan = [r["metric"] for r in result if r.get("value", [0, ""])[1] == "NaN"]
            if nan and len(nan) == len(result):
                msg = f"{where}: every series is NaN (no events in the last {args.rate_interval})"
                (failures if args.fail_on_nan else notes).append(msg)

    # Expectations: each must be accepted and return at least one sample (write them with a
    # comparison, e.g. `increase(x[5m]) > 0`, so "did not happen" is an empty result).
    for expr in args.expect or []:
        try:
            concrete = substitute(expr, values)
        except KeyError as err:
            failures.append(f"expect: unknown variable ${err.args[0]} in {expr}")
            continue
        ok, data = query(prom, concrete)
        if not ok:
            failures.append(f"expect: rejected: {data}\n      {concrete}")
        elif data["resultType"] in ("vector", "matrix") and not data["result"]:
            failures.append(f"expect: no sample satisfies\n      {concrete}")

    # Every rule of the rules file is loaded and has evaluated without error.
    expected = rule_names(args.rules)

    def rules_evaluated():
        groups = http_json(f"{prom}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if len(rules) < len(expected) or any(r.get("health") == "unknown" for r in rules):
            return None
        return rules

    try:
        rules = wait_for("every alert rule to be evaluated", deadline, rules_evaluated)
    except TimeoutError as err:
        failures.append(str(err))
        rules = []
    loaded = {r["name"]: r for r in rules}
    for name in expected:
        r = loaded.get(name)
        if r is None:
            failures.append(f"rule {name}: not loaded by Prometheus")
        elif r.get("health") != "ok":
            failures.append(f'rule {name}: health {r.get("health")}: {r.get("lastError")}')
        elif r.get("state") == "firing":
            notes.append(f"rule {name}: firing now")

    # Metrics reaper exports that no panel shows (a hint, not a failure).
    try:
        names = http_json(
            f"{prom}/api/v1/label/__name__/values?"
            + urllib.parse.urlencode({"match[]": f'{{job="{args.job}", __name__=~"reaper_.*"}}'})
        )["data"]
        shown = " ".join(expr for _, expr in dashboard_exprs(dash))
        for n in names:
            base = re.sub(r"_(bucket|count|sum)$", "", n)
            if base not in shown and n != "reaper_build_info":
                notes.append(f"metric {n} is not on the dashboard")
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        pass

    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"Live: {checked} dashboard expressions, {len(args.expect or [])} expectations and "
        f"{len(expected)} rules checked "
        f"against {args.instance}.",
        file=sys.stderr,
    )
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


def rule_names(path):
    """Alert and recording rule names in a rules file, without needing a YAML library."""
    with open(path, encoding="utf-8") as f:
        return re.findall(r"^\s*-?\s*(?:alert|record):\s*([A-Za-z_:][\w:]*)\s*$", f.read(), re.M)


def target(url):
    u = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not u.hostname or not u.port:
        raise SystemExit(f"cannot take host:port from {url!r}")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    path = u.path.rstrip("/")
    if not path.endswith("/metrics"):
        path += "/metrics"
    print(u.scheme or "http", f"{host}:{u.port}", path)
    return 0


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            sys.stdout.write(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as err:
        print(f"cannot fetch {url}: {err}", file=sys.stderr)
        return 1
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("lint").add_argument("dashboard")
    sub.add_parser("target").add_argument("url")
    sub.add_parser("fetch").add_argument("url")
    sub.add_parser("free-port")
    lv = sub.add_parser("live")
    lv.add_argument("--prom", required=True, help="Prometheus base URL")
    lv.add_argument("--dashboard", required=True)
    lv.add_argument("--rules", required=True)
    lv.add_argument("--job", default="reaper")
    lv.add_argument("--instance", required=True, help="the target's instance label (host:port)")
    lv.add_argument("--rate-interval", default="1m", help="substituted for $__rate_interval")
    lv.add_argument("--min-scrapes", type=int, default=5)
    lv.add_argument("--timeout", type=float, default=90, help="overall bound on waiting, seconds")
    lv.add_argument("--fail-on-nan", action="store_true")
    lv.add_argument("--run", help="scenario command to run once the target is scraped")
    lv.add_argument("--run-timeout", type=float, default=600, help="bound on the scenario, seconds")
    lv.add_argument(
        "--expect",
        action="append",
        help="PromQL (dashboard variables allowed) that must return data after the scenario",
    )
    args = ap.parse_args()
    if args.cmd == "lint":
        problems = lint_dashboard(args.dashboard)
        for p in problems:
            print(f"FAIL: {args.dashboard}: {p}", file=sys.stderr)
        return 1 if problems else 0
    if args.cmd == "target":
        return target(args.url)
    if args.cmd == "fetch":
        return fetch(args.url)
    if args.cmd == "free-port":
        return free_port()
    try:
        return live(args)
    except TimeoutError as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
