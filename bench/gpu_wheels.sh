#!/usr/bin/env bash
# Carry the wheels the GPU machine lacks (it has PyTorch but no DALI, PyAV or tomli-w, and no network)
# across several device-tool calls, since one call carries at most 64 MiB. See bench/README.md for the
# exact sequence of calls.
#
# Here (a machine with a package registry):
#   bench/gpu_wheels.sh download        # wheels for CPython 3.12 manylinux x86_64 -> bench/wheels/dl/
#   bench/gpu_wheels.sh pack            # tar + split into <= CHUNK_MIB parts -> bench/wheels/set1..setN/
#   bench/gpu_wheels.sh synthetic       # the synthetic dataset for step 6 -> bench/wheels/synthetic/
#   bench/gpu_wheels.sh treesize        # MiB of the working tree that travels with every call
# There (the GPU machine, calls back to back while it is warm):
#   bench/gpu_wheels.sh receive bench/wheels/setK   # move part K to $STAGE, verify it, list what is missing
#   bench/gpu_wheels.sh install         # reassemble, verify, pip install --no-index --target $SITE
# Both:
#   bench/gpu_wheels.sh selftest        # the whole path on a fake wheel in a temp folder (used by --dry-run)
#
# Environment: PYTHON (default python3), WHEELS (bench/wheels), CHUNK_MIB (60), STAGE (/tmp/wheels),
# SITE (/tmp/site).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$(command -v "${PYTHON:-python3}")" || { echo "gpu_wheels: no python at ${PYTHON:-python3}" >&2; exit 2; }
PYTHON="$(realpath -s "$PYTHON")"  # -s: keep a venv's python, not its base
export PIP_ROOT_USER_ACTION=ignore
WHEELS="${WHEELS:-$REPO/bench/wheels}"
CHUNK_MIB="${CHUNK_MIB:-60}"
STAGE="${STAGE:-/tmp/wheels}"
SITE="${SITE:-/tmp/site}"
PART_PREFIX="wheels.tar.part"

# Pinned to the versions the CI venv runs, so the GPU machine tests the same code. imageio-ffmpeg (68 MB,
# only the ffmpeg CLI that preprocess/ uses) is left out: PyAV's own libx264/libvpx encode the H.264/VP9
# fixtures and throughput videos there; step 6's dataset needs the CLI and is made here (`synthetic`).
PACKAGES=(
  nvidia-dali-cuda130==2.4.0
  nvidia-libnvcomp-cu13==5.3.0.16
  nvidia-nvimgcodec-cu13==0.9.0.20
  nvidia-nvjpeg==13.3.2.43
  nvidia-nvjpeg2k-cu13==0.11.0.51
  nvidia-nvtiff-cu13==0.8.0.82
  astunparse==1.6.3
  gast==0.7.0
  optree==0.20.0
  nvtx==0.2.17
  makefun==1.16.0
  libcst==1.9.0
  av==18.1.0
  tomli-w==1.2.0
)

die() { echo "gpu_wheels: $*" >&2; exit 2; }

sha_check() {  # sha_check DIR SUMFILE: every file listed in DIR/SUMFILE matches its SHA-256
  (cd "$1" && sha256sum --quiet -c "$2")
}

cmd_download() {
  local dest="${1:-$WHEELS/dl}"
  mkdir -p "$dest"
  local plats=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux1_x86_64 any; do plats+=(--platform "$p"); done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none "${plats[@]}" -d "$dest" "${PACKAGES[@]}"
  local n; n=$(find "$dest" -name '*.whl' | wc -l)
  [ "$n" -eq "${#PACKAGES[@]}" ] || die "expected ${#PACKAGES[@]} wheels in $dest, found $n (two versions of one package stop the install)"
  du -ch "$dest"/*.whl | tail -1
}

cmd_pack() {
  local src="${1:-$WHEELS/dl}" out="${2:-$WHEELS}"
  compgen -G "$src/*.whl" >/dev/null || die "no wheels in $src (run: $0 download)"
  rm -rf "$out"/set[0-9]* "$out/tmp"
  mkdir -p "$out/tmp"
  (cd "$src" && sha256sum -- *.whl > SHA256SUMS)
  # Wheels are already deflate-compressed; recompressing saves ~10%, not worth a call.
  # Deterministic tar, so a re-pack reproduces the same parts and their sums.
  tar -C "$src" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - SHA256SUMS $(cd "$src" && ls -- *.whl) \
    | split -b "${CHUNK_MIB}M" -d -a 2 - "$out/tmp/$PART_PREFIX"
  (cd "$out/tmp" && sha256sum -- "$PART_PREFIX"* > parts.sha256)
  local k=0
  for part in "$out/tmp/$PART_PREFIX"*; do
    k=$((k + 1))
    mkdir -p "$out/set$k"
    mv "$part" "$out/set$k/"
    cp "$out/tmp/parts.sha256" "$out/set$k/"
  done
  rm -rf "$out/tmp"
  echo "packed $(wc -l < "$src/SHA256SUMS") wheels into $k parts of <= ${CHUNK_MIB} MiB:"
  for s in "$out"/set*; do echo "  carry ${s#"$REPO"/} ($(du -sm "$s" | cut -f1) MiB)"; done
  cmd_treesize
}

cmd_synthetic() {
  # The GPU machine has no ffmpeg CLI (imageio-ffmpeg is not carried), so step 6's dataset is made here:
  # 10 classes x (12 train + 2 val) videos, ~2.5 MiB, carried with the last part.
  rm -rf "$WHEELS/synthetic"
  (cd "$REPO" && "$PYTHON" -m preprocess.synthetic --out "$WHEELS/synthetic" --per-class 12 --val-per-class 2 "$@")
  du -sh "$WHEELS/synthetic"
}

cmd_treesize() {
  # What travels with every call besides `carry`: tracked and untracked-not-ignored files.
  local bytes
  bytes=$(cd "$REPO" && git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
          | awk '{s += $1} END {print s + 0}')
  local mib=$(( (bytes + 1048575) / 1048576 ))
  echo "working tree that travels: ${mib} MiB; room per call for one part: $((64 - mib)) MiB (parts: ${CHUNK_MIB} MiB)"
  [ $((mib + CHUNK_MIB)) -le 64 ] || die "tree ${mib} MiB + part ${CHUNK_MIB} MiB exceeds 64 MiB: lower CHUNK_MIB and re-pack"
}

cmd_receive() {
  local setdir="${1:?usage: $0 receive bench/wheels/setK}"
  mkdir -p "$STAGE"
  [ -d "$setdir" ] || die "$setdir not found (was it named in carry?)"
  cp -f "$setdir"/parts.sha256 "$STAGE/" 2>/dev/null || true
  # mv, not cp: the next call's carry replaces the repo's bench/wheels, /tmp survives while warm.
  find "$setdir" -maxdepth 1 -name "$PART_PREFIX*" -exec mv -f {} "$STAGE/" \;
  cmd_status || true  # parts still missing is the normal state until the last call
}

cmd_status() {
  [ -f "$STAGE/parts.sha256" ] || die "no parts.sha256 in $STAGE: no part has arrived on this machine"
  local have=() missing=() bad=()
  while read -r sum name; do
    if [ ! -f "$STAGE/$name" ]; then missing+=("${name#"$PART_PREFIX"}")
    elif echo "$sum  $name" | (cd "$STAGE" && sha256sum --quiet -c - >/dev/null 2>&1); then have+=("${name#"$PART_PREFIX"}")
    else bad+=("${name#"$PART_PREFIX"}"); rm -f "$STAGE/$name"
    fi
  done < "$STAGE/parts.sha256"
  echo "parts in $STAGE: have [${have[*]:-}] missing [${missing[*]:-}] corrupt-removed [${bad[*]:-}]"
  [ ${#missing[@]} -eq 0 ] && [ ${#bad[@]} -eq 0 ]
}

cmd_install() {
  cmd_status || die "parts missing in $STAGE: re-send them (bench/README.md), then install"
  local whl="$STAGE/whl"
  rm -rf "$whl" && mkdir -p "$whl"
  cat "$STAGE/$PART_PREFIX"* | tar -C "$whl" -xf -
  sha_check "$whl" SHA256SUMS || die "a reassembled wheel does not match SHA256SUMS"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$SITE" "$whl"/*.whl
  # nvimgcodec & co. ship nvidia/__init__.py, which would make `nvidia` a regular package that hides the
  # machine's own nvidia.* (cuDNN, cuBLAS) namespace portions; extend_path merges both.
  if [ -f "$SITE/nvidia/__init__.py" ]; then
    printf '%s\n' '"""Merge every nvidia/ folder on sys.path (carried wheels + the machine'"'"'s own)."""' \
      'from pkgutil import extend_path' '__path__ = extend_path(__path__, __name__)' > "$SITE/nvidia/__init__.py"
  fi
  echo "use: export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
  echo "installed $(wc -l < "$whl/SHA256SUMS") wheels ($(du -sm "$whl" | cut -f1) MiB) into $SITE"
}

cmd_selftest() {
  # A fake wheel through download-less pack -> receive (one call per part) -> install -> import.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/dl" "$tmp/w/gpucheck_fake" "$tmp/w/gpucheck_fake-0.1.dist-info" "$tmp/w/nvidia"
  echo 'VALUE = 42' > "$tmp/w/gpucheck_fake/__init__.py"
  echo '# a carried wheel shipping a regular nvidia package' > "$tmp/w/nvidia/__init__.py"
  head -c 3000000 /dev/urandom > "$tmp/w/gpucheck_fake/blob.bin"   # incompressible: 3 parts of 1 MiB
  printf 'Metadata-Version: 2.1\nName: gpucheck-fake\nVersion: 0.1\n' > "$tmp/w/gpucheck_fake-0.1.dist-info/METADATA"
  printf 'Wheel-Version: 1.0\nGenerator: gpu_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n' \
    > "$tmp/w/gpucheck_fake-0.1.dist-info/WHEEL"
  (cd "$tmp/w" && find . -type f | sed 's|^\./||' | sed 's|$|,,|' > gpucheck_fake-0.1.dist-info/RECORD \
     && echo "gpucheck_fake-0.1.dist-info/RECORD,," >> gpucheck_fake-0.1.dist-info/RECORD \
     && "$PYTHON" -c 'import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for p in sorted(pathlib.Path(".").rglob("*")):
        if p.is_file():
            z.write(p, p.as_posix())' "$tmp/dl/gpucheck_fake-0.1-py3-none-any.whl")
  CHUNK_MIB=1 cmd_pack "$tmp/dl" "$tmp/out" >/dev/null
  local n; n=$(find "$tmp/out" -maxdepth 1 -name 'set*' | wc -l)
  [ "$n" -ge 3 ] || die "selftest: expected >= 3 parts, got $n"
  # Each set travels as a copy (what a device call's carry does); receive moves it into the stage.
  local s k=0
  for s in $(cd "$tmp/out" && ls -d set* | sort -V); do
    k=$((k + 1))
    rm -rf "$tmp/carry" && cp -r "$tmp/out/$s" "$tmp/carry"
    STAGE="$tmp/stage" cmd_receive "$tmp/carry" >/dev/null
    if [ "$k" -lt "$n" ] && STAGE="$tmp/stage" cmd_status >/dev/null; then
      die "selftest: status passed with parts missing"
    fi
  done
  STAGE="$tmp/stage" cmd_status >/dev/null || die "selftest: parts missing after all sets arrived"
  # A corrupt part is caught and removed; re-sending its set repairs the stage.
  printf 'x' >> "$tmp/stage/${PART_PREFIX}01"
  if STAGE="$tmp/stage" cmd_status >/dev/null; then die "selftest: a corrupt part passed"; fi
  rm -rf "$tmp/carry" && cp -r "$tmp/out/set2" "$tmp/carry"
  STAGE="$tmp/stage" cmd_receive "$tmp/carry" >/dev/null
  STAGE="$tmp/stage" SITE="$tmp/site" cmd_install >/dev/null
  PYTHONPATH="$tmp/site" "$PYTHON" -c 'import gpucheck_fake, nvidia, pkgutil; assert gpucheck_fake.VALUE == 42
assert "extend_path" in open(nvidia.__file__).read()'
  echo "selftest ok: fake wheel -> $n parts -> received one by one (missing and corrupt parts caught) -> installed -> imported"
}

case "${1:-}" in
  download) shift; cmd_download "$@" ;;
  pack) shift; cmd_pack "$@" ;;
  synthetic) shift; cmd_synthetic "$@" ;;
  treesize) cmd_treesize ;;
  receive) shift; cmd_receive "$@" ;;
  status) cmd_status ;;
  install) cmd_install ;;
  selftest) cmd_selftest ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
