"""PNG plots of a run (matplotlib, headless ``Agg`` backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.results import Ladder, Results


def write_all(results: Results, folder: Path) -> list[tuple[str, str]]:
    """Write every plot the results allow; returns (caption, file name) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if results.ladders:
        written.append(("System CPU per load step", _capacity(results.ladders, folder)))
        written.append(("Added latency per load step", _latency(results.ladders, folder)))
    if results.transcode:
        written.append(("Transcoding speed", _transcoding(results, folder)))
    return [(caption, f"{folder.name}/{name}") for caption, name in written]


def _capacity(ladders: list[Ladder], folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for ladder in ladders:
        steps = sorted(ladder.steps, key=lambda s: s.sessions)
        ax.plot([s.sessions for s in steps], [s.system_cpu for s in steps], "o-", label=ladder.name)
        late = [s for s in steps if not s.kept_up]
        ax.plot([s.sessions for s in late], [s.system_cpu for s in late], "rx", markersize=10)
    ax.set_xlabel("concurrent live sessions")
    ax.set_ylabel("CPU of the system under test (cores)")
    ax.set_title("CPU vs load (red x: fell behind)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, folder, "capacity.png")


def _latency(ladders: list[Ladder], folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for ladder in ladders:
        steps = sorted(ladder.steps, key=lambda s: s.sessions)
        xs = [s.sessions for s in steps]
        line = ax.plot(xs, [_finite(s.chunk.p99) for s in steps], "o-", label=f"{ladder.name} p99")
        ax.plot(xs, [_finite(s.chunk.p50) for s in steps], "s--", color=line[0].get_color(),
                label=f"{ladder.name} p50")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("concurrent live sessions")
    ax.set_ylabel("produce → upstream (ms)")
    ax.set_title("Added latency vs load")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, folder, "latency.png")


def _transcoding(results: Results, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [t.codec for t in results.transcode]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [t.worker_x for t in results.transcode], 0.4, label="worker")
    ax.bar([x + 0.2 for x in xs], [t.plain_x for t in results.transcode], 0.4, label="plain PyAV")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("multiples of real time")
    ax.set_title("Decode + resample to 16 kHz mono")
    ax.legend()
    return _save(fig, folder, "transcoding.png")


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name
