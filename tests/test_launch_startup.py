import subprocess
import sys


def test_launcher_cli_does_not_import_torch(repo_root):
    code = "import sys; import jobs.cli; import launch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True)


def test_help_runs_without_torch(repo_root):
    code = ("import sys, runpy; sys.argv=['launch.py','--help']\n"
            "try:\n    runpy.run_path('launch.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: launch.py" in proc.stdout
