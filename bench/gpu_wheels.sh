#!/usr/bin/env bash
# Carry what the GPU machine lacks (it has Python 3.12 and PyTorch but no DALI, PyAV or tomli-w, and no
# network) across device-tool calls, since one call carries at most 64 MiB. See bench/README.md for the
# exact sequence of calls.
#
# Here (a machine with a package registry):
#   bench/gpu_wheels.sh download        # pinned wheels for CPython 3.12 manylinux x86_64 -> bench/wheels/dl/
#   bench/gpu_wheels.sh pack            # install them for 3.12 into a folder, prune, tar.xz, split into
#                                       # <= CHUNK_MIB parts -> bench/wheels/set1..setN/ (N <= MAX_PARTS)
#   bench/gpu_wheels.sh treesize        # MiB of the working tree that travels with every call
# There (the GPU machine, calls back to back while it is warm):
#   bench/gpu_wheels.sh receive bench/wheels/setK   # move part K to $STAGE, verify it, list what is missing
#   bench/gpu_wheels.sh install         # verify, unpack into $SITE (no pip, no network)
# Both:
#   bench/gpu_wheels.sh selftest        # the whole path on a fake package in a temp folder (the dry run's)
#
# What is carried: DALI and what it imports (not nvImageCodec/nvCOMP/nvJPEG: DALI loads them only for image
# decoding and compression, which the video path never calls), PyAV (encodes the check's test videos
# there), tomli-w. DALI's wheel holds its Python bindings for 8 Python versions and its C++ headers: only
# the cp312 ones travel. The result is re-compressed with xz: 3 parts instead of the wheels' 5.
# `fallback/` (numpy, six, packaging, PyYAML) is linked into $SITE only for the modules the machine's own
# Python lacks, so the machine's numpy is never shadowed.
#
# Environment: PYTHON (default python3), WHEELS (bench/wheels), CHUNK_MIB (60), MAX_PARTS (4),
# STAGE (/tmp/wheels), SITE (/tmp/site).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$(command -v "${PYTHON:-python3}")" || { echo "gpu_wheels: no python at ${PYTHON:-python3}" >&2; exit 2; }
PYTHON="$(realpath -s "$PYTHON")"  # -s: keep a venv's python, not its base
export PIP_ROOT_USER_ACTION=ignore
WHEELS="${WHEELS:-$REPO/bench/wheels}"
CHUNK_MIB="${CHUNK_MIB:-60}"
MAX_PARTS="${MAX_PARTS:-4}"
STAGE="${STAGE:-/tmp/wheels}"
SITE="${SITE:-/tmp/site}"
PART_PREFIX="site.tar.xz.part"
PY_TAG=cp312   # the GPU machine's Python

# Pinned to the versions the CI venv runs, so the GPU machine tests the same code.
PACKAGES=(
  nvidia-dali-cuda130==2.4.0
  astunparse==1.6.3
  gast==0.7.0
  optree==0.20.0
  nvtx==0.2.17
  makefun==1.16.0
  libcst==1.9.0
  av==18.1.0
  tomli-w==1.2.0
)
# Linked into $SITE only where the machine's Python cannot import them (DALI and libcst need them).
FALLBACK=(
  numpy==2.2.6
  six==1.17.0
  packaging==25.0
  pyyaml==6.0.3
)
FALLBACK_MODULES=(numpy six packaging yaml)

die() { echo "gpu_wheels: $*" >&2; exit 2; }

cmd_download() {
  local dest="${1:-$WHEELS/dl}"
  mkdir -p "$dest/core" "$dest/fallback"
  local plats=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux1_x86_64 any; do plats+=(--platform "$p"); done
  local common=(-q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi "$PY_TAG"
                --abi abi3 --abi none "${plats[@]}")
  "$PYTHON" -m pip download "${common[@]}" -d "$dest/core" "${PACKAGES[@]}"
  "$PYTHON" -m pip download "${common[@]}" -d "$dest/fallback" "${FALLBACK[@]}"
  local n; n=$(find "$dest" -name '*.whl' | wc -l)
  [ "$n" -eq $(( ${#PACKAGES[@]} + ${#FALLBACK[@]} )) ] \
    || die "expected $(( ${#PACKAGES[@]} + ${#FALLBACK[@]} )) wheels in $dest, found $n (remove stale ones)"
  du -ch "$dest"/*/*.whl | tail -1
}

install_for_312() {  # install_for_312 WHEEL_DIR TARGET: the wheels as pip installs them for CPython 3.12
  "$PYTHON" -m pip install -q --no-deps --no-index --no-compile --disable-pip-version-check --target "$2" \
    --python-version 3.12 --implementation cp --abi "$PY_TAG" --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "$1"/*.whl
}

prune() {  # prune SITE_DIR: what the GPU machine never loads
  local d="$1/nvidia/dali"
  if [ -d "$d" ]; then
    find "$d" -maxdepth 1 -name '*.cpython-3*.so' ! -name "*.cpython-${PY_TAG#cp}-*" -delete
    rm -rf "$d/include" "$d/test"
  fi
  find "$1" -name __pycache__ -prune -exec rm -rf {} +
}

cmd_pack() {
  local src="${1:-$WHEELS/dl}" out="${2:-$WHEELS}"
  compgen -G "$src/core/*.whl" >/dev/null || die "no wheels in $src/core (run: $0 download)"
  local build="$out/build"
  rm -rf "$out"/set[0-9]* "$build"
  mkdir -p "$build/tree" "$build/parts"
  install_for_312 "$src/core" "$build/tree/site"
  if compgen -G "$src/fallback/*.whl" >/dev/null; then install_for_312 "$src/fallback" "$build/tree/fallback"; fi
  prune "$build/tree/site"
  [ ! -d "$build/tree/fallback" ] || prune "$build/tree/fallback"
  (cd "$src" && ls core fallback 2>/dev/null) > "$build/tree/site/.gpu_wheels_contents.txt"
  # Deterministic tar, so a re-pack reproduces the same parts and their sums.
  tar -C "$build/tree" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . \
    | xz -6 -T0 -c | split -b "${CHUNK_MIB}M" -d -a 2 - "$build/parts/$PART_PREFIX"
  (cd "$build/parts" && sha256sum -- "$PART_PREFIX"* > parts.sha256)
  local k=0
  for part in "$build/parts/$PART_PREFIX"*; do
    k=$((k + 1))
    mkdir -p "$out/set$k"
    mv "$part" "$out/set$k/"
    cp "$build/parts/parts.sha256" "$out/set$k/"
  done
  local unpacked; unpacked=$(du -sm "$build/tree" | cut -f1)
  rm -rf "$build"
  [ "$k" -le "$MAX_PARTS" ] || die "$k parts of ${CHUNK_MIB} MiB, more than MAX_PARTS=$MAX_PARTS: prune more"
  echo "packed ${#PACKAGES[@]} + ${#FALLBACK[@]} wheels (${unpacked} MiB unpacked) into $k parts of <= ${CHUNK_MIB} MiB:"
  for s in "$out"/set*; do echo "  carry ${s#"$REPO"/} ($(du -sm "$s" | cut -f1) MiB)"; done
  [ "$out" != "$WHEELS" ] || cmd_treesize
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
  cmd_status || die "parts missing in $STAGE: re-send their sets (bench/README.md), then install"
  local unpack="$SITE.unpack"
  rm -rf "$unpack" "$SITE" && mkdir -p "$unpack"
  # Python's tarfile + lzma (stdlib): no xz binary needed on the machine.
  cat "$STAGE/$PART_PREFIX"* | "$PYTHON" -c '
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz") as t:
    t.extractall(sys.argv[1], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' "$unpack"
  mv "$unpack/site" "$SITE"
  local linked=()
  if [ -d "$unpack/fallback" ]; then
    mv "$unpack/fallback" "$SITE.fallback"
    for mod in "${FALLBACK_MODULES[@]}"; do
      # The machine's own Python, without $SITE or any PYTHONPATH.
      if ! (cd / && env -u PYTHONPATH "$PYTHON" -c "import $mod" >/dev/null 2>&1); then
        for p in "$SITE.fallback/$mod" "$SITE.fallback/$mod".py "$SITE.fallback/$mod"*.dist-info "$SITE.fallback/$mod".libs \
                 "$SITE.fallback/_$mod"* "$SITE.fallback/"*"$mod"*.libs; do
          [ -e "$p" ] && [ ! -e "$SITE/$(basename "$p")" ] && ln -s "$p" "$SITE/$(basename "$p")"
        done
        linked+=("$mod")
      fi
    done
  fi
  rm -rf "$unpack"
  # `nvidia` must resolve to both $SITE/nvidia (DALI) and the machine's own nvidia/ (cuDNN, cuBLAS): if the
  # machine's is a regular package (some wheel ships nvidia/__init__.py) it would hide ours. A regular
  # package here, first on PYTHONPATH, whose extend_path adds every nvidia/ folder on sys.path, merges both.
  if [ -d "$SITE/nvidia" ]; then
    printf '%s\n' '"""Merge every nvidia/ folder on sys.path (carried packages + the machine'"'"'s own)."""' \
      'from pkgutil import extend_path' '__path__ = extend_path(__path__, __name__)' > "$SITE/nvidia/__init__.py"
  fi
  echo "use: export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
  echo "installed $(grep -c 'whl$' "$SITE/.gpu_wheels_contents.txt" 2>/dev/null || echo '?') wheels into $SITE" \
       "($(du -sm "$SITE" | cut -f1) MiB, no pip); linked from fallback: [${linked[*]:-none needed}]"
}

cmd_selftest() {
  # A fake package through pack -> receive (one call per part) -> install -> import, in a temp folder.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/dl/core" "$tmp/dl/fallback"
  make_wheel() {  # make_wheel NAME MODULE DEST BLOB_BYTES
    local w="$tmp/w_$1"
    mkdir -p "$w/$2" "$w/$1-0.1.dist-info"
    echo 'VALUE = 42' > "$w/$2/__init__.py"
    [ "$4" -eq 0 ] || head -c "$4" /dev/urandom > "$w/$2/blob.bin"   # incompressible: several parts
    printf 'Metadata-Version: 2.1\nName: %s\nVersion: 0.1\n' "$1" > "$w/$1-0.1.dist-info/METADATA"
    printf 'Wheel-Version: 1.0\nGenerator: gpu_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n' \
      > "$w/$1-0.1.dist-info/WHEEL"
    (cd "$w" && find . -type f | sed 's|^\./||; s|$|,,|' > "$1-0.1.dist-info/RECORD" \
       && "$PYTHON" -c 'import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for p in sorted(pathlib.Path(".").rglob("*")):
        if p.is_file():
            z.write(p, p.as_posix())' "$3/$1-0.1-py3-none-any.whl")
  }
  make_wheel gpucheck_fake gpucheck_fake "$tmp/dl/core" 2500000
  make_wheel gpucheck_nv nvidia/gpucheck_nv "$tmp/dl/core" 0   # a namespace portion, like nvidia.dali
  # The machine's own `nvidia` as a regular package (with __init__.py), which must not hide the carried one.
  mkdir -p "$tmp/machine/nvidia/machine_lib" && touch "$tmp/machine/nvidia/__init__.py" \
    && echo 'VALUE = 7' > "$tmp/machine/nvidia/machine_lib/__init__.py"
  make_wheel gpucheck_fallback gpucheck_fallback "$tmp/dl/fallback" 0
  CHUNK_MIB=1 MAX_PARTS=9 cmd_pack "$tmp/dl" "$tmp/out" >/dev/null
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
  (FALLBACK_MODULES=(gpucheck_fallback); STAGE="$tmp/stage"; SITE="$tmp/site"; cmd_install >/dev/null)
  PYTHONPATH="$tmp/site:$tmp/machine" "$PYTHON" -c 'import gpucheck_fake, gpucheck_fallback
import nvidia.gpucheck_nv, nvidia.machine_lib
assert gpucheck_fake.VALUE == 42 and gpucheck_fallback.VALUE == 42 and nvidia.machine_lib.VALUE == 7'
  echo "selftest ok: fake package -> $n xz parts -> received one by one (missing and corrupt parts caught)" \
       "-> unpacked without pip, fallback linked where missing -> imported, nvidia.* merged with the machine's"
}

case "${1:-}" in
  download) shift; cmd_download "$@" ;;
  pack) shift; cmd_pack "$@" ;;
  treesize) cmd_treesize ;;
  receive) shift; cmd_receive "$@" ;;
  status) cmd_status ;;
  install) cmd_install ;;
  selftest) cmd_selftest ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
