"""``detector serve`` in a process of its own, for the tests that need a real server: a
crash shows as a dead process, its memory can be read from /proc, and signals reach it."""
import os
import queue
import signal
import subprocess
import sys
import threading


def _command():
    script = os.path.join(os.path.dirname(sys.executable), "detector")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "detector"]


class ServerProcess:
    """``detector serve --port 0 ARGS`` in a process of its own: ``address`` once it has
    printed its ``listening on`` line; its stderr (one log line per call) is drained by a
    thread, so the pipe never fills and blocks the server."""

    def __init__(self, *args, ready_seconds=120):
        self.process = subprocess.Popen(_command() + ["serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.pid, self.log, lines = self.process.pid, [], queue.Queue()
        threading.Thread(target=self._drain, args=(self.process.stdout, lines.put), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr, self.log.append), daemon=True).start()
        try:
            line = lines.get(timeout=ready_seconds)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"no 'listening on' line in {ready_seconds} s:\n{self.stderr()}") from None
        if not line.startswith("listening on "):
            self.kill()
            raise AssertionError(f"the server did not start: {line!r}\n{self.stderr()}")
        self.address = line.split()[-1]
        self.http_address = None
        if "--http-port" in args:
            try:
                line = lines.get(timeout=ready_seconds)
            except queue.Empty:
                line = ""
            if not line.startswith("http on "):
                self.kill()
                raise AssertionError(f"no 'http on' line: {line!r}\n{self.stderr()}")
            self.http_address = line.split()[-1]
        self.peak_kib = 0  # the highest VmHWM seen before any reset of it
        self.can_reset = True

    @staticmethod
    def _drain(stream, put):
        for line in stream:
            put(line.rstrip("\n"))
        put("")

    def stderr(self, lines=40):
        return "\n".join(self.log[-lines:])

    def memory_kib(self):
        """(VmHWM, VmRSS) of the server in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])

    def reset_peak(self):
        """Note the peak so far, then start a new one from the current resident size
        (``clear_refs`` 5, Linux 4.0+). Returns the resident size it starts from."""
        hwm, rss = self.memory_kib()
        self.peak_kib = max(self.peak_kib, hwm)
        if self.can_reset:
            try:
                with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.can_reset = False
        return self.memory_kib()[1] if self.can_reset else hwm

    def peak(self):
        return max(self.peak_kib, self.memory_kib()[0])

    def alive(self):
        return self.process.poll() is None

    def terminate(self, seconds=60):
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
