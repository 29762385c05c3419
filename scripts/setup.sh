#!/usr/bin/env bash
# Installs everything clippo's demo and tests need on a fresh Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
# iso-codes, unicode-cldr-core (emoji names) and dict-freedict-eng-fra: translation pairs
# (docs/multilingual.md installs the other dictionaries); fonts-dejavu-core: the TrueType font of the typographic attack;
# libcairo2: CairoSVG draws the tuxpaint stamps that are SVG only (`clippo data tuxpaint --svg`);
# debian-faq, debian-faq-de: the FAQ's aligned translation (`--corpus debian-faq`, tested on German).
for p in unifont fonts-unifont fonts-dejavu-core libcairo2 openclipart-png openclipart-svg tuxpaint-stamps-default fortunes debian-reference-en debian-reference-fr debian-faq debian-faq-de iso-codes unicode-cldr-core dict-freedict-eng-fra; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# torch first, pinned to the CPU build on this machine, so nothing pulls CUDA wheels.
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[dev]'
