"""The one-call GPU check: verify and measure the GPU path in under 8 minutes (issue 7).

    bench/gpu_check.sh                       # on the GPU machine, after the wheels arrived (bench/README.md)
    python -m bench.gpu_check --out DIR      # the same, once DALI & co. are importable
    python -m bench.gpu_check --dry-run      # CPU: every step that needs no GPU, at tiny sizes (CI)

Steps, each time-boxed in its own process group and printing one result line:
  0 wheels   GPU: how bench/gpu_check.sh installed the carried wheels; dry run: bench/gpu_wheels.sh selftest
  1 env      GPU, driver, torch, CUDA, cuDNN, DALI, PyAV versions; the measured bf16 matmul peak
  2 decode   the pipelines' frame-exactness tests on GPU (H.264, VP9), and GPU vs CPU weak views agree
  3 loader   unlabeled 4-clip samples/s, DALI GPU ('mixed') vs CPU backend, same machine and videos
  4 train    paper models (R50 8x8 + R50x1/4 16x4, B_l=2, B_u=10): eager fp32 / bf16+channels_last /
             +compile: videos/s, peak memory, MFU against step 1's measured bf16 peak
  5 loss     fused pseudo-label loss, compiled vs eager, B_u in {10, 80, 320}, 400 classes
  6 cmpl     50 CMPL steps of the real-size preset on the synthetic dataset: loss and stats finite
Writes OUT/gpu_check.json, OUT/gpu_check.md (the table, printed last) and OUT/gpu_check.log (every
subprocess's output). OUT: --out, else $OUT, else bench/out.

Modules: `runner` (the time-boxed subprocess runner and the step loop), `steps` (what each step runs, the
step table with its time boxes), `verdicts` (other tools' output read into rows and verdicts), `workers`,
`decode`, `throughput` (the measurements run in child processes: `--worker NAME`), `report` (the table and
the JSON). Only the workers import torch, DALI or PyAV, and only inside their functions: the GPU machine has
no DALI or PyAV until bench/gpu_check.sh installed the carried wheels.
"""

PAPER_PRESET = "k400_1pct_r50"  # the real-size cmpl preset: step 3's clip and crop sizes, step 6's run
