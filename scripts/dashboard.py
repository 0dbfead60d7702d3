"""Write the chart's Grafana dashboard, helm/reson8-kafka/dashboards/reson8-kafka.json.

The dashboard is generated so that every panel has the same data source, the
same ``namespace``/``job`` matchers and a layout without overlaps; edit the
panel list below, not the JSON, then run ``make dashboard`` (this script).
``--check`` fails when the committed JSON differs from what this script
writes (the chart tests run it). Classic dashboard JSON model, schema version
39 (Grafana 10 and later migrate it on load). Standard library only.

Every expression names only the worker's metric families (docs/operations.md)
and ``up``; the chart tests parse each one with Prometheus' parser and check
that.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parents[1]
    / "helm"
    / "reson8-kafka"
    / "dashboards"
    / "reson8-kafka.json"
)
Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", job=~"$job"'
RATE = "$__rate_interval"
WIDTH = 24  # Grafana's grid
HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    overrides: tuple[Json, ...] = field(default=())


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def sel(metric: str, extra: str = "") -> str:
    """``metric{namespace=~"$namespace", job=~"$job"[, extra]}``."""
    matchers = f"{SEL}, {extra}" if extra else SEL
    return f"{metric}{{{matchers}}}"


def rate(metric: str, by: str = "", extra: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({sel(metric, extra)}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', labels)})"


def quantiles(histogram: str, by: str = "") -> tuple[Query, ...]:
    prefix = f"{{{{{by}}}}} " if by else ""
    return (
        Query(quantile(0.5, histogram, by), prefix + "p50"),
        Query(quantile(0.99, histogram, by), prefix + "p99"),
    )


def mean(histogram: str) -> Query:
    return Query(f"{rate(histogram + '_sum')} / {rate(histogram + '_count')}", "mean")


LAG = f"max by (partition) ({sel('reson8_consumer_lag')})"
BOUND_STYLE: Json = {
    "matcher": {"id": "byName", "options": "bound"},
    "properties": [
        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
    ],
}

OVERVIEW = Row(
    "Overview",
    (
        Panel(
            "Ready workers",
            "Workers answering /ready (reson8_worker_ready = 1) out of the scraped targets that "
            "are up. All of them go unready together during a rebalance.",
            (
                Query(f"sum({sel('reson8_worker_ready')})", "ready"),
                Query(f"sum({sel('up')})", "up"),
            ),
            kind="stat",
            width=6,
        ),
        Panel(
            "Active sessions",
            "Upstream sessions open now, both endpoints.",
            (Query(f"sum({sel('reson8_sessions_active')})", "sessions"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Consumer lag",
            "Records behind on stt.audio, all partitions. Healthy lag is not zero: commits wait "
            "until finals cover the audio (up to the uncovered-audio bound per session).",
            (Query(f"sum({LAG})", "records"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Largest uncovered audio",
            "The most audio any session holds without final transcripts, against the bound.",
            (
                Query(f"max({sel('reson8_uncovered_audio_seconds')})", "uncovered"),
                Query(f"max({sel('reson8_uncovered_audio_bound_seconds')})", "bound"),
            ),
            unit="s",
            kind="stat",
            width=6,
        ),
    ),
)

SESSIONS = Row(
    "Sessions and audio",
    (
        Panel(
            "Active sessions by endpoint",
            "Open upstream sessions per endpoint (realtime, turns).",
            (Query(f"sum by (endpoint) ({sel('reson8_sessions_active')})", "{{endpoint}}"),),
        ),
        Panel(
            "Audio throughput",
            "Seconds of audio per second: received from stt.audio, and covered by final "
            "transcripts. About equal to the number of live real-time streams; a gap that "
            "stays open means transcription falls behind.",
            (
                Query(rate("reson8_audio_received_seconds_total"), "received"),
                Query(rate("reson8_audio_transcribed_seconds_total"), "transcribed"),
            ),
        ),
        Panel(
            "Sessions failed by code",
            "Sessions ended by a session_failed event (e.g. 401/402: the API key or the "
            "account), per second.",
            (Query(rate("reson8_sessions_failed_total", "code"), "{{code}}"),),
            unit="ops",
        ),
        Panel(
            "Sessions resumed from a checkpoint",
            "Sessions a worker took over from the checkpoint topic after a rebalance or a crash, "
            "per second. Each one reconnects upstream (reason takeover).",
            (Query(rate("reson8_sessions_resumed_total"), "resumed"),),
            unit="ops",
        ),
    ),
)

RECORDS = Row(
    "Records",
    (
        Panel(
            "Records by outcome",
            "Input records per second: processed, dead_lettered (sent to stt.audio.dlq) or "
            "skipped (read but not needed, e.g. audio a checkpoint covers, after a takeover).",
            (Query(rate("reson8_records_total", "outcome"), "{{outcome}}"),),
            unit="ops",
        ),
        Panel(
            "Dead letters by code",
            "Records sent to stt.audio.dlq per second, by stt-error-code.",
            (Query(rate("reson8_dead_letters_total", "code"), "{{code}}"),),
            unit="ops",
        ),
    ),
)

UPSTREAM = Row(
    "Upstream",
    (
        Panel(
            "Upstream connects and reconnects by reason",
            "New upstream WebSocket connections per second: first connects, and reconnects by "
            "reason (connection_lost, http_429, closed_1011, stall, takeover...).",
            (
                Query(
                    rate("reson8_upstream_connections_total", "kind, reason"),
                    "{{kind}} {{reason}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Upstream latency (audio sent to final)",
            "From sending audio to receiving the final transcript that covers it.",
            (
                *quantiles("reson8_upstream_latency_seconds"),
                mean("reson8_upstream_latency_seconds"),
            ),
            unit="s",
        ),
    ),
)

COVERAGE = Row(
    "Coverage and lag",
    (
        Panel(
            "Uncovered audio per worker vs bound",
            "Largest audio any session of each worker holds that no final covers yet; commits "
            "wait for it. It should stay under the bound (dashed): above it, the worker is not "
            "getting finals or flush confirmations in time.",
            (
                Query(f"max by (pod) ({sel('reson8_uncovered_audio_seconds')})", "{{pod}}"),
                Query(f"max({sel('reson8_uncovered_audio_bound_seconds')})", "bound"),
            ),
            unit="s",
            width=8,
            overrides=(BOUND_STYLE,),
        ),
        Panel(
            "Uncovered audio held per session",
            "Per session, the most audio it held uncovered (distribution over sessions).",
            quantiles("reson8_uncovered_audio_held_seconds"),
            unit="s",
            width=8,
        ),
        Panel(
            "Consumer lag per partition",
            "Records behind on each stt.audio partition, reported by its owner.",
            (Query(LAG, "partition {{partition}}"),),
            width=8,
        ),
    ),
)

GROUP = Row(
    "Consumer group and checkpoints",
    (
        Panel(
            "Checkpoint writes",
            "Writes per second to the compacted checkpoint topic.",
            (Query(rate("reson8_checkpoint_writes_total"), "writes"),),
            unit="ops",
            width=6,
        ),
        Panel(
            "Checkpoint write latency",
            "Time to write one checkpoint.",
            quantiles("reson8_checkpoint_write_seconds"),
            unit="s",
            width=6,
        ),
        Panel(
            "Rebalances per worker",
            "Consumer-group rebalances each worker took part in, per second.",
            (Query(rate("reson8_rebalances_total", "pod"), "{{pod}}"),),
            unit="ops",
            width=6,
        ),
        Panel(
            "Rebalance duration",
            "How long each rebalance took, as each worker saw it.",
            (
                *quantiles("reson8_rebalance_duration_seconds"),
                mean("reson8_rebalance_duration_seconds"),
            ),
            unit="s",
            width=6,
        ),
    ),
)

PROCESS = Row(
    "Workers",
    (
        Panel(
            "Event-loop lag",
            "How late the worker's asyncio loop runs its callbacks, p99 per worker. Sustained "
            "values above ~100 ms delay pings, finals and commits: the pod needs more CPU.",
            (Query(quantile(0.99, "reson8_event_loop_lag_seconds", "pod"), "{{pod}} p99"),),
            unit="s",
        ),
        Panel(
            "Ready workers over time",
            "Ready workers and scraped targets that are up.",
            (
                Query(f"sum({sel('reson8_worker_ready')})", "ready"),
                Query(f"sum({sel('up')})", "up"),
                Query(f"count({sel('up')})", "targets"),
            ),
        ),
    ),
)

ROWS = (OVERVIEW, SESSIONS, RECORDS, UPSTREAM, COVERAGE, GROUP, PROCESS)


# --- JSON ---------------------------------------------------------------------------------


def target(query: Query, ref: int) -> Json:
    return {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": True,
        "refId": chr(ord("A") + ref),
    }


def timeseries_options() -> Json:
    return {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def stat_options() -> Json:
    return {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "percentChangeColorMode": "standard",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": "value_and_name",
        "wideLayout": True,
    }


def field_config(panel: Panel) -> Json:
    defaults: Json = {"unit": panel.unit, "min": 0}
    if panel.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never", "spanNulls": False}
    else:
        defaults["color"] = {"mode": "fixed", "fixedColor": "text"}
    return {"defaults": defaults, "overrides": list(panel.overrides)}


def panel_json(panel: Panel, pid: int, x: int, y: int) -> Json:
    options = timeseries_options() if panel.kind == "timeseries" else stat_options()
    return {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": field_config(panel),
        "gridPos": {"h": HEIGHT, "w": panel.width, "x": x, "y": y},
        "id": pid,
        "options": options,
        "targets": [target(q, i) for i, q in enumerate(panel.queries)],
        "title": panel.title,
        "type": panel.kind,
    }


def row_json(row: Row, pid: int, y: int) -> Json:
    return {
        "collapsed": False,
        "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
        "id": pid,
        "panels": [],
        "title": row.title,
        "type": "row",
    }


def layout(rows: tuple[Row, ...]) -> list[Json]:
    """Rows and panels, left to right, wrapping at the grid's width; ids from 1."""
    out: list[Json] = []
    y = 0
    for row in rows:
        out.append(row_json(row, len(out) + 1, y))
        y, x = y + 1, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                y, x = y + HEIGHT, 0
            out.append(panel_json(panel, len(out) + 1, x, y))
            x += panel.width
        y += HEIGHT
    return out


def query_variable(name: str, label: str, query: str, *, multi: bool) -> Json:
    return {
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change: pods come and go
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def variables() -> list[Json]:
    datasource = {
        "hide": 0,
        "label": "Data source",
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }
    namespace = query_variable(
        "namespace", "Namespace", "label_values(reson8_worker_ready, namespace)", multi=False
    )
    job = query_variable(
        "job", "Job", 'label_values(reson8_worker_ready{namespace=~"$namespace"}, job)', multi=True
    )
    return [datasource, namespace, job]


def dashboard() -> Json:
    return {
        "annotations": {"list": []},
        "description": "reson8-kafka workers: sessions, audio, records, upstream, coverage, "
        "consumer lag, checkpoints, rebalances. See docs/operations.md.",
        "editable": True,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(ROWS),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["reson8-kafka", "kafka", "speech-to-text"],
        "templating": {"list": variables()},
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "reson8-kafka",
        "uid": "reson8-kafka",
        "version": 1,
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is not current")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = rendered()
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"{args.out} is out of date: run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"dashboard: {len(dashboard()['panels'])} panels in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
