#!/bin/sh
# Generate the configure script and Makefile.in files.
set -e
cd "$(dirname "$0")"
mkdir -p m4
autoreconf --install --force
