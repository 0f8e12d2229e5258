"""Run the Autobahn|Testsuite fuzzing client against the extension's echo route and a baseline.

Two servers under the same gunicorn (gthread, one worker, 127.0.0.1 only):

- ``flask-pine-ws``: the ``/echo`` route of ``tests/apps/basic.py``
  (``conn.send(conn.receive())``), with pings off and a 64 MiB message limit
  (the suite sends messages of up to 16 MiB; the default 1 MiB limit would
  answer those with 1009, by design);
- ``simple-websocket``: ``scripts/autobahn/plain_app.py``, the same echo on
  plain simple-websocket (what flask-sock does), no limit.

``wstest -m fuzzingclient`` (autobahntestsuite 0.8.2 from PyPI) runs every
case against both and writes its HTML and JSON reports; this script prints
a table of the outcomes per case group, and every case where the extension
does worse than the baseline. The suite is Python 2 only (the PyPI release
25.10.1 installs on Python 3 but cannot import), so it needs a Python 2.7
interpreter (``--python2``; pyenv's ``2.7.18`` is found by itself); it is
installed once into ``.autobahn/site`` with that interpreter's pip.

Run from the repository root (about 10 minutes for cases 1-10 on 2 cores; about 12 s a
case for 12 and 13, the permessage-deflate ones)::

    python scripts/autobahn/run.py [--cases '*'] [--exclude '12.*' '13.*']

Cases 12 and 13 (permessage-deflate) are the slow ones.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
from server import Server, gunicorn_argv  # noqa: E402

SUITE = "autobahntestsuite==0.8.2"
#: The outcomes wstest reports, best first (a case's "behavior").
RANK = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
AGENTS = ("flask-pine-ws", "simple-websocket")

_WSTEST = ("import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
           "from autobahntestsuite.wstest import run; run()")


def find_python2(given: str | None) -> str:
    candidates = [given] if given else [
        shutil.which("python2.7"), shutil.which("python2"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python")))]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[0])"],
                                 capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            continue
        if out.stdout.strip() == "2":
            return candidate
    raise SystemExit("wstest needs Python 2.7: pass --python2 /path/to/python2.7")


def install(python2: str, site: Path) -> None:
    if (site / "autobahntestsuite").is_dir():
        return
    print(f"installing {SUITE} into {site} ...", flush=True)
    subprocess.run([python2, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--target", str(site), SUITE], check=True)


def outcomes(report: Path) -> dict[str, dict[str, str]]:
    """agent -> case -> behavior, from wstest's ``index.json``."""
    index = json.loads((report / "index.json").read_text())
    return {agent: {case: result["behavior"] for case, result in cases.items()}
            for agent, cases in index.items()}


def _key(case: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case.split("."))


def table(results: dict[str, dict[str, str]]) -> str:
    """A markdown table: per case group, each agent's counts of every outcome seen."""
    groups: dict[str, dict[str, Counter[str]]] = {}
    for agent in AGENTS:
        for case, behavior in results.get(agent, {}).items():
            group = case.split(".")[0]
            groups.setdefault(group, {a: Counter() for a in AGENTS})[agent][behavior] += 1
    lines = ["| Cases | " + " | ".join(AGENTS) + " |", "| --- |" + " --- |" * len(AGENTS)]

    def cell(counts: Counter[str]) -> str:
        return ", ".join(f"{counts[b]} {b}" for b in RANK if counts[b]) or "-"

    totals = {a: Counter[str]() for a in AGENTS}
    for group in sorted(groups, key=int):
        for agent in AGENTS:
            totals[agent].update(groups[group][agent])
        lines.append(f"| {group}.* | " + " | ".join(cell(groups[group][a]) for a in AGENTS)
                     + " |")
    lines.append("| all | " + " | ".join(cell(totals[a]) for a in AGENTS) + " |")
    return "\n".join(lines)


def worse(results: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    ours, base = results.get(AGENTS[0], {}), results.get(AGENTS[1], {})
    found = [(case, ours[case], base.get(case, "-")) for case in ours
             if base.get(case) in RANK and RANK.index(ours[case]) > RANK.index(base[case])]
    return sorted(found, key=lambda row: _key(row[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python2", help="a Python 2.7 interpreter for wstest")
    parser.add_argument("--dir", type=Path, default=ROOT / ".autobahn",
                        help="where the suite is installed and the reports go")
    parser.add_argument("--cases", nargs="+", default=["*"])
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    python2 = find_python2(args.python2)
    site = args.dir / "site"
    install(python2, site)
    report = args.dir / "reports"
    logs = args.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    pine = Server(gunicorn_argv("basic:app", threads=args.threads),
                  {"PINE_WS_MAX_MESSAGE_SIZE": str(64 * 1024 * 1024), "PINE_WS_PING_INTERVAL": "0"},
                  logs / "flask-pine-ws.log")
    try:
        plain = Server(gunicorn_argv("plain_app:app", threads=args.threads,
                                     extra=["--chdir", str(HERE)]),
                       {}, logs / "simple-websocket.log")
        try:
            spec = {
                "outdir": str(report),
                "servers": [{"agent": AGENTS[0], "url": f"{pine.ws_url}/echo"},
                            {"agent": AGENTS[1], "url": f"{plain.ws_url}/echo"}],
                "cases": args.cases,
                "exclude-cases": args.exclude,
                "exclude-agent-cases": {},
            }
            spec_path = args.dir / "fuzzingclient.json"
            spec_path.write_text(json.dumps(spec, indent=2))
            subprocess.run([python2, "-c", _WSTEST, str(site), "-m", "fuzzingclient",
                            "-s", str(spec_path)], check=True, cwd=args.dir,
                           stdout=open(logs / "wstest.log", "wb"),  # noqa: SIM115
                           stderr=subprocess.STDOUT)
        finally:
            plain.stop()
    finally:
        pine.stop()

    results = outcomes(report)
    print(table(results))
    rows = worse(results)
    print(f"\nCases where {AGENTS[0]} does worse than {AGENTS[1]}: {len(rows)}")
    for case, ours, base in rows:
        print(f"  {case}: {ours} (baseline {base})")
    print(f"\nReports: {report / 'index.html'}")


if __name__ == "__main__":
    main()
