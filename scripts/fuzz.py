"""Long fuzzing runs (``make fuzz``) and the seed corpus of tests/fuzz.

    python scripts/fuzz.py corpus                 # (re)write the seed corpus
    python scripts/fuzz.py run --minutes 30       # atheris on every target, shared time
    python scripts/fuzz.py run --minutes 5 --target decoder

Each target runs in its own process under atheris (coverage-guided, the
Python code instrumented) over a work copy of its corpus; inputs that find
new coverage stay in ``.cache/fuzz/<target>``. A crash (an exception the
product does not turn into a dead letter or a failed session, or a hang past
``-timeout``) stops that target, keeps the input as
``.cache/fuzz/crash-<target>-*`` and makes the run fail.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "fuzz" / "corpus"
WORK = REPO / ".cache" / "fuzz"
sys.path.insert(0, str(REPO))


def write_corpus() -> None:
    from emulator.samples import encode
    from emulator.tones import synthesize
    from tests.fuzz.hostile import catalogue
    from tests.fuzz.targets import TARGETS

    pcm = synthesize([["alpha"]], lead_ms=50, pause_ms=100)[: 16000 // 2]  # 0.25 s
    audio = {h.name: h.value for h in catalogue() if h.code == "undecodable_audio"}
    for fmt in ("wav", "wav-stream", "ogg-opus", "mp3", "flac", "webm-opus", "m4a-aac"):
        audio[f"valid-{fmt}"] = encode(pcm, 16000, 1, fmt)
    seeds: dict[str, dict[str, bytes]] = {
        name: audio
        for name in ("wav_scanner", "ogg_scanner", "ogg_packets", "mp3_scanner", "sniff")
    }
    seeds["decoder"] = seeds["source"] = audio
    seeds["headers"] = _header_seeds()
    seeds["server_message"] = _message_seeds()
    seeds["error_body"] = {
        "json": b'{"code": "INVALID_REQUEST", "detail": "sample_rate"}\n',
        "snake": b'{"code": "session_rejected"}\n',
        "header-only": b"\nout of credits",
        "junk": b"\x00\xff{\n\xfe",
    }
    seeds["checkpoint"] = _checkpoint_seeds()
    for target in TARGETS:  # seeds are rewritten; inputs the fuzzer found (fuzz-found-*) stay
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds[target].items():
            (folder / name).write_bytes(data)
    print(f"corpus written to {CORPUS.relative_to(REPO)}")


def _header_seeds() -> dict[str, bytes]:
    from tests.fuzz.hostile import catalogue

    out = {
        "raw-mulaw": b"stt-encoding=mulaw\nstt-sample-rate=8000\nstt-channels=1",
        "split": b"stt-channel-mode=split\nstt-channel-labels=agent,caller",
        "turns": b"stt-endpoint=turns\nstt-options=include_words",
        "end": b"stt-kind=end\nstt-seq=7\ntraceparent=00-abc-def-01",
    }
    for h in catalogue():
        if h.code == "bad_header":
            out[h.name] = b"\n".join(k.encode() + b"=" + v for k, v in h.headers)
    return out


def _message_seeds() -> dict[str, bytes]:
    frames = {
        "final": {"type": "transcript", "text": "a b", "start_ms": 10, "duration_ms": 200},
        "interim": {"type": "transcript", "text": "a", "is_final": False},
        "words": {
            "type": "transcript",
            "text": "a",
            "start_ms": 0,
            "duration_ms": 5,
            "words": [{"text": "a", "start_ms": 0, "duration_ms": 5, "confidence": -0.1}],
        },
        "flush": {"type": "flush_confirmation", "id": "x"},
        "turn-start": {"type": "turn_start"},
        "candidate": {"type": "turn_end_candidate", "text": "hi", "start_ms": 0, "duration_ms": 9},
        "continuation": {"type": "turn_continuation"},
        "turn-end": {"type": "turn_end"},
        "error": {"type": "error", "code": "x", "message": "y"},
        "negative": {"type": "transcript", "text": "z", "start_ms": -500, "duration_ms": -7},
        "huge": {"type": "transcript", "text": "z", "start_ms": 10**18, "duration_ms": 10**18},
    }
    out = {name: json.dumps(frame).encode() for name, frame in frames.items()}
    out["not-json"] = b"{type: transcript"
    out["array"] = b"[1, 2]"
    return out


def _checkpoint_seeds() -> dict[str, bytes]:
    v1 = {
        "session_id": "s",
        "partition": 0,
        "offset": 3,
        "resume_byte": 44,
        "resume_frame": 16000,
        "header": "UklGRg==",
        "config": {"encoding": "auto"},
        "streams": [{"covered": 16000}],
    }
    v2 = {**v1, "version": 2, "restart": {"byte": 44, "frame": 16000, "header": ""}}
    for key in ("resume_byte", "resume_frame", "header"):
        v2.pop(key)
    return {
        "v1": json.dumps(v1).encode(),
        "v2": json.dumps(v2).encode(),
        "bad-base64": json.dumps({**v1, "header": "%%%"}).encode(),
    }


def run(minutes: float, targets: list[str]) -> int:
    share = max(10, int(minutes * 60 / len(targets)))
    failed = []
    for target in targets:
        work = WORK / target
        work.mkdir(parents=True, exist_ok=True)
        for seed in (CORPUS / target).iterdir():
            shutil.copy(seed, work / seed.name)
        print(f"fuzz: {target} for {share} s", flush=True)
        status = subprocess.call(
            [
                sys.executable,
                "-m",
                "tests.fuzz.atheris_main",
                target,
                str(work),
                f"-max_total_time={share}",
                "-timeout=20",
                "-rss_limit_mb=4096",
                f"-artifact_prefix={WORK}/crash-{target}-",
            ],
            cwd=REPO,
        )
        if status != 0:
            failed.append(target)
            print(
                f"fuzz: {target} failed; keep the crash input as a seed named "
                f"tests/fuzz/corpus/{target}/fuzz-found-<hash> once fixed",
                flush=True,
            )
    print("fuzz: " + (f"FAILED: {', '.join(failed)}" if failed else "clean"))
    return 1 if failed else 0


def main() -> int:
    from tests.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("corpus")
    go = sub.add_parser("run")
    go.add_argument("--minutes", type=float, default=30.0)
    go.add_argument("--target", action="append", choices=sorted(TARGETS))
    args = parser.parse_args()
    if args.command == "corpus":
        write_corpus()
        return 0
    return run(args.minutes, args.target or list(TARGETS))


if __name__ == "__main__":
    sys.exit(main())
