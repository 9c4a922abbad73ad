"""A command for tests/test_warmstart.py: does what its arguments say, so that a warm start and a
cold start of it can be compared (``python -m tests.warmstart_probe ACTION...``)."""

import atexit
import json
import os
import sys
import threading
import time


def main(actions: list[str]) -> None:
    for action in actions:
        if action == "facts":
            print(json.dumps({"name": __name__, "argv": sys.argv[1:], "argv0": os.path.basename(sys.argv[0]),
                              "cwd": os.getcwd(), "path0": sys.path[0], "probe": os.environ.get("PROBE"),
                              "session_leader": os.getsid(0) == os.getpid(), "stdin": sys.stdin.read(),
                              "torch_threads": __import__("torch").get_num_threads()}), flush=True)
        elif action == "nested":  # a listed command of its own: warm when this run is
            import subprocess

            proc = subprocess.Popen([sys.executable, "-m", "trainer.train", "--help"], stdout=subprocess.DEVNULL)
            print(json.dumps({"code": proc.wait(), "warm": getattr(proc, "_warm_status", None) is not None}))
        elif action == "atexit":
            atexit.register(lambda: print("atexit ran", flush=True))
        elif action == "thread":
            threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished", flush=True))).start()
        elif action == "stderr":
            sys.stderr.write("to stderr\n")
        elif action.startswith("exit="):
            value = action[5:]
            sys.exit(int(value) if value.lstrip("-").isdigit() else value)
        elif action == "raise":
            raise ValueError("probe failed")
        elif action == "interrupt":
            raise KeyboardInterrupt
        elif action == "wait":  # until killed: a file says it is running
            open(os.environ["PROBE"], "w").close()
            while True:
                time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
