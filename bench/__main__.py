"""``make bench``: run every benchmark and write ``docs/BENCHMARKS.md`` and its plots.

Starts a private Kafka broker (purged on exit, also on Ctrl-C or SIGTERM),
the emulator in this process, and the worker, bridge and load processes;
see ``bench/__init__.py`` for the layout. ``--quick`` runs short ladders (a
smoke test of the harness, not for publishing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import backfill, floors, plots, report, stack, transcoding
from bench.capacity import Rig, Timing, profile_step, run_ladder, session_tags
from bench.profile import top_functions
from bench.recorder import Recorder
from bench.results import Floors, Machine, Results
from bench.search import Bounds, Search
from emulator.server import EmulatorConfig, EmulatorServer

SECTIONS = ("floors", "transcode", "worker", "ogg", "baseline", "profile", "backfill")


def _machine(command: str) -> Machine:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return Machine(
        command=command,
        cores=os.cpu_count() or 1,
        cpu_model=model,
        python=platform.python_version(),
        kafka=stack.kafka_version(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


async def _ladders(rig: Rig, results: Results, args: argparse.Namespace) -> None:
    steps = 3 if args.quick else 7
    if "worker" in args.sections:
        _say("capacity: worker, PCM")
        ladder = await run_ladder(
            rig, "worker", "pcm", Search(args.start, max_steps=steps), "worker PCM"
        )
        results.ladders.append(ladder)
    if "ogg" in args.sections:
        _say("capacity: worker, OGG/Opus")
        search = Search(max(5, args.start // 3), max_steps=steps)
        results.ladders.append(await run_ladder(rig, "worker", "ogg", search, "worker OGG/Opus"))
    if "baseline" in args.sections:
        _say("capacity: baseline bridge, PCM")
        search = Search(args.start, max_steps=steps + 1)
        results.ladders.append(await run_ladder(rig, "bridge", "pcm", search, "baseline PCM"))


async def _profile(rig: Rig, results: Results, args: argparse.Namespace) -> None:
    worker = results.ladder("worker", "pcm")
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        _say("profile: py-spy is not installed; skipped")
        return
    best = worker.best if worker else None
    sessions = best.sessions if best else args.start
    _say(f"profile: worker PCM at {sessions} sessions under py-spy")
    out = rig.logs / "worker-profile.txt"
    await profile_step(rig, "worker", "pcm", sessions, out)
    if out.exists():
        results.profile = top_functions(out.read_text())
        results.profile_sessions = sessions


async def _run(args: argparse.Namespace, broker: stack.Broker, results: Results) -> None:
    recorder = Recorder()
    config = EmulatorConfig(recognizer="tones", observer=recorder, custom_models=session_tags())
    async with EmulatorServer(config) as emulator:
        sampler = stack.Sampler()
        sampler.watch("bench", os.getpid())
        sampler.watch("broker", broker.pid)
        sampler.start()
        timing = Timing(window=6.0, warmup=2.0) if args.quick else Timing()
        rig = Rig(broker, emulator, recorder, sampler, args.logs, timing, Bounds())
        try:
            await _sections(rig, results, args)
        finally:
            await sampler.stop()


async def _sections(rig: Rig, results: Results, args: argparse.Namespace) -> None:
    if "floors" in args.sections:
        _say("floors: Kafka and WebSocket round trips")
        prefix = "bench.floors."
        await rig.broker.create_topics(prefix, 1)
        kafka = await floors.kafka_round_trip(rig.broker.bootstrap, prefix + "stt.audio")
        results.floors = Floors(kafka, await floors.websocket_round_trip())
    if "transcode" in args.sections:
        _say("transcoding: Opus, MP3, AAC, FLAC")
        results.transcode = await asyncio.to_thread(transcoding.run, 20.0 if args.quick else 60.0)
    await _ladders(rig, results, args)
    if "profile" in args.sections:
        await _profile(rig, results, args)
    if "backfill" in args.sections:
        _say("backfill: recorded calls replayed un-paced")
        count, seconds = (10, 20.0) if args.quick else (40, 60.0)
        results.backfill = await backfill.run(rig, count, seconds)


def _write(results: Results, out: Path) -> None:
    previous = out.read_text() if out.exists() else None
    results.plots = plots.write_all(results, out.parent / "benchmarks")
    out.write_text(report.render(results, report.kept_notes(previous), Bounds()))
    _say(f"wrote {out}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: children and broker stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=stack.REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--logs", type=Path, default=stack.REPO / ".cache" / "bench")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--start", type=int, default=50, help="first load step (sessions)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    shutil.rmtree(args.logs, ignore_errors=True)
    args.logs.mkdir(parents=True)
    signal.signal(signal.SIGTERM, _interrupt)
    command = (
        "make bench"
        if argv is None and len(sys.argv) == 1
        else "python -m bench " + " ".join(sys.argv[1:])
    )
    results = Results(_machine(command))
    started = time.monotonic()
    _say("starting a private Kafka broker")
    with stack.Broker() as broker:
        asyncio.run(_run(args, broker, results))
    results.machine = Machine(**{**results.machine.__dict__, "wall_s": time.monotonic() - started})
    _write(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
