"""launch.py compare --report: refused before anything when DIR cannot be a folder (the page itself is
checked in a real browser by test_evaluate_report.py::test_compare_report_opens_in_headless_chromium)."""

import os
import subprocess
import sys

from run_dirs import write_run


def test_a_report_folder_under_a_file_is_refused_before_anything(tmp_path, repo_root):
    run_dir = write_run(tmp_path / "run", overrides=None)
    (tmp_path / "a_file").write_text("x")
    env = {**os.environ, "PATH": "/nonexistent", "SEGAN_JOB_INDEX": os.devnull}
    for target, words in ((tmp_path / "a_file" / "report", "a_file is a file, not a folder"),
                          (tmp_path / "a_file", "a_file is a file; give a folder")):
        proc = subprocess.run([sys.executable, "launch.py", "compare", str(run_dir), "--report", str(target),
                               "--csv", str(tmp_path / "table.csv")], cwd=repo_root, capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
        assert proc.stdout == "" and not (tmp_path / "table.csv").exists()  # nothing compared, nothing written


def test_the_report_is_written_without_torch(tmp_path, repo_root):
    """A login-node command: launch.py compare --report never imports torch."""
    runs = [write_run(tmp_path / name, overrides=None) for name in ("a", "b")]
    code = ("import runpy, sys\nsys.argv = ['launch.py', 'compare', *sys.argv[1:]]\n"
            "try:\n    runpy.run_path('launch.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, runs), "--report", str(tmp_path / "out")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": "/nonexistent", "SEGAN_JOB_INDEX": os.devnull})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "curves" / "01_validation.png").is_file()
