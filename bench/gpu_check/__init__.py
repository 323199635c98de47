"""The one-call GPU check: verify and measure the GPU path in ~4.5 minutes of a lent machine (issues 7, 19).

    bench/gpu_check.sh                       # on the GPU machine, after the parts arrived (bench/README.md)
    python -m bench.gpu_check --out DIR      # the same, once DALI & co. are importable
    python -m bench.gpu_check --dry-run      # CPU rehearsal: every code path that needs no CUDA, same boxes (CI)

Steps, each time-boxed; a step is one or more rows, each row its own child process (one codec / backend /
setting per process, so one crash or hang loses one row) and written to OUT/rows.jsonl the moment it ends:
  0 probe    driver, libcuda, libnvcuvid, NVIDIA_DRIVER_CAPABILITIES, NVDEC's min/max size per codec
             (cuvidGetDecoderCaps through ctypes), cuDNN; how the carried packages were installed
  1 env      GPU, torch, CUDA, DALI, PyAV versions; the measured bf16 matmul peak
  2 decode   weak-view loader (no RandAugment graph) on indexed fixtures, H.264 first: frame-exact clips per
             backend and codec; GPU vs CPU luma agreement
  3 loader   weak-view loader samples/s at the paper's clip sizes, GPU H.264, GPU VP9, CPU VP9
  4 train    paper models (R50 8x8 + R50x1/4 16x4): eager fp32 and bf16 + channels_last steps (videos/s,
             peak memory, MFU); bf16 vs fp32 forward agreement of an R50-3D
  5 cmpl     `cmpl.train --preset k400_1pct_r50` end to end on a GPU-sized dataset made there: videos/s,
             data-wait fraction, peak GPU memory of torch and of DALI
  6 compile  the bf16 + channels_last step under torch.compile, in its own time box, last
A row that cannot run (no GPU, no NVDEC, a codec the card lacks) says why in one line; the CPU rows still
run. The dry run fails when a step outruns its box (the same boxes as on the GPU).
Writes OUT/rows.jsonl (as it goes), OUT/gpu_check.json, OUT/gpu_check.md (the table, printed last) and
OUT/gpu_check.log (every child process's output). OUT: --out, else $OUT, else bench/out.

Modules: `runner` (rows, time-boxed child processes, background jobs, the step loop), `steps` (what each step
runs, the step table with its time boxes), `probe` (the ctypes driver/NVDEC probe), `verdicts` (rows and
verdicts from other tools' output), `workers`, `decode`, `throughput` (the measurements in child processes:
`--worker NAME`), `report` (the table and the JSON). Only the workers import torch, DALI or PyAV, and only
inside their functions: the GPU machine has no DALI or PyAV until bench/gpu_check.sh installed them.
"""

PAPER_PRESET = "k400_1pct_r50"  # the real-size cmpl preset: step 3's clips, step 4's models, step 5's run
