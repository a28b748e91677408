#!/bin/sh
# Build step of the Dockerfile's console stage, run in /console:
#   console-build.sh deps   -> npm ci, when console/package-lock.json was copied in
#   console-build.sh build  -> npm run build into dist/, when console/package.json was copied in
# Without a console/ directory both are no-ops and dist/ stays empty (the image has no /ui/).
# This file also anchors the stage's COPY lines: the consol[e] globs may match nothing, and
# buildah (podman) refuses a COPY whose sources all match nothing.
set -eu
case "${1:-}" in
  deps)
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; fi ;;
  build)
    if [ -f package.json ]; then npm run build; else echo "console-build: no console/, skipped"; fi
    mkdir -p dist ;;
  *)
    echo "usage: console-build.sh deps|build" >&2; exit 2 ;;
esac
