#!/usr/bin/env bash
# Installs the Debian packages the tests, demo and benchmarks use, when missing:
# ffmpeg (codec libraries, CLI), espeak-ng (speech for tests/demo), sox.
# Java 17+ and Maven are prerequisites of the local Kafka broker; they are
# installed too when absent. Needs root (or sudo); does nothing when all exist.
set -euo pipefail
declare -A pkg=([ffmpeg]=ffmpeg [espeak-ng]=espeak-ng [sox]=sox [java]=openjdk-17-jre-headless [mvn]=maven)
missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
