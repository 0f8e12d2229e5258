"""The report: one-line summaries while the run goes, and docs/benchmarks.md with plots.

Every figure of a target is shown beside its ratio to the asyncio floor of the
same run (``xfloor``): the machines are shared and noisy, ratios travel better
than absolute figures. :func:`checks` says which of the project's targets hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

Results = dict[str, Any]
FLOOR = "asyncio"
PEER = "frontail"
PINES = ("pine", "pine-deflate")


def _get(results: Results, target: str, *keys: str) -> Any:
    value: Any = results["targets"].get(target, {})
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(value: Any, digits: int = 1) -> str:
    num = _num(value)
    if num is None:
        return "—" if value is None else str(value)
    if abs(num) >= 100:
        return f"{num:,.0f}"
    return f"{num:.{digits}f}"


def _ratio(value: Any, floor: Any) -> str:
    a, b = _num(value), _num(floor)
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def brief(name: str, result: Results) -> str:
    """One line for the console while a run goes."""
    if "error" in result:
        return f"ERROR {result['error']}"
    if name in ("latency", "filesize"):
        return (f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms,"
                f" lost {result['lost']}")
    if name == "burst":
        return (f"{result['mb_s']} MB/s, complete {result['complete']},"
                f" in order {result['in_order']}")
    if name == "rotation":
        return f"mv {result['rename_ms']} ms, truncate {result['truncate_ms']} ms"
    if name == "fanout":
        return "; ".join(f"N={n}: last {r['last_ms']} ms, {r['rss_mb']} MB, idle "
                         f"{r['idle_cpu_ms']} ms" for n, r in result.items() if "skipped" not in r)
    if name == "backlog":
        return (f"{result['connected']} connected, all have their {result['lines']} lines in "
                f"{result['last_ms']} ms (median {result['median_client_ms']}), wrong "
                f"{result['wrong_backlog']}; a line after: {result['line_last_ms']} ms, exact "
                f"{result['exact']}; {result['rss_mb']} MB, {result['threads']} threads")
    if name == "watchers":
        return (f"{result['connected']} connected in {result['connect_s']} s, never followed "
                f"{result['never_followed']}; {result['rss_mb']} MB, {result['threads']} threads,"
                f" idle {result['idle_cpu_ms_sched']} ms; a line: last {result['last_ms']} ms;"
                f" every line once, in order: {result['exact']}, missing {result['missing']}")
    if name == "capacity":
        return "; ".join(f"{k}: {v['msgs_s']} msg/s, {v['mb_s']} MB/s" for k, v in result.items())
    return ""


def _nmax(results: Results) -> str:
    return str(max(results["plan"]["fanout"]))


def checks(results: Results, target: str) -> list[tuple[str, bool | None, str]]:
    """The targets for ``target``: (what, holds, the figures)."""
    out: list[tuple[str, bool | None, str]] = []

    def check(what: str, value: Any, bound: Any, factor: float = 1.0,
              strict: bool = False) -> None:
        v, b = _num(value), _num(bound)
        if v is None or b is None:
            out.append((what, None, f"{_fmt(value, 2)} vs {_fmt(bound, 2)}"))
            return
        limit = b * factor
        holds = v < limit if strict else v <= limit
        out.append((what, holds, f"{_fmt(v, 2)} vs {_fmt(limit, 2)}"))

    lat = ("latency", "p50_ms")
    check("latency p50 ≤ 1.5x asyncio floor (ms)", _get(results, target, *lat),
          _get(results, FLOOR, *lat), 1.5)
    check("latency p50 < frontail (ms)", _get(results, target, *lat),
          _get(results, "frontail", *lat), strict=True)
    check("latency p99 ≤ 2x asyncio floor (ms)", _get(results, target, "latency", "p99_ms"),
          _get(results, FLOOR, "latency", "p99_ms"), 2)
    mine, floor = _num(_get(results, target, "burst", "mb_s")), _num(
        _get(results, FLOOR, "burst", "mb_s"))
    complete = _get(results, target, "burst", "complete") and _get(
        results, target, "burst", "in_order")
    burst = "burst ≥ ½ asyncio floor's (uncompressed, MB/s), every byte in order"
    if mine is None or floor is None:
        out.append((burst, None, "—"))
    else:
        out.append((burst,
                    bool(mine >= floor / 2 and complete),
                    f"{_fmt(mine)} vs {_fmt(floor / 2)}, complete and in order: {complete}"))
    n = _nmax(results)
    check(f"one line to {n} clients: last ≤ frontail's (ms)",
          _get(results, target, "fanout", n, "last_ms"),
          _get(results, "frontail", "fanout", n, "last_ms"))
    check(f"RSS with {n} clients ≤ 1.5x frontail's (MB)",
          _get(results, target, "fanout", n, "rss_mb"),
          _get(results, "frontail", "fanout", n, "rss_mb"), 1.5)
    # schedstat (ns) rather than stat (10 ms ticks): one tick is the whole budget
    check(f"idle CPU over 10 s with {n} clients < 10 ms (schedstat)",
          _get(results, target, "fanout", n, "idle_cpu_ms_sched"), 10.0, strict=True)
    for key, what in (("rename_ms", "rotation (mv; touch)"), ("truncate_ms", "truncation")):
        check(f"{what} ≤ 2x asyncio floor (ms)", _get(results, target, "rotation", key),
              _get(results, FLOOR, "rotation", key), 2)
    small = _num(_get(results, target, "latency", "p50_ms"))
    big = _num(_get(results, target, "filesize", "p50_ms"))
    if small is None or big is None:
        out.append(("append to 10 GiB as fast as to a small file", None, "—"))
    else:
        # "as fast": within a quarter, or half a millisecond (the noise of this machine)
        out.append(("append to 10 GiB as fast as to a small file (p50 ms)",
                    big <= max(small * 1.25, small + 0.5), f"{_fmt(big, 2)} vs {_fmt(small, 2)}"))
    if not _ran_main(results):
        out = []
    return out + _crowd_checks(results, target)


def _crowd_checks(results: Results, target: str) -> list[tuple[str, bool | None, str]]:
    """The crowds' targets: no slower than frontail to a thousand backlogs; ten thousand
    watchers with every line delivered (RSS and idle CPU beside it)."""
    out: list[tuple[str, bool | None, str]] = []
    mine = _get(results, target, "backlog")
    if isinstance(mine, dict) and "skipped" not in mine:
        n = mine.get("clients", 0)
        k = mine.get("lines", 10)
        what = f"{n:,} clients at once, last {k} lines: all have them ≤ frontail"
        a, b = _num(mine.get("last_ms")), _num(_get(results, PEER, "backlog", "last_ms"))
        exact = mine.get("exact") == n and mine.get("connected") == n
        if a is None or b is None:
            out.append((what + " (ms), each exact", None,
                        f"{_fmt(a, 2)} vs {_fmt(b, 2)}, exact: {mine.get('exact')} of {n}"))
        else:
            out.append((what + " (ms), each exact", a <= b and exact,
                        f"{_fmt(a, 2)} vs {_fmt(b, 2)}, exact: {mine.get('exact')} of {n}"))
    mine = _get(results, target, "watchers")
    if isinstance(mine, dict) and "skipped" not in mine:
        n = mine.get("clients", 0)
        what = f"{n:,} idle watchers on one worker: every line to every one, once, in order"
        if "error" in mine:
            out.append((what, False, str(mine["error"])))
        else:
            holds = (mine["connected"] == n and mine["exact"] == n
                     and mine["never_followed"] == 0 and mine["missing"] == 0)
            out.append((what, holds,
                        f"{mine['exact']:,} of {n:,} clients had all {mine['appends']} lines; "
                        f"RSS {_fmt(mine['rss_mb'])} MB, {mine['threads']:,} threads, idle CPU "
                        f"{_fmt(mine['idle_cpu_ms_sched'], 2)} ms / 10 s (schedstat)"))
    return out


def _table(columns: list[str], rows: list[tuple[str, dict[str, Any]]],
           cells: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """A Markdown table: a row per target, its cells from ``cells``; a skipped or failed
    target's row says why across the line (the column count is the header's)."""
    out = ["| " + " | ".join(columns) + " |", "|---" + "|--:" * (len(columns) - 1) + "|"]
    for label, r in rows:
        if "skipped" in r or "error" in r:
            out.append(f"| {label} | {r.get('skipped') or r.get('error')} |"
                       + "|" * (len(columns) - 2))
        else:
            out.append("| " + " | ".join([label, *cells(r)]) + " |")
    return out


def _crowd_tables(results: Results) -> list[str]:
    lines: list[str] = []
    add = lines.append
    names = _labels(results)
    plan = results["plan"]
    rows = [(label, r) for name, label in names if (r := _get(results, name, "backlog"))]
    if rows:
        n, k = plan.get("backlog_clients", 1000), plan.get("backlog_lines", 10)
        add(f"\n### Backlog: {n:,} clients connecting at once, each for the last {k} lines\n")
        add(f"A file of 10,000 lines; every client connects at once (as fast as the client"
            f" opens sockets) and asks for the last {k} lines. *All have them*: from the first"
            f" connect until the last client holds its {k} lines (*median client*: until the"
            f" median one does); *wrong*: clients whose {k} lines were not the file's last {k}."
            f" Then one line appended: until the last client has it; *exact*: clients that got"
            f" exactly the {k} lines, then that line, nothing else. RSS and threads with every"
            f" client connected; *CPU / client*: the server's CPU time (its threads' run time)"
            f" from the first connect until the last client has its lines, per client;"
            f" *switches / client*: its threads' context switches meanwhile."
            + (f" The case runs {rounds} times, the targets taking turns in each round; the"
               " round with the median *all have them* is shown, *rounds* lists every"
               " round's; *wrong* and *exact* are the worst rounds'."
               if (rounds := plan.get("backlog_rounds", 1)) > 1 else "") + "\n")
        lines += _table(
            ["target", "connected", "all have them ms", "median client ms", "xfloor", "xfrontail",
             "wrong", "a line after: last ms", "exact", "RSS MB", "threads", "CPU / client ms",
             "switches / client", "rounds ms"], rows,
            lambda r: [f"{r['connected']:,}", _fmt(r["last_ms"], 2),
                       _fmt(r["median_client_ms"], 2),
                       _ratio(r["last_ms"], _get(results, FLOOR, "backlog", "last_ms")),
                       _ratio(r["last_ms"], _get(results, PEER, "backlog", "last_ms")),
                       str(r["wrong_backlog"]), _fmt(r["line_last_ms"], 2), f"{r['exact']:,}",
                       _fmt(r["rss_mb"]), f"{r['threads']:,}",
                       _fmt(r.get("cpu_ms_per_client"), 2), _fmt(r.get("switches_per_client")),
                       ", ".join(_fmt(x, 0) for x in r.get("rounds_last_ms", [r["last_ms"]]))])
    rows = [(label, r) for name, label in names if (r := _get(results, name, "watchers"))]
    if rows:
        n = plan.get("watchers", 10_000)
        k, rate = plan.get("watch_appends", 20), plan.get("watch_rate", 4.0)
        add(f"\n### Idle watchers: {n:,} clients of one file, one server process\n")
        add("flask-pine-ws under `flask_pine_ws.worker.ThreadWorker` with one worker and"
            f" {n + 50:,} threads."
            " Once every client has a probe line (each follows the file): the server's RSS"
            f" summed over its processes, its threads, its CPU over {plan['idle']:g} s with"
            f" nothing written (scaled to 10 s); then {k} lines appended, {rate:g} a second."
            " *Not following*: clients without a probe line after 60 s of probing; *busy"
            " after*: how long the server kept working once they had it (idle is measured"
            " from then). *Last*: until the last client has a line (median over the lines;"
            " *max*: the slowest line); *exact*: clients that got every line once, in order;"
            " *missing*: lines (of all clients) not there 30 s after the last append.\n")
        lines += _table(
            ["target", "connected", "connect s", "not following", "RSS MB", "processes",
             "threads", "busy after s", "idle CPU ms / 10 s (stat)", "(schedstat)", "last ms",
             "max ms", "median client ms", "xfloor", "exact", "missing"], rows,
            lambda r: [f"{r['connected']:,}", _fmt(r["connect_s"]), f"{r['never_followed']:,}",
                       _fmt(r["rss_mb"]), str(r["processes"]), f"{r['threads']:,}",
                       _fmt(r["settle_s"]), _fmt(r["idle_cpu_ms"]),
                       _fmt(r["idle_cpu_ms_sched"], 2), _fmt(r["last_ms"], 2),
                       _fmt(r["last_max_ms"], 2), _fmt(r["median_client_ms"], 2),
                       _ratio(r["last_ms"], _get(results, FLOOR, "watchers", "last_ms")),
                       f"{r['exact']:,}", f"{r['missing']:,}"])
    return lines


def _labels(results: Results) -> list[tuple[str, str]]:
    return [(name, res.get("label", name)) for name, res in results["targets"].items()]


def _main_tables(results: Results) -> list[str]:
    """Latency, burst, fan-out, rotation, file size: the one-file measurements."""
    lines: list[str] = []
    add = lines.append
    names = _labels(results)
    plan = results["plan"]
    err = {name: _get(results, name, "error") for name, _ in names}

    add(f"### Latency ({plan['rate']:.0f} lines/s of 100 bytes for {plan['duration']:g} s,"
        " one client)\n")
    add("| target | p50 ms | p90 ms | p99 ms | max ms | lost | p50 xfloor | p99 xfloor |")
    add("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, label in names:
        r = _get(results, name, "latency") or {}
        if not r and not err[name]:
            continue  # not measured in this run (--cases)
        if "error" in r or not r:
            add(f"| {label} | {r.get('error', err[name])} |||||||")
            continue
        add(f"| {label} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p90_ms'], 2)} | "
            f"{_fmt(r['p99_ms'], 2)} | {_fmt(r['max_ms'], 2)} | {r['lost']} | "
            f"{_ratio(r['p50_ms'], _get(results, FLOOR, 'latency', 'p50_ms'))} | "
            f"{_ratio(r['p99_ms'], _get(results, FLOOR, 'latency', 'p99_ms'))} |")

    add(f"\n### Burst ({plan['burst_bytes'] / 1e6:g} MB of 100-byte lines, written at once)\n")
    add("| target | MB/s | seconds | bytes received | complete, in order | xfloor |")
    add("|---|--:|--:|--:|---|--:|")
    for name, label in names:
        r = _get(results, name, "burst") or {}
        if not r and not err[name]:
            continue  # not measured in this run (--cases)
        if "error" in r or not r:
            add(f"| {label} | {r.get('error', err[name])} |||||")
            continue
        ok = "yes" if r["complete"] and r["in_order"] else (
            f"no (complete {r['complete']}, in order {r['in_order']})")
        add(f"| {label} | {_fmt(r['mb_s'])} | {_fmt(r['seconds'], 2)} | {r['received']:,} | "
            f"{ok} | {_ratio(r['mb_s'], _get(results, FLOOR, 'burst', 'mb_s'))} |")

    add("\n### Fan-out (one line appended, N clients on the file)\n")
    add("Time until the last client has the line (median of "
        f"{plan['appends']} appends), the server's RSS summed over its processes, and its CPU"
        f" over {plan['idle']:g} s of idle (scaled to 10 s; from `/proc/<pid>/stat`, 10 ms"
        " ticks, and from the threads' `schedstat`, in ns). Idle begins once the server is"
        " quiet: *busy after* is how long it kept working (over 10 ms per half second) after"
        " every client had the last probe line.\n")
    add("| target | N | last ms | median client ms | xfloor | RSS MB | processes | threads |"
        " busy after s | idle CPU ms / 10 s (stat) | (schedstat) | missed |")
    add("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, label in names:
        fan = _get(results, name, "fanout") or {}
        if not fan and not err[name]:
            continue
        if "error" in fan or not fan:
            add(f"| {label} | {fan.get('error', err[name])} |||||||||||")
            continue
        for n, r in fan.items():
            if "skipped" in r:
                add(f"| {label} | {n} | not run: {r['skipped']} ||||||||||")
                continue
            missed = r["missing"] + r["failed_connects"] + r["never_followed"]
            add(f"| {label} | {n} | {_fmt(r['last_ms'], 2)} | {_fmt(r['median_client_ms'], 2)} | "
                f"{_ratio(r['last_ms'], _get(results, FLOOR, 'fanout', n, 'last_ms'))} | "
                f"{_fmt(r['rss_mb'])} | {r['processes']} | {r['threads']} | "
                f"{_fmt(r.get('settle_s'))} | "
                f"{_fmt(r['idle_cpu_ms'])} | {_fmt(r['idle_cpu_ms_sched'], 2)} | {missed} |")

    add(f"\n### Rotation and truncation (median of {plan['rotations']})\n")
    add("From the `mv` (or the truncation) to the client holding the first line of the new"
        " file.\n")
    add("| target | mv log log.1; touch log: ms | xfloor | truncate: ms | xfloor | lost |")
    add("|---|--:|--:|--:|--:|--:|")
    for name, label in names:
        r = _get(results, name, "rotation") or {}
        if not r and not err[name]:
            continue  # not measured in this run (--cases)
        if "error" in r or not r:
            add(f"| {label} | {r.get('error', err[name])} |||||")
            continue
        add(f"| {label} | {_fmt(r['rename_ms'], 2)} | "
            f"{_ratio(r['rename_ms'], _get(results, FLOOR, 'rotation', 'rename_ms'))} | "
            f"{_fmt(r['truncate_ms'], 2)} | "
            f"{_ratio(r['truncate_ms'], _get(results, FLOOR, 'rotation', 'truncate_ms'))} | "
            f"{r['lost']} |")

    add(f"\n### File size (latency on a sparse 10 GiB file, {plan['filesize_duration']:g} s,"
        " against the small file above)\n")
    add("| target | small p50 ms | 10 GiB p50 ms | 10 GiB p99 ms | 10 GiB / small | lost |")
    add("|---|--:|--:|--:|--:|--:|")
    for name, label in names:
        r = _get(results, name, "filesize") or {}
        if not r and not err[name]:
            continue  # not measured in this run (--cases)
        if "error" in r or not r:
            add(f"| {label} | {r.get('error', err[name])} |||||")
            continue
        small = _get(results, name, "latency", "p50_ms")
        add(f"| {label} | {_fmt(small, 2)} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p99_ms'], 2)} | "
            f"{_ratio(r['p50_ms'], small)} | {r['lost']} |")
    return lines


def _ran_main(results: Results) -> bool:
    """Whether the run measured the one-file cases (not only the crowds, ``--cases``)."""
    return "main" in results["plan"].get("cases", ["main"])


def tables(results: Results) -> str:
    lines: list[str] = _main_tables(results) if _ran_main(results) else []
    add = lines.append
    lines += _crowd_tables(results)

    cap = results.get("capacity", {})
    if cap and "error" not in cap:
        add("\n### The client's own capacity (against the asyncio floor's `/flood`)\n")
        add("| messages | size | msg/s | MB/s |")
        add("|--:|--:|--:|--:|")
        for r in cap.values():
            add(f"| {r['messages']:,} | {r['size']:,} | {r['msgs_s']:,} | {_fmt(r['mb_s'])} |")

    return "\n".join(lines) + "\n"


def targets_table(results: Results) -> str:
    """One table of the project's targets: a row per target, a column per flask-pine-ws
    variant, each cell whether it holds and the figures against the bound."""
    found = {pine: checks(results, pine) for pine in PINES if pine in results["targets"]}
    found = {pine: rows for pine, rows in found.items() if rows}
    if not found:
        return ""
    whats = list(dict.fromkeys(what for rows in found.values() for what, _, _ in rows))
    cells = {pine: {what: (holds, figures) for what, holds, figures in rows}
             for pine, rows in found.items()}
    labels = [results["targets"][pine].get("label", pine) for pine in found]
    lines = ["| target | " + " | ".join(labels) + " |", "|---" + "|---" * len(labels) + "|"]
    for what in whats:
        row = []
        for pine in found:
            holds, figures = cells[pine].get(what, (None, "—"))
            mark = "n/a" if holds is None else "holds" if holds else "**misses**"
            row.append(f"{mark}: {figures}")
        lines.append(f"| {what} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary(results: Results) -> str:
    out = []
    for pine in PINES:
        found = checks(results, pine) if pine in results["targets"] else []
        if found:
            out.append(f"{pine}:")
            for what, holds, figures in found:
                mark = "n/a " if holds is None else "ok  " if holds else "MISS"
                out.append(f"  {mark} {what}: {figures}")
    return "\n".join(out)


def plots(results: Results, img: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, label in _labels(results):
        samples = sorted(_get(results, name, "latency", "samples_ms") or [])
        if samples:
            ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("write to receive (ms, log scale)")
    ax.set_ylabel("fraction of lines")
    ax.set_title("Latency: 100-byte lines at 200/s, one client")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=11)
    fig.tight_layout()
    made.append(img / "bench-latency.png")
    fig.savefig(made[-1], dpi=150)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, label in _labels(results):
        fan = _get(results, name, "fanout") or {}
        if not fan or "error" in fan:
            continue
        levels = [n for n in fan if "skipped" not in fan[n] and fan[n]["last_ms"] is not None]
        ns = [int(n) for n in levels]
        left.plot(ns, [fan[n]["last_ms"] for n in levels], marker="o", label=label)
        right.plot(ns, [fan[n]["rss_mb"] for n in levels], marker="o", label=label)
    for ax, title, unit in ((left, "one line: the last client has it", "ms"),
                            (right, "server RSS, summed over its processes", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients (N)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=11)
    fig.tight_layout()
    made.append(img / "bench-fanout.png")
    fig.savefig(made[-1], dpi=150)
    plt.close(fig)
    return made


def page(results: Results) -> str:
    """docs/benchmarks.md for one run's results: what is measured against what, how to run
    it, the run's figures, and what limits them (bench/limits.md, written by hand)."""
    m = results["machine"]
    plan = results["plan"]
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    # a case taken from another run of the same code (written into the results by hand)
    also = f"\n- Also: {results['also']}." if results.get("also") else ""
    backlog_clients = plan.get("backlog_clients", 1000)
    backlog_lines = plan.get("backlog_lines", 10)
    watchers = plan.get("watchers", 10_000)
    text = f"""# Benchmarks

How fast flask-pine-ws streams a growing file to WebSocket clients, against a baseline measured
in the same run on the same machine: the *floor*, a minimal server that does nothing but read
the file's new bytes and write them to every socket (what no server can beat), and two peers
that stream a log to a browser. A case that is repeated shows its median (each table says of
how many), and figures are shown beside their ratio to the asyncio floor of the same run
(*xfloor*) or to frontail (*xfrontail*): the machine is shared and noisy, and ratios travel
better than absolute figures.

## How to run it

<!-- not run: installs software and runs for minutes; the test suite runs bench/run.py --smoke -->
```sh
bash bench/setup.sh            # once: websocketd, frontail, websockets and matplotlib
python bench/run.py            # the full run; writes this page and its plots
python bench/run.py --quick    # a few minutes, smaller crowds; leaves this page as it is
```

[bench/README.md](../bench/README.md) has every option (`--targets`, `--cases`, `--fanout`,
the crowds' sizes) and how each measurement is made.

## What is measured

- **latency**: from `write()` to the client, one client,
  {plan['rate']:.0f} lines a second of 100 bytes for {plan['duration']:g} s;
- **burst**: until the client holds the last byte (checked byte for byte),
  {plan['burst_bytes'] / 1e6:g} MB of lines written at once;
- **fan-out**: one line appended with N clients on the file: until the last has it; the
  server's memory and idle CPU;
- **rotation and truncation**: from the `mv` (or the truncation) until the client holds the
  new file's first line;
- **file size**: latency on a sparse 10 GiB file against the small one;
- **backlog**: clients connecting at once, each for the file's last lines (every client's
  lines checked): {backlog_clients:,} clients, {backlog_lines} lines each;
- **idle watchers**: clients following one file, {watchers:,} of them: memory, threads and
  idle CPU, then lines appended, each checked to reach every client once and in order.

Against:

- **floor: asyncio + inotify** (`bench/floor_server.py`), the baseline of every ratio: the
  `websockets` package and one raw inotify watch; one read of the new bytes, broadcast to every
  client;
- **floor: tail -F into a pipe**: `tail -n0 -F FILE` into a pipe read by the client, one
  `tail` per client, no network;
- **websocketd + tail -F**: websocketd runs `tail -n0 -F FILE` per connection, one message per
  line;
- **frontail**: one `tail -F` for all, one socket.io 2 event per line;
- **flask-pine-ws** under `flask_pine_ws.worker.ThreadWorker` (the worker the deployment notes
  recommend), one worker with as many threads as clients plus 50,
  `watch_file(path, conn, lines=0)`, compression off, then on (permessage-deflate).

Pings are off in every target. The client is one asyncio process on the `websockets`
package's sans-I/O protocol, offering permessage-deflate as a browser does; its own capacity is
measured too. Each client first waits until it has seen a probe line, so that it really follows
the file.

## The run shown

- Command: `{results['command']}` ({results['seconds']} s).{also}
- Date: {m['date']}; flask-pine-ws at `{m['flask_pine_ws']}`.
- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']},
  shared with other work while it ran; `fs.inotify.max_user_instances` =
  {m['inotify_max_user_instances']}.
- Python {m['python']}: {pkgs}.
- websocketd: {m['websocketd']}; node {m['node']}, frontail {m['frontail']}; {m['tail']}.

## Summary: the project's targets

`python bench/run.py` prints this check at its end.

{targets_table(results)}
## Results

{tables(results)}
## Plots

![Latency distribution](img/bench-latency.png)

![Fan-out](img/bench-fanout.png)
"""
    limits = Path(__file__).with_name("limits.md")
    if limits.exists():
        # written by hand: what bounds the figures (the longer analysis is bench/analysis.md)
        text += "\n" + limits.read_text()
    viewer = Path(__file__).with_name("viewer.md")
    if viewer.exists():
        # bench/viewer.py's figures: the viewer over a large file
        text += "\n" + viewer.read_text()
    slowlink = Path(__file__).with_name("slowlink.md")
    if slowlink.exists():
        # bench/slowlink.py's figures: a backlog over 10 Mbit/s and 50 ms
        text += "\n" + slowlink.read_text()
    return text


def write_docs(results: Results, docs: Path) -> Path:
    """docs/benchmarks.md and its plots, from one run's results."""
    plots(results, docs / "img")
    path = docs / "benchmarks.md"
    path.write_text(page(results))
    return path
