"""bench.preprocess: the bare-ffmpeg comparison runs encode_file's own command; the report has the ratio."""
from __future__ import annotations

import json
import subprocess

from bench import preprocess as bench_preprocess
from preprocess.encode import EncodeSettings, encode_file

TINY = ["--videos", "2", "--seconds", "0.4", "--size", "64x48", "--short-side", "48", "--reps", "1"]


def test_captured_command_writes_what_encode_file_writes(tmp_path):
    src = bench_preprocess.make_inputs(tmp_path / "src", 1, seconds=0.4, size="64x48")[0]
    settings = EncodeSettings(short_side=48, gop=8)
    cmd = bench_preprocess.ffmpeg_command(src, tmp_path / "bare" / "v.webm", settings)
    assert cmd[-1] == str(tmp_path / "bare" / "v.webm") and "-g" in cmd and cmd[cmd.index("-g") + 1] == "8"
    assert not (tmp_path / "bare" / "v.webm").exists()  # captured, not run
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    encode_file(src, tmp_path / "pre" / "v.webm", settings)
    assert (tmp_path / "bare" / "v.webm").read_bytes() == (tmp_path / "pre" / "v.webm").read_bytes()


def test_bench_reports_overhead_over_bare_ffmpeg(tmp_path, capsys):
    out = tmp_path / "pre.json"
    assert bench_preprocess.main([*TINY, "--workers", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["outputs_identical"] is True
    for run in ("preprocess", "bare"):
        assert res[run]["wall_s"] > 0 and res[run]["videos_per_s_per_core"] > 0
    assert res["overhead_wall"] == res["preprocess"]["wall_s"] / res["bare"]["wall_s"]
    printed = capsys.readouterr().out
    assert "(1)/(2) wall = " in printed and "outputs byte-identical: yes" in printed
    assert res["count_equals_full_decode"] is True and "same frame counts: yes" in printed


def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys):
    assert bench_preprocess.main(["--src", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --src is not a folder: {tmp_path / 'nope'}"
    assert bench_preprocess.main(["--reps", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
